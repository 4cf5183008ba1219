//! The policy as a whole: the connection manager's filters, an invalid policy (its status, and
//! nothing of it reaching Envoy), a route policy merged into a gateway one.

use super::*;

#[test]
fn the_connection_manager_holds_the_policy_filters_in_envoy_gateways_order() {
    let t = translate(&[]);
    let l = gateway(&t)
        .resources
        .iter()
        .find(|r| r.type_url == type_url::LISTENER)
        .map(|r| Listener::decode(r.body.clone()).unwrap())
        .unwrap();
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no HCM");
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} in {names:?}"))
    };
    assert!(pos("envoy.filters.http.custom_response") < pos("envoy.filters.http.fault"));
    assert!(pos("envoy.filters.http.fault") < pos("envoy.filters.http.cors"));
    assert!(pos("envoy.filters.http.buffer") > pos("envoy.filters.http.stateful_session"));
    assert!(pos(crate::traffic::BANDWIDTH_REQUEST_FILTER) > pos("envoy.filters.http.buffer"));
    assert!(
        pos(crate::traffic::BANDWIDTH_RESPONSE_FILTER)
            < pos("envoy.filters.http.compressor.brotli")
    );
    assert!(pos("envoy.filters.http.compressor.zstd") < pos("envoy.filters.http.router"));
    // Admission control rejects before the compressors (and the router) see the request.
    assert!(
        pos(crate::traffic::ADMISSION_CONTROL_FILTER) < pos("envoy.filters.http.compressor.brotli")
    );
    assert_eq!(*names.last().unwrap(), "envoy.filters.http.router");
    // Nothing runs unless a route enables it.
    for f in &hcm.http_filters {
        if f.name.contains("compressor")
            || f.name.ends_with("fault")
            || f.name.ends_with("buffer")
            || f.name.contains("bandwidth_limit")
            || f.name.contains("admission_control")
        {
            assert!(f.disabled, "{} disabled", f.name);
        }
    }
}

#[test]
fn an_invalid_policy_says_so_and_configures_nothing() {
    let t = translate(&[
        policy(
            "bad-fault",
            Some("a"),
            "  faultInjection: {abort: {httpStatus: 700}}",
        ),
        policy(
            "bad-cb",
            Some("b"),
            "  circuitBreaker: {maxConnections: -1}",
        ),
        policy(
            "bad-override",
            Some("c"),
            "  responseOverride:\n  - match: {statusCodes: [{value: 500}]}\n    response: {body: {type: ValueRef, valueRef: {group: '', kind: ConfigMap, name: missing}}}",
        ),
    ]);
    let (status, reason, message) = accepted(&t, "bad-fault");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert!(message.contains("FaultInjection"), "{message}");
    let (_, _, message) = accepted(&t, "bad-cb");
    assert_eq!(message, "CircuitBreaker: invalid MaxConnections value -1.");
    let (_, _, message) = accepted(&t, "bad-override");
    assert_eq!(
        message,
        "ResponseOverride: can't find the referenced configmap app/missing."
    );
    // Envoy Gateway answers the routes of an invalid policy with 500; none of its settings
    // reach Envoy.
    for p in ["/a", "/b", "/c"] {
        let r = route_named(&t, p);
        assert!(r.typed_per_filter_config.is_empty(), "{p}");
        match r.action {
            Some(route::Action::DirectResponse(d)) => assert_eq!(d.status, 500, "{p}"),
            other => panic!("{p}: {other:?}"),
        }
    }
    assert_eq!(clusters(&t).len(), 1, "only the backend's own cluster");
    validate(&t);
}

