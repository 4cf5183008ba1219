//! The service over gRPC on a loopback port, with the in-memory counter: answers, hits_addend,
//! shadow mode, several descriptors, refusal of oversized requests, runtime replacement.

mod support;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::google::protobuf::UInt64Value;
use flotilla_ratelimit::telemetry::Stats;
use flotilla_ratelimit::{Backend, FailureMode, MemoryCounter};
use support::*;

const USER_A: &[(&str, &str)] = &[("r1", "r1"), ("rule-0-match-0", "alice")];
const USER_B: &[(&str, &str)] = &[("r1", "r1"), ("rule-0-match-0", "bob")];

fn memory() -> Backend {
    Backend::new(MemoryCounter::new(1000), FailureMode::Open)
}

#[tokio::test]
async fn counts_to_the_limit_per_descriptor_value() {
    wait_for_fresh_minute(5).await;
    let svc = start_service(&per_user_config(3), memory()).await;
    let mut c = client(svc.port).await;
    for left in [2, 1, 0] {
        let r = ask(&mut c, request(DOMAIN, &[USER_A], 0))
            .await
            .expect("answer");
        assert_eq!(r.overall_code, Code::Ok as i32);
        let s = &r.statuses[0];
        assert_eq!(s.limit_remaining, left);
        let lim = s.current_limit.as_ref().expect("current_limit");
        assert_eq!((lim.requests_per_unit, lim.name.as_str()), (3, "per-user"));
        let reset = s
            .duration_until_reset
            .expect("duration_until_reset")
            .seconds;
        assert!((1..=60).contains(&reset), "{reset}");
    }
    let r = ask(&mut c, request(DOMAIN, &[USER_A], 0))
        .await
        .expect("answer");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    // Another value of the distinct header has its own counter.
    let r = ask(&mut c, request(DOMAIN, &[USER_B], 0))
        .await
        .expect("answer");
    assert_eq!(r.overall_code, Code::Ok as i32);
    // Several descriptors: over limit if any is; each has its own status; no rule → plain OK.
    let r = ask(&mut c, request(DOMAIN, &[USER_B, USER_A, &[("x", "y")]], 0))
        .await
        .expect("answer");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let codes: Vec<i32> = r.statuses.iter().map(|s| s.code).collect();
    assert_eq!(
        codes,
        [Code::Ok as i32, Code::OverLimit as i32, Code::Ok as i32]
    );
    assert!(r.statuses[2].current_limit.is_none());
    // An unknown domain has no limits.
    let r = ask(&mut c, request("other", &[USER_A], 0))
        .await
        .expect("answer");
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(Stats::get(&svc.stats.over_limit), 2);
}

#[tokio::test]
async fn hits_addend_request_and_descriptor_level() {
    wait_for_fresh_minute(5).await;
    let svc = start_service(&per_user_config(10), memory()).await;
    let mut c = client(svc.port).await;
    let r = ask(&mut c, request(DOMAIN, &[USER_A], 4))
        .await
        .expect("answer");
    assert_eq!(r.statuses[0].limit_remaining, 6);
    let mut req = request(DOMAIN, &[USER_A], 4);
    req.descriptors[0].hits_addend = Some(UInt64Value { value: 5 });
    let r = ask(&mut c, req).await.expect("answer");
    assert_eq!(
        (r.overall_code, r.statuses[0].limit_remaining),
        (Code::Ok as i32, 1)
    );
    let r = ask(&mut c, request(DOMAIN, &[USER_A], 2))
        .await
        .expect("answer");
    assert_eq!(
        (r.overall_code, r.statuses[0].limit_remaining),
        (Code::OverLimit as i32, 0)
    );
}

