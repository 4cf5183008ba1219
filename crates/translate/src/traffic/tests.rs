//! BackendTrafficPolicy → xDS: YAML in, the Envoy routes, clusters and filters out, and the
//! real Envoy's `--mode validate` on the whole gateway.

use crate::route_tests::bootstrap_of;
use crate::tests::{envoy_validate, gateway_class, translate_yaml, web_service};
use crate::{type_url, Translator};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{route, route_action, Route, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::UpstreamProtocolOptions, HttpProtocolOptions,
};
use flotilla_model::{Kind, ResourceKey};
use prost::Message;

const BASE: &str = concat!(
    gateway_class!(),
    r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
---
"#,
    web_service!(),
    r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - name: a
    matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: web, port: 80}]
  - name: b
    matches: [{path: {type: PathPrefix, value: /b}}]
    backendRefs: [{name: web, port: 80}]
  - name: c
    matches: [{path: {type: PathPrefix, value: /c}}]
    backendRefs: [{name: web, port: 80}]
"#
);

/// A BackendTrafficPolicy `name` targeting rule `rule` of route `r` (the whole route: None).
fn policy(name: &str, rule: Option<&str>, spec: &str) -> String {
    let section = rule
        .map(|r| format!(", sectionName: {r}"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: BackendTrafficPolicy\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r{section}}}]\n{spec}\n"
    )
}

fn translate(policies: &[String]) -> Translator {
    translate_yaml(&format!("{BASE}{}", policies.concat()))
}

fn gateway(t: &Translator) -> &crate::GatewayXds {
    &t.gateways()["c1/app/gw"]
}

fn route_named(t: &Translator, prefix: &str) -> Route {
    let r = gateway(t)
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .expect("a route configuration");
    let rc = RouteConfiguration::decode(r.body.clone()).unwrap();
    rc.virtual_hosts
        .into_iter()
        .flat_map(|v| v.routes)
        .find(|r| {
            matches!(&r.r#match.as_ref().unwrap().path_specifier,
                Some(envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::PathSeparatedPrefix(p)) if p == prefix)
        })
        .unwrap_or_else(|| panic!("a route for {prefix}"))
}

fn action(r: &Route) -> &envoy_types::pb::envoy::config::route::v3::RouteAction {
    match r.action.as_ref() {
        Some(route::Action::Route(ra)) => ra,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn cluster_of(r: &Route) -> String {
    match action(r).cluster_specifier.as_ref() {
        Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
        other => panic!("no single cluster: {other:?}"),
    }
}

fn clusters(t: &Translator) -> Vec<Cluster> {
    gateway(t)
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::CLUSTER)
        .map(|r| Cluster::decode(r.body.clone()).unwrap())
        .collect()
}

fn cluster_named(t: &Translator, name: &str) -> Cluster {
    clusters(t)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("cluster {name}"))
}

fn validate(t: &Translator) {
    envoy_validate(&bootstrap_of(gateway(t)), "c1/app/gw").expect("Envoy accepts the config");
}