#[test]
fn a_route_policy_with_merge_type_patches_the_gateway_policy() {
    let gw_policy = "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {name: gw-wide, namespace: app}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  retry: {numRetries: 4}\n  timeout: {http: {requestTimeout: 9s}}\n".to_string();
    let t = translate(&[
        gw_policy.clone(),
        policy(
            "merging",
            Some("a"),
            "  mergeType: StrategicMerge\n  timeout: {http: {requestTimeout: 2s}}",
        ),
        policy(
            "replacing",
            Some("b"),
            "  timeout: {http: {requestTimeout: 3s}}",
        ),
    ]);
    // Rule a: its own timeout over the gateway policy's retry.
    let a = action(&route_named(&t, "/a")).clone();
    assert_eq!(a.timeout.unwrap().seconds, 2);
    assert_eq!(a.retry_policy.unwrap().num_retries.unwrap().value, 4);
    // Rule b: its policy replaces the gateway's whole.
    let b = action(&route_named(&t, "/b")).clone();
    assert_eq!(b.timeout.unwrap().seconds, 3);
    assert!(b.retry_policy.is_none());
    // Rule c: the gateway policy.
    let c = action(&route_named(&t, "/c")).clone();
    assert_eq!(c.timeout.unwrap().seconds, 9);
    validate(&t);
}

/// Values Envoy would refuse are refused with a status condition naming the section, and
/// nothing of the policy reaches Envoy (its rule answers 500, as in Envoy Gateway).
#[test]
fn values_envoy_would_refuse_are_refused_in_status() {
    for (spec, section) in [
        ("  http2: {initialStreamWindowSize: 1Ki}", "HTTP2"),
        ("  connection: {preconnect: {perEndpointPercent: 50}}", "BackendConnection"),
        ("  dns: {dnsRefreshRate: 1ms}", "DNS"),
        (
            "  healthCheck: {active: {type: HTTP, interval: 0s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 1, http: {path: /}}}",
            "HealthCheck",
        ),
        ("  healthCheck: {passive: {maxEjectionPercent: 150}}", "HealthCheck"),
        ("  retry: {retryOn: {httpStatusCodes: [99]}}", "Retry"),
        ("  retry: {perRetry: {timeout: 0s}}", "Retry"),
        ("  faultInjection: {abort: {grpcStatus: 14, percentage: 120}}", "FaultInjection"),
        ("  tcpKeepalive: {idleTime: 10ms}", "TCPKeepalive"),
        (
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Header}}",
            "LoadBalancer",
        ),
        ("  loadBalancer: {type: Fastest}", "LoadBalancer"),
        (
            "  loadBalancer: {type: BackendUtilization, backendUtilization: {weightUpdatePeriod: 0s}}",
            "LoadBalancer",
        ),
        (
            "  loadBalancer: {type: BackendUtilization, backendUtilization: {errorUtilizationPenaltyPercent: -5}}",
            "LoadBalancer",
        ),
        (
            "  loadBalancer: {type: BackendUtilization, backendUtilization: {metricNamesForComputingUtilization: ['']}}",
            "LoadBalancer",
        ),
        (
            "  loadBalancer: {type: BackendUtilization, backendUtilization: {outOfBand: {port: 70000}}}",
            "LoadBalancer",
        ),
        (
            "  loadBalancer: {type: BackendUtilization, zoneAware: {preferLocal: {minEndpointsThreshold: 2}}}",
            "LoadBalancer",
        ),
        (
            "  responseOverride:\n  - match: {statusCodes: [{type: Range, range: {start: 510, end: 500}}]}\n    response: {body: {inline: x}}",
            "ResponseOverride",
        ),
    ] {
        let t = translate(&[policy("p", Some("a"), spec)]);
        let (status, reason, message) = accepted(&t, "p");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"), "{spec}");
        assert!(message.starts_with(&format!("{section}: ")), "{spec}: {message}");
        let a = route_named(&t, "/a");
        assert!(
            matches!(a.action, Some(route::Action::DirectResponse(ref d)) if d.status == 500),
            "{spec}"
        );
        assert_eq!(clusters(&t).len(), 1, "{spec}: no variant cluster");
    }
}