#[tokio::test]
async fn shadow_mode_counts_but_never_limits() {
    wait_for_fresh_minute(5).await;
    let mut cfg = per_user_config(1);
    cfg.domains[0].rules[0].shadow_mode = true;
    let svc = start_service(&cfg, memory()).await;
    let mut c = client(svc.port).await;
    for _ in 0..3 {
        let r = ask(&mut c, request(DOMAIN, &[USER_A], 0))
            .await
            .expect("answer");
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
    assert_eq!(Stats::get(&svc.stats.shadow_over_limit), 2);
    assert_eq!(Stats::get(&svc.stats.over_limit), 0);
}

#[tokio::test]
async fn config_is_replaced_at_runtime() {
    wait_for_fresh_minute(5).await;
    let svc = start_service(&per_user_config(1), memory()).await;
    let mut c = client(svc.port).await;
    ask(&mut c, request(DOMAIN, &[USER_A], 0))
        .await
        .expect("answer");
    let r = ask(&mut c, request(DOMAIN, &[USER_A], 0))
        .await
        .expect("answer");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(
        svc.config.replace(&per_user_config(1)),
        Ok(false),
        "no change, no wake-up"
    );
    assert_eq!(svc.config.replace(&per_user_config(100)), Ok(true));
    let r = ask(&mut c, request(DOMAIN, &[USER_A], 0))
        .await
        .expect("answer");
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 97);
    // A broken configuration is refused and the current one stays.
    let mut bad = per_user_config(5);
    bad.domains[0].rules[0].descriptor.clear();
    assert!(svc.config.replace(&bad).is_err());
    let r = ask(&mut c, request(DOMAIN, &[USER_A], 0))
        .await
        .expect("answer");
    assert_eq!(r.statuses[0].limit_remaining, 96);
}

#[tokio::test]
async fn oversized_requests_are_invalid_argument() {
    let svc = start_service(&per_user_config(1), memory()).await;
    let mut c = client(svc.port).await;
    let many: Vec<&[(&str, &str)]> = vec![USER_A; 129];
    let deep: Vec<(&str, &str)> = vec![("k", "v"); 162];
    let cases = [
        request("", &[USER_A], 0),
        request(DOMAIN, &[], 0),
        request(DOMAIN, &many, 0),
        request(DOMAIN, &[&deep], 0),
        request(DOMAIN, &[&[("", "v")]], 0),
    ];
    for req in cases {
        let e = ask(&mut c, req).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    }
    // Beyond the message size limit (8 MiB): refused before it is decoded.
    let mut huge = request(DOMAIN, &[USER_A], 0);
    huge.descriptors[0].entries = (0..20)
        .map(|i| Entry {
            key: format!("k{i}"),
            value: "x".repeat(420 * 1024),
        })
        .collect();
    let e = ask(&mut big_client(svc.port).await, huge)
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e}");
    assert_eq!(Stats::get(&svc.stats.invalid_requests), 5);
    // The service still answers.
    ask(&mut c, request(DOMAIN, &[USER_A], 0))
        .await
        .expect("answer");
}

/// A client under a `distinct` header selector cannot escape its limit with a long value: the
/// value is counted under its digest instead of failing the call (which Envoy would answer by
/// letting the request through). Envoy's whole header block at its default limit, in every
/// descriptor a route can have, still fits the message bound.
#[tokio::test]
async fn long_values_are_counted_not_refused() {
    wait_for_fresh_minute(5).await;
    let svc = start_service(&per_user_config(3), memory()).await;
    let mut c = client(svc.port).await;
    let long_a = "a".repeat(4096);
    let long_b = format!("{}b", "a".repeat(4095));
    let user = |v: &str| request(DOMAIN, &[&[("r1", "r1"), ("rule-0-match-0", v)]], 0);
    for _ in 0..3 {
        let r = ask(&mut c, user(&long_a)).await.expect("answer");
        assert_eq!(r.overall_code, Code::Ok as i32);
    }
    let r = ask(&mut c, user(&long_a)).await.expect("answer");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // A different long value is another client.
    let r = ask(&mut c, user(&long_b)).await.expect("answer");
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 2);
    // 128 descriptors (Envoy Gateway's most rules) of 60 KiB each: answered.
    let block = "h".repeat(60 * 1024);
    let d: &[(&str, &str)] = &[("r1", "r1"), ("rule-0-match-0", block.as_str())];
    let r = ask(
        &mut big_client(svc.port).await,
        request(DOMAIN, &vec![d; 128], 0),
    )
    .await
    .expect("answer");
    assert_eq!(r.statuses.len(), 128);
    assert_eq!(r.statuses[127].code, Code::OverLimit as i32);
    assert_eq!(Stats::get(&svc.stats.invalid_requests), 0);
}

