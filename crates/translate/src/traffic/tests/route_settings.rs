//! Route-level settings on the rule's routes: retries and timeouts (the HTTPRoute's own win),
//! fault injection, compression, buffering, upgrades (CONNECT among them), bandwidth limits.

use super::*;

#[test]
fn route_level_settings_reach_the_rule_routes() {
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  retry:
    numRetries: 5
    numAttemptsPerPriority: 2
    retryOn: {triggers: [connect-failure, reset], httpStatusCodes: [500, 502]}
    perRetry: {timeout: 250ms, backOff: {baseInterval: 100ms, maxInterval: 1s}}
  timeout: {http: {requestTimeout: 7s}}
  faultInjection:
    abort: {httpStatus: 418, percentage: 50}
    delay: {fixedDelay: 2s, percentage: 0.5}
  responseOverride:
  - match: {statusCodes: [{type: Value, value: 500}, {type: Range, range: {start: 502, end: 503}}]}
    response: {contentType: text/plain, body: {type: Inline, inline: oops}, statusCode: 503}
  - match: {statusCodes: [{value: 404}], responseHeaders: [{name: X-Error, value: {type: RegularExpression, value: '^up.*'}}, {name: X-Zone, value: {value: eu}}]}
    response: {body: {inline: gone}}
  compression: [{type: Gzip}, {type: Brotli}]
  requestBuffer: {limit: 4Ki}
  httpUpgrade: [{type: spdy/3.1}]",
    )]);
    let a = route_named(&t, "/a");
    let ra = action(&a);
    let rp = ra.retry_policy.as_ref().expect("a retry policy");
    assert_eq!(rp.num_retries.as_ref().unwrap().value, 5);
    assert_eq!(rp.retry_on, "connect-failure,reset,retriable-status-codes");
    assert_eq!(rp.retriable_status_codes, vec![500, 502]);
    assert_eq!(rp.per_try_timeout.as_ref().unwrap().nanos, 250_000_000);
    let bo = rp.retry_back_off.as_ref().unwrap();
    assert_eq!(bo.base_interval.as_ref().unwrap().nanos, 100_000_000);
    assert_eq!(bo.max_interval.as_ref().unwrap().seconds, 1);
    assert_eq!(ra.timeout.as_ref().unwrap().seconds, 7);
    assert_eq!(
        rp.retry_priority.as_ref().unwrap().name,
        "envoy.retry_priorities.previous_priorities"
    );
    let cr = &a.typed_per_filter_config["envoy.filters.http.custom_response"].value;
    let has = |t: &str| cr.windows(t.len()).any(|w| w == t.as_bytes());
    assert!(
        has("x-error") && has("^up.*") && has("gone"),
        "the header-matched override"
    );
    assert_eq!(ra.upgrade_configs[0].upgrade_type, "spdy/3.1");
    let keys: Vec<&str> = a
        .typed_per_filter_config
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "envoy.filters.http.fault",
        "envoy.filters.http.custom_response",
        "envoy.filters.http.buffer",
        "envoy.filters.http.compressor.gzip",
        "envoy.filters.http.compressor.brotli",
    ] {
        assert!(keys.contains(&k), "{k} in {keys:?}");
    }
    assert!(!keys.contains(&"envoy.filters.http.compressor.zstd"));
    let fault = HttpFault::decode(
        a.typed_per_filter_config["envoy.filters.http.fault"]
            .value
            .as_slice(),
    )
    .unwrap();
    let abort = fault.abort.unwrap();
    assert_eq!(
        abort.error_type,
        Some(fault_abort::ErrorType::HttpStatus(418))
    );
    assert_eq!(abort.percentage.unwrap().numerator, 500_000);
    assert_eq!(fault.delay.unwrap().percentage.unwrap().numerator, 5_000);
    // The other rules are untouched.
    let b = route_named(&t, "/b");
    assert!(action(&b).retry_policy.is_none());
    assert!(b.typed_per_filter_config.is_empty());
    validate(&t);
}

#[test]
fn an_httproute_retry_and_timeout_win_over_the_policy() {
    let text = BASE.replace(
        "  - name: c\n",
        "  - name: c\n    timeouts: {request: 3s}\n    retry: {attempts: 1}\n",
    );
    let t = translate_yaml(&format!(
        "{text}{}",
        policy(
            "p",
            None,
            "  retry: {numRetries: 9}\n  timeout: {http: {requestTimeout: 7s}}"
        )
    ));
    let c = route_named(&t, "/c");
    assert_eq!(action(&c).timeout.as_ref().unwrap().seconds, 3);
    assert_eq!(
        action(&c)
            .retry_policy
            .as_ref()
            .unwrap()
            .num_retries
            .as_ref()
            .unwrap()
            .value,
        1
    );
    let a = route_named(&t, "/a");
    assert_eq!(action(&a).timeout.as_ref().unwrap().seconds, 7);
    assert_eq!(
        action(&a)
            .retry_policy
            .as_ref()
            .unwrap()
            .num_retries
            .as_ref()
            .unwrap()
            .value,
        9
    );
}

