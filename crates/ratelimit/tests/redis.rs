//! The Redis counter against a real redis-server: one global limit across two Envoys and two
//! service instances, and a Redis outage answered per the failure mode, then recovery.

mod support;

use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use flotilla_ratelimit::telemetry::Stats;
use flotilla_ratelimit::{Backend, FailureMode, RedisConfig, RedisCounter};
use flotilla_testing::start_redis;
use support::*;

fn redis_backend(port: u16, mode: FailureMode) -> Backend {
    Backend::new(
        RedisCounter::new(RedisConfig::new(format!("127.0.0.1:{port}"))),
        mode,
    )
}

#[tokio::test]
async fn global_limit_holds_across_two_envoys_and_two_services() {
    const N: u32 = 7;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_port = free_port();
    let _redis = start_redis(dir.path(), "redis", redis_port);
    let backend = start_backend().await;
    let svc1 = start_service(
        &per_user_config(N),
        redis_backend(redis_port, FailureMode::Open),
    )
    .await;
    let svc2 = start_service(
        &per_user_config(N),
        redis_backend(redis_port, FailureMode::Open),
    )
    .await;
    let (p1, p2) = (free_port(), free_port());
    let _e1 = start_envoy(dir.path(), "envoy1", p1, backend, svc1.port);
    let _e2 = start_envoy(dir.path(), "envoy2", p2, backend, svc2.port);
    let c = http();
    wait_for_fresh_minute(20).await;

    // 3N requests, alternating and concurrent in pairs across both Envoys.
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..(3 * N / 2 + 1) {
        let (a, b) = tokio::join!(get_as(&c, p1, "alice"), get_as(&c, p2, "alice"));
        for code in [a, b] {
            match code {
                200 => ok += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert_eq!(
        ok, N,
        "exactly N succeed within the window ({limited} limited)"
    );
    // Both instances did part of the work, and neither failed open.
    assert!(Stats::get(&svc1.stats.requests) > 0 && Stats::get(&svc2.stats.requests) > 0);
    assert_eq!(
        Stats::get(&svc1.stats.backend_errors) + Stats::get(&svc2.stats.backend_errors),
        0
    );
    // Another user is unaffected on both.
    assert_eq!(get_as(&c, p1, "bob").await, 200);
    assert_eq!(get_as(&c, p2, "bob").await, 200);
}

#[tokio::test]
async fn redis_outage_fails_open_or_closed_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_port = free_port();
    let mut redis = start_redis(dir.path(), "redis", redis_port);
    let open = start_service(
        &per_user_config(2),
        redis_backend(redis_port, FailureMode::Open),
    )
    .await;
    let closed = start_service(
        &per_user_config(2),
        redis_backend(redis_port, FailureMode::Closed),
    )
    .await;
    let mut co = client(open.port).await;
    let mut cc = client(closed.port).await;
    wait_for_fresh_minute(20).await;
    let alice = || request(DOMAIN, &[&[("r1", "r1"), ("rule-0-match-0", "alice")]], 0);
    let code = |r: Result<_, tonic::Status>| -> i32 {
        let r: envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse =
            r.expect("the service answers");
        r.overall_code
    };

    // Both share the counter: 2 allowed, then over.
    assert_eq!(code(ask(&mut co, alice()).await), Code::Ok as i32);
    assert_eq!(code(ask(&mut cc, alice()).await), Code::Ok as i32);
    assert_eq!(code(ask(&mut co, alice()).await), Code::OverLimit as i32);

    redis.kill();
    for _ in 0..3 {
        // Open: answers OK although alice is over; closed: OVER_LIMIT.
        assert_eq!(code(ask(&mut co, alice()).await), Code::Ok as i32);
        assert_eq!(code(ask(&mut cc, alice()).await), Code::OverLimit as i32);
    }
    assert_eq!(Stats::get(&open.stats.failed_open), 3);
    assert_eq!(Stats::get(&closed.stats.failed_closed), 3);
    assert!(Stats::get(&open.stats.backend_errors) >= 3);

    // Redis back (empty: the counters were in memory only): counting resumes.
    let _redis = start_redis(dir.path(), "redis2", redis_port);
    tokio::time::sleep(Duration::from_millis(300)).await; // past the reconnect backoff
    assert_eq!(code(ask(&mut co, alice()).await), Code::Ok as i32);
    assert_eq!(code(ask(&mut cc, alice()).await), Code::Ok as i32);
    assert_eq!(code(ask(&mut co, alice()).await), Code::OverLimit as i32);
    assert_eq!(code(ask(&mut cc, alice()).await), Code::OverLimit as i32);
    assert_eq!(
        Stats::get(&open.stats.failed_open),
        3,
        "no failure after recovery"
    );
}