/// A descriptor's own limit (Envoy's override, from dynamic metadata) wins over its rule's,
/// and applies without a rule too; an override in a unit the service does not count in is
/// ignored.
#[tokio::test]
async fn a_descriptor_limit_override_wins() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
    wait_for_fresh_minute(5).await;
    let svc = start_service(&per_user_config(3), memory()).await;
    let mut c = client(svc.port).await;
    let with = |d: &[(&str, &str)], requests_per_unit: u32, unit: i32| {
        let mut r = request(DOMAIN, &[d], 0);
        r.descriptors[0].limit = Some(RateLimitOverride {
            requests_per_unit,
            unit,
        });
        r
    };
    const MINUTE: i32 = 2;
    const MONTH: i32 = 5;
    let r = ask(&mut c, with(USER_A, 1, MINUTE)).await.expect("answer");
    assert_eq!(r.overall_code, Code::Ok as i32);
    let lim = r.statuses[0].current_limit.as_ref().expect("current_limit");
    assert_eq!((lim.requests_per_unit, lim.name.as_str()), (1, "per-user"));
    let r = ask(&mut c, with(USER_A, 1, MINUTE)).await.expect("answer");
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // Month: the rule's own limit (3) applies to the same counter (now at 3).
    let r = ask(&mut c, with(USER_A, 1, MONTH)).await.expect("answer");
    assert_eq!(r.overall_code, Code::Ok as i32);
    // No rule for this descriptor: the override alone limits it.
    let other: &[(&str, &str)] = &[("x", "y")];
    assert_eq!(
        ask(&mut c, with(other, 1, MINUTE))
            .await
            .expect("answer")
            .overall_code,
        Code::Ok as i32
    );
    assert_eq!(
        ask(&mut c, with(other, 1, MINUTE))
            .await
            .expect("answer")
            .overall_code,
        Code::OverLimit as i32
    );
}

/// A client that sends what Envoy may send (tonic's client refuses 4 MiB by default).
async fn big_client(
    port: u16,
) -> envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient<
    tonic::transport::Channel,
>{
    client(port)
        .await
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

/// At the memory bound the coldest counter goes: nothing fails, so neither failure mode
/// applies, and a flood of new values cannot switch limits off.
#[tokio::test]
async fn memory_bound_evicts_the_least_recently_used_counter() {
    wait_for_fresh_minute(5).await;
    for mode in [FailureMode::Open, FailureMode::Closed] {
        let svc = start_service(
            &per_user_config(2),
            Backend::new(MemoryCounter::new(2), mode),
        )
        .await;
        let mut c = client(svc.port).await;
        let mut code_of = async |u: &str| {
            let r = ask(
                &mut c,
                request(DOMAIN, &[&[("r1", "r1"), ("rule-0-match-0", u)]], 0),
            )
            .await
            .expect("answer");
            r.overall_code
        };
        for u in ["a", "a", "b"] {
            assert_eq!(code_of(u).await, Code::Ok as i32);
        }
        assert_eq!(code_of("a").await, Code::OverLimit as i32, "{mode:?}");
        // A third value evicts `b`, the coldest; `a` stays over its limit.
        assert_eq!(code_of("c").await, Code::Ok as i32, "{mode:?}");
        assert_eq!(code_of("a").await, Code::OverLimit as i32, "{mode:?}");
        assert_eq!(Stats::get(&svc.stats.backend_errors), 0);
    }
}

/// The window arithmetic as answered, at chosen times (`decide` takes `now`, no sleeping).
#[tokio::test]
async fn window_resets_at_its_end_and_reports_time_until_reset() {
    let cfg = flotilla_ratelimit::ConfigHandle::new(&per_user_config(2)).expect("valid");
    let limiter = flotilla_ratelimit::RateLimiter::new(cfg.subscribe(), memory());
    let at = |now: u64| {
        let limiter = limiter.clone();
        async move {
            let r = limiter.decide(&request(DOMAIN, &[USER_A], 0), now).await;
            let s = &r.statuses[0];
            let reset = s.duration_until_reset.expect("reset").seconds;
            (r.overall_code, s.limit_remaining, reset)
        }
    };
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(at(6000).await, (ok, 1, 60)); // the window [6000, 6060)
    assert_eq!(at(6030).await, (ok, 0, 30));
    assert_eq!(at(6059).await, (over, 0, 1));
    assert_eq!(at(6060).await, (ok, 1, 60), "a new window, a new counter");
}