/// (type, status, reason, message) of the policy's first ancestor's Accepted condition.
fn accepted(t: &Translator, name: &str) -> (String, String, String) {
    let st = t
        .status(&ResourceKey::new(
            "c1",
            Kind::BackendTrafficPolicy,
            "app",
            name,
        ))
        .expect("a policy status");
    let c = st["ancestors"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .expect("Accepted")
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

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

const CLUSTER_SPEC: &str = "  loadBalancer:
    type: ConsistentHash
    consistentHash: {type: Header, header: {name: X-User}, tableSize: 65537}
  circuitBreaker: {maxConnections: 1, maxPendingRequests: 0, maxParallelRequests: 10, maxParallelRetries: 2, maxRequestsPerConnection: 100}
  healthCheck:
    active: {type: HTTP, interval: 1s, timeout: 500ms, healthyThreshold: 1, unhealthyThreshold: 2, http: {path: /healthz, expectedStatuses: [200]}}
    passive: {consecutive5XxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
  tcpKeepalive: {probes: 3, idleTime: 60s, interval: 10s}
  proxyProtocol: {version: V2}
  connection: {bufferLimit: 32Ki, socketBufferLimit: 64Ki, preconnect: {perEndpointPercent: 150}}
  timeout: {tcp: {connectTimeout: 3s}, http: {connectionIdleTimeout: 30s, maxConnectionDuration: 10m}}";

#[test]
fn cluster_settings_make_one_variant_shared_by_rules_with_equal_settings() {
    let t = translate(&[
        policy("pa", Some("a"), CLUSTER_SPEC),
        policy("pb", Some("b"), CLUSTER_SPEC),
        policy(
            "pc",
            Some("c"),
            "  loadBalancer: {type: Random}\n  useClientProtocol: true",
        ),
    ]);
    let (a, b, c) = (
        route_named(&t, "/a"),
        route_named(&t, "/b"),
        route_named(&t, "/c"),
    );
    let (ca, cb, cc) = (cluster_of(&a), cluster_of(&b), cluster_of(&c));
    assert_eq!(ca, cb, "equal settings share a cluster");
    assert_ne!(ca, cc, "different settings get their own");
    assert!(ca.starts_with("app/web/80/btp-"), "{ca}");
    // The route hashes on the header the cluster balances on.
    let hp = &action(&a).hash_policy;
    assert_eq!(hp.len(), 1);
    assert!(format!("{hp:?}").contains("x-user"));

    let k = cluster_named(&t, &ca);
    assert_eq!(k.lb_policy, cluster::LbPolicy::Maglev as i32);
    assert_eq!(
        k.eds_cluster_config.as_ref().unwrap().service_name,
        "app/web/80",
        "a variant reads the backend's endpoints"
    );
    let th = &k.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(th.max_connections.as_ref().unwrap().value, 1);
    assert_eq!(th.max_pending_requests.as_ref().unwrap().value, 0);
    assert_eq!(th.max_requests.as_ref().unwrap().value, 10);
    assert_eq!(th.max_retries.as_ref().unwrap().value, 2);
    assert_eq!(k.health_checks.len(), 1);
    // Without a hostname of its own, the HTTP health check asks for the route's host.
    assert!(format!("{:?}", k.health_checks[0].health_checker).contains("host: \"*\""));
    assert_eq!(
        k.health_checks[0]
            .unhealthy_threshold
            .as_ref()
            .unwrap()
            .value,
        2
    );
    let od = k.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.as_ref().unwrap().value, 2);
    assert_eq!(
        k.per_connection_buffer_limit_bytes.as_ref().unwrap().value,
        32 * 1024
    );
    assert_eq!(
        k.upstream_bind_config
            .as_ref()
            .unwrap()
            .socket_options
            .len(),
        2
    );
    let ka = k
        .upstream_connection_options
        .as_ref()
        .unwrap()
        .tcp_keepalive
        .as_ref()
        .unwrap();
    assert_eq!(ka.keepalive_time.as_ref().unwrap().value, 60);
    assert_eq!(
        k.transport_socket.as_ref().unwrap().name,
        "envoy.transport_sockets.upstream_proxy_protocol"
    );
    assert_eq!(k.connect_timeout.as_ref().unwrap().seconds, 3);
    let pre = k.preconnect_policy.as_ref().unwrap();
    assert_eq!(
        pre.per_upstream_preconnect_ratio.as_ref().unwrap().value,
        1.5
    );
    let opts = HttpProtocolOptions::decode(
        k.typed_extension_protocol_options
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .value
            .as_slice(),
    )
    .unwrap();
    let common = opts.common_http_protocol_options.unwrap();
    assert_eq!(common.idle_timeout.unwrap().seconds, 30);
    assert_eq!(common.max_connection_duration.unwrap().seconds, 600);
    assert_eq!(common.max_requests_per_connection.unwrap().value, 100);

    let kc = cluster_named(&t, &cc);
    assert_eq!(kc.lb_policy, cluster::LbPolicy::Random as i32);
    let opts = HttpProtocolOptions::decode(
        kc.typed_extension_protocol_options
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            .value
            .as_slice(),
    )
    .unwrap();
    assert!(matches!(
        opts.upstream_protocol_options,
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
    ));
    // The backend's own cluster is still there, without settings, with the endpoints.
    let base = cluster_named(&t, "app/web/80");
    assert!(base.circuit_breakers.is_none());
    let endpoints: Vec<&str> = gateway(&t)
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::ENDPOINT)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(endpoints, vec!["app/web/80"]);
    validate(&t);
}

#[test]
fn load_balancer_kinds_and_health_checkers_are_accepted_by_envoy() {
    let t = translate(&[
        policy(
            "pa",
            Some("a"),
            "  loadBalancer: {type: LeastRequest, slowStart: {window: 30s}}
  healthCheck:
    active: {type: TCP, interval: 2s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 3, tcp: {send: {type: Text, text: ping}, receive: {type: Text, text: pong}}}",
        ),
        policy(
            "pb",
            Some("b"),
            "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Cookie, cookie: {name: session, ttl: 60s}}}
  healthCheck:
    active: {type: GRPC, interval: 2s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 3, grpc: {service: health}}
  http2: {initialStreamWindowSize: 1Mi, initialConnectionWindowSize: 2Mi, maxConcurrentStreams: 100}",
        ),
        policy(
            "pc",
            Some("c"),
            "  loadBalancer: {type: RoundRobin, slowStart: {window: 10s}, zoneAware: {preferLocal: {minEndpointsThreshold: 2, percentageEnabled: 50}}}",
        ),
    ]);
    let la = cluster_named(&t, &cluster_of(&route_named(&t, "/a")));
    assert_eq!(la.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    assert!(matches!(
        la.lb_config,
        Some(cluster::LbConfig::LeastRequestLbConfig(_))
    ));
    let lb = cluster_named(&t, &cluster_of(&route_named(&t, "/b")));
    assert_eq!(lb.lb_policy, cluster::LbPolicy::Maglev as i32);
    let lc = cluster_named(&t, &cluster_of(&route_named(&t, "/c")));
    assert!(lc.common_lb_config.is_some());
    validate(&t);
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
fn a_response_body_from_a_configmap_follows_the_configmap() {
    let cm = |body: &str| {
        format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: page, namespace: app}}\ndata: {{response.body: {body}}}\n")
    };
    let p = policy(
        "p",
        Some("a"),
        "  responseOverride:\n  - match: {statusCodes: [{value: 500}]}\n    response: {body: {type: ValueRef, valueRef: {group: '', kind: ConfigMap, name: page}}}",
    );
    let body_has = |t: &Translator, text: &str| {
        let r = route_named(t, "/a");
        let v = &r.typed_per_filter_config["envoy.filters.http.custom_response"].value;
        v.windows(text.len()).any(|w| w == text.as_bytes())
    };
    let mut t = translate(&[p, cm("first-page")]);
    assert!(body_has(&t, "first-page"));
    crate::tests::apply_all(&mut t, &crate::tests::events("c1", &cm("second-page")));
    assert!(
        body_has(&t, "second-page"),
        "the gateway follows the ConfigMap"
    );
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

#[test]
fn a_tcp_route_takes_the_cluster_settings_fit_for_tcp() {
    let t = translate_yaml(&format!(
        "{}{}",
        BASE.replace(
            "  - {name: http, port: 8080, protocol: HTTP}",
            "  - {name: http, port: 8080, protocol: HTTP}\n  - {name: tcp, port: 9000, protocol: TCP}",
        ),
        "---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: tcp-policy, namespace: app}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: t}]
  circuitBreaker: {maxConnections: 5, maxRequestsPerConnection: 9}
  loadBalancer: {type: Random}
  timeout: {tcp: {connectTimeout: 2s}, http: {connectionIdleTimeout: 30s}}
"
    ));
    let variant = clusters(&t)
        .into_iter()
        .find(|c| c.name.starts_with("app/web/80/btp-"))
        .expect("the TCP route's cluster variant");
    assert_eq!(variant.lb_policy, cluster::LbPolicy::Random as i32);
    let th = &variant.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(th.max_connections.as_ref().unwrap().value, 5);
    assert_eq!(variant.connect_timeout.as_ref().unwrap().seconds, 2);
    // HTTP settings do not reach a TCP proxy's cluster.
    assert!(variant.typed_extension_protocol_options.is_empty());
    // The TCP proxy forwards to the variant.
    let l = gateway(&t)
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::LISTENER)
        .map(|r| Listener::decode(r.body.clone()).unwrap())
        .find(|l| format!("{l:?}").contains("tcp_proxy"))
        .expect("the TCP listener");
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no filter");
    };
    let tp = envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy::decode(
        any.value.as_slice(),
    )
    .unwrap();
    assert!(format!("{:?}", tp.cluster_specifier).contains(&variant.name));
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

/// `responseOverride[].redirect`: the custom response filter's matcher takes Envoy's redirect
/// policy for that override (each part of the URL the policy sets, the status Envoy Gateway
/// defaults to 302) next to a local response, and Envoy accepts the result.
#[test]
fn a_response_override_redirect_becomes_envoys_redirect_policy() {
    use envoy_types::pb::envoy::config::route::v3::redirect_action::{
        PathRewriteSpecifier, SchemeRewriteSpecifier,
    };
    use envoy_types::pb::envoy::extensions::filters::http::custom_response::v3::CustomResponse;
    use envoy_types::pb::envoy::extensions::http::custom_response::redirect_policy::v3::{
        redirect_policy::RedirectActionSpecifier, RedirectPolicy,
    };
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::{on_match, MatcherType};
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  responseOverride:
  - match: {statusCodes: [{value: 500}]}
    redirect:
      scheme: https
      hostname: www.example.com
      port: 8443
      statusCode: 301
      path: {type: ReplaceFullPath, replaceFullPath: /sorry}
  - match: {statusCodes: [{value: 503}]}
    redirect: {path: {type: ReplaceFullPath, replaceFullPath: /later}}
  - match: {statusCodes: [{value: 404}]}
    response: {body: {inline: gone}}",
    )]);
    assert_eq!(accepted(&t, "p").0, "True");
    let a = route_named(&t, "/a");
    let cr = CustomResponse::decode(
        a.typed_per_filter_config[crate::traffic::CUSTOM_RESPONSE_FILTER]
            .value
            .as_slice(),
    )
    .unwrap();
    let Some(MatcherType::MatcherList(list)) = cr.custom_response_matcher.unwrap().matcher_type
    else {
        panic!("a matcher list");
    };
    let actions: Vec<_> = list
        .matchers
        .iter()
        .map(|m| match &m.on_match.as_ref().unwrap().on_match {
            Some(on_match::OnMatch::Action(a)) => a.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(actions.len(), 3);
    let redirect = |i: usize| {
        let any = actions[i].typed_config.as_ref().unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy"
        );
        RedirectPolicy::decode(any.value.as_slice()).unwrap()
    };
    let full = redirect(0);
    assert_eq!(full.status_code.unwrap().value, 301);
    let Some(RedirectActionSpecifier::RedirectAction(ra)) = full.redirect_action_specifier else {
        panic!("a redirect action");
    };
    assert_eq!(
        ra.scheme_rewrite_specifier,
        Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
    );
    assert_eq!(ra.host_redirect, "www.example.com");
    assert_eq!(ra.port_redirect, 8443);
    assert_eq!(
        ra.path_rewrite_specifier,
        Some(PathRewriteSpecifier::PathRedirect("/sorry".into()))
    );
    // Only the path: the rest of the URL is the request's, the status Envoy Gateway's default.
    let path_only = redirect(1);
    assert_eq!(path_only.status_code.unwrap().value, 302);
    let Some(RedirectActionSpecifier::RedirectAction(ra)) = path_only.redirect_action_specifier
    else {
        panic!("a redirect action");
    };
    assert_eq!((ra.host_redirect.as_str(), ra.port_redirect), ("", 0));
    assert!(ra.scheme_rewrite_specifier.is_none());
    assert!(actions[2]
        .typed_config
        .as_ref()
        .unwrap()
        .type_url
        .ends_with("LocalResponsePolicy"));
    validate(&t);
}