/// `bandwidthLimit`: a per-route config of each direction's filter instance, in KiB/s as
/// Envoy Gateway computes it; below 1 KiB/s the policy is refused. Envoy accepts the result.
#[test]
fn bandwidth_limits_enable_the_filter_of_each_direction_on_the_routes() {
    use envoy_types::pb::envoy::extensions::filters::http::bandwidth_limit::v3::{
        bandwidth_limit::EnableMode, BandwidthLimit,
    };
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  bandwidthLimit:
    request: {limit: {value: 2Mi, unit: Second}}
    response:
      limit: {value: 90Mi, unit: Minute}
      responseTrailers: {prefix: x-bw}",
    )]);
    assert_eq!(accepted(&t, "p").0, "True");
    let a = route_named(&t, "/a");
    let cfg = |name: &str| {
        BandwidthLimit::decode(a.typed_per_filter_config[name].value.as_slice()).unwrap()
    };
    let req = cfg(crate::traffic::BANDWIDTH_REQUEST_FILTER);
    assert_eq!(req.enable_mode, EnableMode::Request as i32);
    assert_eq!(req.limit_kbps.unwrap().value, 2048);
    assert!(!req.enable_response_trailers);
    let resp = cfg(crate::traffic::BANDWIDTH_RESPONSE_FILTER);
    assert_eq!(resp.enable_mode, EnableMode::Response as i32);
    // 90 MiB a minute: 1536 KiB/s.
    assert_eq!(resp.limit_kbps.unwrap().value, 1536);
    assert!(resp.enable_response_trailers);
    assert_eq!(resp.response_trailer_prefix, "x-bw");
    validate(&t);

    // One direction only; the other route has neither.
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  bandwidthLimit: {response: {limit: {value: 1Ki}}}",
    )]);
    let a = route_named(&t, "/a");
    assert!(!a
        .typed_per_filter_config
        .contains_key(crate::traffic::BANDWIDTH_REQUEST_FILTER));
    assert!(a
        .typed_per_filter_config
        .contains_key(crate::traffic::BANDWIDTH_RESPONSE_FILTER));
    validate(&t);

    let t = translate(&[policy(
        "p",
        Some("a"),
        "  bandwidthLimit: {request: {limit: {value: 1000, unit: Second}}}",
    )]);
    let (status, _, message) = accepted(&t, "p");
    assert_eq!(status, "False");
    assert!(
        message.contains("below the minimum of 1 KiB/s"),
        "{message}"
    );
    assert!(!route_named(&t, "/a")
        .typed_per_filter_config
        .keys()
        .any(|k| k.contains("bandwidth")));
}

/// `httpUpgrade` CONNECT: the rule's route matches CONNECT requests (which carry no path) and
/// enables the CONNECT upgrade, with a connect config (Envoy terminates the tunnel) when
/// `connect.terminate`, without one (the CONNECT is passed upstream) otherwise; Envoy accepts
/// both.
#[test]
fn a_connect_upgrade_makes_the_route_take_connect_requests() {
    use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
    let t = translate(&[
        policy(
            "pa",
            Some("a"),
            "  httpUpgrade:\n  - type: CONNECT\n    connect: {terminate: true}\n  - type: websocket",
        ),
        policy("pb", Some("b"), "  httpUpgrade: [{type: CONNECT}]"),
    ]);
    for p in ["pa", "pb"] {
        assert_eq!(accepted(&t, p).0, "True", "{p}");
    }
    let r = gateway(&t)
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .unwrap();
    let routes: Vec<Route> = RouteConfiguration::decode(r.body.clone())
        .unwrap()
        .virtual_hosts
        .into_iter()
        .flat_map(|v| v.routes)
        .collect();
    let connect: Vec<&Route> = routes
        .iter()
        .filter(|r| {
            matches!(
                r.r#match.as_ref().unwrap().path_specifier,
                Some(PathSpecifier::ConnectMatcher(_))
            )
        })
        .collect();
    assert_eq!(connect.len(), 2, "rules a and b take CONNECT");
    let upgrade = |r: &Route| {
        action(r)
            .upgrade_configs
            .iter()
            .find(|u| u.upgrade_type == "CONNECT")
            .cloned()
            .expect("a CONNECT upgrade")
    };
    let mut terminating = 0;
    for r in &connect {
        let u = upgrade(r);
        assert!(u.enabled.unwrap().value);
        if u.connect_config.is_some() {
            terminating += 1;
            // The other upgrades of the policy are kept.
            assert!(action(r)
                .upgrade_configs
                .iter()
                .any(|u| u.upgrade_type == "websocket"));
        }
    }
    assert_eq!(terminating, 1, "only rule a terminates");
    // Rule c keeps its path match and takes no CONNECT.
    assert!(action(&route_named(&t, "/c")).upgrade_configs.is_empty());
    validate(&t);
    // Connect settings belong to CONNECT only.
    let bad = translate(&[policy(
        "p",
        Some("a"),
        "  httpUpgrade: [{type: websocket, connect: {terminate: true}}]",
    )]);
    let (status, _, message) = accepted(&bad, "p");
    assert_eq!(status, "False");
    assert!(message.starts_with("HTTPUpgrade: "), "{message}");
}