/// A redirect Envoy Gateway's CRD would refuse is refused in status, naming what is wrong.
#[test]
fn an_invalid_response_override_redirect_is_refused_in_status() {
    for (redirect, wanted) in [
        ("{scheme: ftp}", "unsupported scheme \"ftp\""),
        ("{hostname: '*.example.com'}", "invalid hostname"),
        ("{hostname: Example.com}", "invalid hostname"),
        (
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}",
            "only ReplaceFullPath is supported for path.type",
        ),
        (
            "{path: {type: ReplaceFullPath, replaceFullPath: nope}}",
            "invalid replaceFullPath",
        ),
        ("{port: 0}", "invalid port 0"),
        ("{statusCode: 307}", "unsupported statusCode 307"),
    ] {
        let t = translate(&[policy(
            "p",
            Some("a"),
            &format!(
                "  responseOverride:\n  - match: {{statusCodes: [{{value: 500}}]}}\n    redirect: {redirect}"
            ),
        )]);
        let (status, reason, message) = accepted(&t, "p");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
        assert!(
            message.starts_with("ResponseOverride: redirect: ") && message.contains(wanted),
            "{redirect}: {message}"
        );
        assert!(route_named(&t, "/a").typed_per_filter_config.is_empty());
    }
    let both = translate(&[policy(
        "p",
        Some("a"),
        "  responseOverride:\n  - match: {statusCodes: [{value: 500}]}\n    redirect: {statusCode: 302}\n    response: {body: {inline: x}}",
    )]);
    assert_eq!(
        accepted(&both, "p").2,
        "ResponseOverride: exactly one of response or redirect must be specified."
    );
}

/// `loadBalancer.type: BackendUtilization`: the cluster takes Envoy's client-side weighted
/// round robin with the policy's settings (Envoy Gateway's defaults where unset), the routes
/// drop the ORCA load report headers unless `keepResponseHeaders`, and Envoy accepts it all.
#[test]
fn backend_utilization_is_client_side_weighted_round_robin() {
    use envoy_types::pb::envoy::extensions::load_balancing_policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin;
    let t = translate(&[
        policy(
            "pa",
            Some("a"),
            "  loadBalancer:
    type: BackendUtilization
    slowStart: {window: 5s}
    backendUtilization:
      blackoutPeriod: 2s
      weightExpirationPeriod: 60s
      weightUpdatePeriod: 500ms
      errorUtilizationPenaltyPercent: 150
      metricNamesForComputingUtilization: [named_metrics.foo, cpu_utilization]",
        ),
        policy(
            "pb",
            Some("b"),
            "  loadBalancer:
    type: BackendUtilization
    backendUtilization:
      keepResponseHeaders: true
      outOfBand: {reportingPeriod: 5s, port: 9001, authority: orca.example.com}",
        ),
    ]);
    for p in ["pa", "pb"] {
        assert_eq!(accepted(&t, p).0, "True", "{p}");
    }
    let cswrr = |path: &str| {
        let c = cluster_named(&t, &cluster_of(&route_named(&t, path)));
        assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
        assert!(c.lb_config.is_none());
        let policies = c
            .load_balancing_policy
            .expect("a load balancing policy")
            .policies;
        assert_eq!(policies.len(), 1);
        let ext = policies[0].typed_extension_config.clone().unwrap();
        assert_eq!(
            ext.name,
            "envoy.load_balancing_policies.client_side_weighted_round_robin"
        );
        let any = ext.typed_config.unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"
        );
        ClientSideWeightedRoundRobin::decode(any.value.as_slice()).unwrap()
    };
    let a = cswrr("/a");
    assert_eq!(a.blackout_period.unwrap().seconds, 2);
    assert_eq!(a.weight_expiration_period.unwrap().seconds, 60);
    assert_eq!(a.weight_update_period.unwrap().nanos, 500_000_000);
    assert_eq!(a.error_utilization_penalty.unwrap().value, 1.5);
    assert_eq!(
        a.metric_names_for_computing_utilization,
        vec!["named_metrics.foo", "cpu_utilization"]
    );
    assert_eq!(
        a.slow_start_config
            .unwrap()
            .slow_start_window
            .unwrap()
            .seconds,
        5
    );
    assert!(a.enable_oob_load_report.is_none());
    // Unset: Envoy Gateway's defaults, written out.
    let b = cswrr("/b");
    assert_eq!(b.blackout_period.unwrap().seconds, 10);
    assert_eq!(b.weight_expiration_period.unwrap().seconds, 180);
    assert_eq!(b.weight_update_period.unwrap().seconds, 1);
    assert!(b.error_utilization_penalty.is_none());
    assert!(b.enable_oob_load_report.unwrap().value);
    assert_eq!(b.oob_reporting_period.unwrap().seconds, 5);
    let oob = b.oob_reporting_config.unwrap();
    assert_eq!(
        (oob.port_value, oob.authority.as_str()),
        (9001, "orca.example.com")
    );
    // The load reports stay with the proxy unless the policy keeps them.
    assert_eq!(
        route_named(&t, "/a").response_headers_to_remove,
        vec!["endpoint-load-metrics", "endpoint-load-metrics-bin"]
    );
    assert!(route_named(&t, "/b").response_headers_to_remove.is_empty());
    validate(&t);
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

/// BASE with Service `web`'s cluster IP set to `ip` (`None`: headless).
fn with_cluster_ip(ip: &str, policies: &[String]) -> String {
    let base = BASE.replace(
        "spec: {ports: [{name: http, port: 80}]}",
        &format!("spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}"),
    );
    assert_ne!(base, BASE);
    format!("{base}{}", policies.concat())
}

fn applied(t: &mut Translator, yaml: &str) {
    let (rs, _) = flotilla_model::parse_documents("x.yaml", yaml, "c1");
    for r in rs {
        t.apply(&crate::ResourceEvent {
            cluster: "c1".into(),
            source: "test".into(),
            body: crate::EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: None,
            },
        })
        .unwrap();
    }
    t.recompute();
}

fn static_addresses(c: &Cluster) -> Vec<(String, u32)> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32
        )),
        "{} is STATIC",
        c.name
    );
    let la = c.load_assignment.as_ref().expect("inline endpoints");
    la.endpoints
        .iter()
        .flat_map(|g| &g.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => match ep.address.as_ref()?.address.as_ref()? {
                address::Address::SocketAddress(sa) => Some((
                    sa.address.clone(),
                    match sa.port_specifier {
                        Some(socket_address::PortSpecifier::PortValue(p)) => p,
                        _ => 0,
                    },
                )),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn routing_type_service_reaches_the_cluster_ip_through_a_variant() {
    let mut t = translate_yaml(&with_cluster_ip(
        "10.96.0.10",
        &[
            policy("svc", Some("a"), "  routingType: Service"),
            policy("ep", Some("b"), "  routingType: Endpoint"),
        ],
    ));
    assert_eq!(accepted(&t, "svc").0, "True");
    assert_eq!(accepted(&t, "ep").0, "True");
    // Rule a: a variant of its own, the cluster IP and the backendRef's (Service) port.
    let a = cluster_of(&route_named(&t, "/a"));
    assert!(a.starts_with("app/web/80/btp-"), "{a}");
    let c = cluster_named(&t, &a);
    assert_eq!(static_addresses(&c), vec![("10.96.0.10".to_string(), 80)]);
    // Rules b (Endpoint, the default, said) and c (no policy) share the EDS cluster.
    assert_eq!(cluster_of(&route_named(&t, "/b")), "app/web/80");
    assert_eq!(cluster_of(&route_named(&t, "/c")), "app/web/80");
    let eds = cluster_named(&t, "app/web/80");
    assert_eq!(
        eds.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    validate(&t);
    // The cluster IP changes (a Service recreated): the variant follows.
    applied(
        &mut t,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\nspec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}\n",
    );
    let a = cluster_of(&route_named(&t, "/a"));
    assert_eq!(
        static_addresses(&cluster_named(&t, &a)),
        vec![("10.96.0.11".to_string(), 80)]
    );
    validate(&t);
}

#[test]
fn routing_type_service_on_a_headless_service_keeps_the_endpoints() {
    // Envoy Gateway routes a headless Service (and one without a cluster IP) to its endpoints
    // even when the policy says Service; the policy is accepted.
    for ip in ["None", "''"] {
        let t = translate_yaml(&with_cluster_ip(
            ip,
            &[policy(
                "svc",
                Some("a"),
                "  routingType: Service\n  timeout: {tcp: {connectTimeout: 3s}}",
            )],
        ));
        assert_eq!(accepted(&t, "svc").0, "True", "{ip}");
        let a = cluster_of(&route_named(&t, "/a"));
        let c = cluster_named(&t, &a);
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            )),
            "{ip}: {a} reads the endpoints"
        );
        assert_eq!(
            c.eds_cluster_config.as_ref().unwrap().service_name,
            "app/web/80"
        );
        validate(&t);
    }
}

#[test]
fn an_unknown_routing_type_is_refused_in_status() {
    let t = translate_yaml(&with_cluster_ip(
        "10.96.0.10",
        &[policy("svc", Some("a"), "  routingType: Pod")],
    ));
    let (status, _, msg) = accepted(&t, "svc");
    assert_eq!(status, "False");
    assert_eq!(msg, "RoutingType: unsupported routing type Pod.");
    // As any invalid policy: its rule answers 500.
    match route_named(&t, "/a").action {
        Some(route::Action::DirectResponse(d)) => assert_eq!(d.status, 500),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tracing_sets_the_route_sampling_and_tags() {
    use envoy_types::pb::envoy::r#type::tracing::v3::custom_tag;
    let t = translate(&[
        policy(
            "fraction",
            Some("a"),
            "  telemetry:
    tracing:
      samplingFraction: {numerator: 1, denominator: 1000}
      customTags:
        literal1: {type: Literal, literal: {value: value1}}
        env1: {type: Environment, environment: {name: POD, defaultValue: '-'}}
        req1: {type: RequestHeader, requestHeader: {name: X-Request-Id}}
        both: {literal: {value: from-custom-tags}}
      tags:
        both: '%REQUEST_HEADER(x-tenant)%'",
        ),
        policy(
            "rate",
            Some("b"),
            "  telemetry: {tracing: {samplingRate: 25}}",
        ),
    ]);
    assert_eq!(accepted(&t, "fraction").0, "True");
    let a = route_named(&t, "/a").tracing.expect("route tracing");
    let sampling = a.random_sampling.unwrap();
    assert_eq!(
        (sampling.numerator, sampling.denominator),
        (1_000, 2),
        "1/1000 in millionths"
    );
    let tags: Vec<(String, custom_tag::Type)> = a
        .custom_tags
        .into_iter()
        .map(|c| (c.tag, c.r#type.unwrap()))
        .collect();
    assert_eq!(
        tags,
        vec![
            (
                "both".into(),
                custom_tag::Type::Value("%REQUEST_HEADER(x-tenant)%".into())
            ),
            (
                "env1".into(),
                custom_tag::Type::Environment(custom_tag::Environment {
                    name: "POD".into(),
                    default_value: "-".into()
                })
            ),
            (
                "literal1".into(),
                custom_tag::Type::Literal(custom_tag::Literal {
                    value: "value1".into()
                })
            ),
            (
                "req1".into(),
                custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: "X-Request-Id".into(),
                    default_value: String::new()
                })
            ),
        ]
    );
    let b = route_named(&t, "/b").tracing.expect("route tracing");
    assert_eq!(b.random_sampling.unwrap().numerator, 250_000);
    assert!(b.custom_tags.is_empty());
    assert!(route_named(&t, "/c").tracing.is_none());
    validate(&t);
}

#[test]
fn tracing_values_envoy_gateway_refuses_are_refused_in_status() {
    for (spec, want) in [
        (
            "{customTags: {m: {type: Metadata, metadata: {kind: {route: {}}, metadataKey: {key: k, path: [{key: x}]}}}}}",
            "Telemetry: unknown custom tag type: Metadata.",
        ),
        (
            "{customTags: {l: {type: Literal}}}",
            "Telemetry: custom tag l of type Literal is missing its settings.",
        ),
        (
            "{samplingFraction: {numerator: 3, denominator: 2}}",
            "Telemetry: invalid samplingFraction {\"denominator\":2,\"numerator\":3}: the numerator must be at most a denominator above zero.",
        ),
        (
            "{samplingRate: 10, samplingFraction: {numerator: 1}}",
            "Telemetry: only one of samplingRate or samplingFraction can be specified.",
        ),
    ] {
        let t = translate(&[policy(
            "p",
            Some("a"),
            &format!("  telemetry: {{tracing: {spec}}}"),
        )]);
        let (status, reason, message) = accepted(&t, "p");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"), "{spec}");
        assert_eq!(message, want, "{spec}");
    }
}

/// The admission control settings a route's per-route matcher runs.
fn admission_of(
    r: &Route,
) -> envoy_types::pb::envoy::extensions::filters::http::admission_control::v3::AdmissionControl {
    use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcherPerRoute;
    use envoy_types::pb::envoy::extensions::filters::http::composite::v3::ExecuteFilterAction;
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::on_match::OnMatch;
    let cfg = &r.typed_per_filter_config["envoy.filters.http.admission_control"];
    let m = ExtensionWithMatcherPerRoute::decode(cfg.value.as_slice()).unwrap();
    let on = m.xds_matcher.unwrap().on_no_match.unwrap();
    let Some(OnMatch::Action(a)) = on.on_match else {
        panic!("an action")
    };
    let exec = ExecuteFilterAction::decode(a.typed_config.unwrap().value.as_slice()).unwrap();
    let tc = exec.typed_config.unwrap();
    assert_eq!(tc.name, "envoy.filters.http.admission_control");
    prost::Message::decode(tc.typed_config.unwrap().value.as_slice()).unwrap()
}

#[test]
fn admission_control_runs_per_route_through_the_composite_filter() {
    use envoy_types::pb::envoy::extensions::filters::http::admission_control::v3::admission_control::EvaluationCriteria;
    let t = translate(&[
        policy(
            "grpc",
            Some("a"),
            "  admissionControl:
    samplingWindow: 60s
    minSuccessRate: 90
    rejectionAggression: 2
    minRequestRate: 10
    maxRejectionPercent: 70
    successCriteria: {grpc: {statusCodes: [Ok, Cancelled, DeadlineExceeded]}}",
        ),
        policy(
            "http",
            Some("b"),
            "  admissionControl:
    samplingWindow: 30s
    successCriteria: {http: {statusCodes: [200, 201, 204]}}",
        ),
        policy("defaults", Some("c"), "  admissionControl: {}"),
    ]);
    for p in ["grpc", "http", "defaults"] {
        assert_eq!(accepted(&t, p).0, "True", "{p}");
    }
    let a = admission_of(&route_named(&t, "/a"));
    assert_eq!(a.sampling_window.unwrap().seconds, 60);
    assert_eq!(a.sr_threshold.unwrap().default_value.unwrap().value, 90.0);
    assert_eq!(a.aggression.unwrap().default_value, 2.0);
    assert_eq!(a.rps_threshold.unwrap().default_value, 10);
    assert_eq!(
        a.max_rejection_probability
            .unwrap()
            .default_value
            .unwrap()
            .value,
        70.0
    );
    let Some(EvaluationCriteria::SuccessCriteria(sc)) = a.evaluation_criteria else {
        panic!("success criteria")
    };
    assert_eq!(sc.grpc_criteria.unwrap().grpc_success_status, vec![0, 1, 4]);
    assert!(sc.http_criteria.is_none());
    let b = admission_of(&route_named(&t, "/b"));
    let Some(EvaluationCriteria::SuccessCriteria(sc)) = b.evaluation_criteria else {
        panic!("success criteria")
    };
    let ranges: Vec<(i32, i32)> = sc
        .http_criteria
        .unwrap()
        .http_success_status
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(ranges, vec![(200, 201), (201, 202), (204, 205)]);
    // Unset: Envoy's defaults, with the criteria Envoy requires.
    let c = admission_of(&route_named(&t, "/c"));
    assert!(c.sampling_window.is_none() && c.sr_threshold.is_none());
    assert!(c.evaluation_criteria.is_some());
    validate(&t);
}

#[test]
fn admission_control_values_envoy_refuses_are_refused_in_status() {
    for (spec, want) in [
        (
            "{samplingWindow: 500ms}",
            "AdmissionControl: samplingWindow must be at least 1s.",
        ),
        (
            "{minSuccessRate: 0}",
            "AdmissionControl: minSuccessRate must be between 1 and 100.",
        ),
        (
            "{maxRejectionPercent: 101}",
            "AdmissionControl: maxRejectionPercent must be between 0 and 100.",
        ),
        (
            "{successCriteria: {grpc: {statusCodes: [OK]}}}",
            "AdmissionControl: unknown gRPC status code \"OK\".",
        ),
        (
            "{successCriteria: {http: {statusCodes: [600]}}}",
            "AdmissionControl: invalid HTTP status code 600.",
        ),
    ] {
        let t = translate(&[policy(
            "p",
            Some("a"),
            &format!("  admissionControl: {spec}"),
        )]);
        let (status, _, message) = accepted(&t, "p");
        assert_eq!(status, "False", "{spec}");
        assert_eq!(message, want, "{spec}");
    }
}

#[test]
fn a_tcp_route_takes_routing_type_service_too() {
    // Envoy Gateway resolves the routing type for every route kind's Service backends.
    let text = with_cluster_ip("10.96.0.10", &[]).replace(
        "  - {name: http, port: 8080, protocol: HTTP}",
        "  - {name: http, port: 8080, protocol: HTTP}\n  - {name: tcp, port: 9000, protocol: TCP}",
    ) + "---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t, namespace: app}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: tcp-policy, namespace: app}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: TCPRoute, name: t}]
  routingType: Service
";
    let t = translate_yaml(&text);
    let variant = clusters(&t)
        .into_iter()
        .find(|c| c.name.starts_with("app/web/80/btp-"))
        .expect("the TCP route's cluster variant");
    assert_eq!(
        static_addresses(&variant),
        vec![("10.96.0.10".to_string(), 80)]
    );
    // The HTTP routes, without a policy, keep the endpoints.
    assert_eq!(cluster_of(&route_named(&t, "/a")), "app/web/80");
    validate(&t);
}

/// `telemetry.metrics.routeStatName`: each route of the policy takes the template, with the
/// route's kind, namespace, name and rule name (`-` for an unnamed rule) in place of the
/// operators, as its `stat_prefix`; a route without the policy keeps none. Envoy accepts it.
#[test]
fn route_stat_name_becomes_the_routes_stat_prefix() {
    let template = "%ROUTE_KIND%/%ROUTE_NAMESPACE%/%ROUTE_NAME%/rule/%ROUTE_RULE_NAME%";
    let metrics = format!("  telemetry: {{metrics: {{routeStatName: '{template}'}}}}");
    let unnamed = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: u, namespace: app}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /u}}}}]
    backendRefs: [{{name: web, port: 80}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: pu, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: u}}]
{metrics}
"
    );
    let t = translate(&[policy("p", Some("a"), &metrics), unnamed]);
    assert_eq!(accepted(&t, "p").0, "True");
    assert_eq!(route_named(&t, "/a").stat_prefix, "HTTPRoute/app/r/rule/a");
    assert_eq!(route_named(&t, "/u").stat_prefix, "HTTPRoute/app/u/rule/-");
    assert_eq!(route_named(&t, "/b").stat_prefix, "");
    validate(&t);
}

/// An operator Envoy Gateway does not replace is refused in status (and the rule answers 500).
#[test]
fn a_route_stat_name_with_an_unknown_operator_is_refused_in_status() {
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  telemetry: {metrics: {routeStatName: '%ROUTE_NAME%.%ROUTE_RULE_NUMBER%/%FOO%'}}",
    )]);
    let (status, reason, message) = accepted(&t, "p");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert_eq!(
        message,
        "Telemetry: unable to configure Route Stat Name with unsupported operator: \
         %ROUTE_RULE_NUMBER%\nunable to configure Route Stat Name with unsupported operator: \
         %FOO%."
    );
    match route_named(&t, "/a").action {
        Some(route::Action::DirectResponse(d)) => assert_eq!(d.status, 500),
        other => panic!("{other:?}"),
    }
    // Without operators, the name is taken as it is.
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  telemetry: {metrics: {routeStatName: checkout}}",
    )]);
    assert_eq!(route_named(&t, "/a").stat_prefix, "checkout");
}
