//! Cluster-level settings: the cluster variants a policy makes, load balancers, health
//! checks, backend utilization, and what a TCP route takes of them.

use super::*;

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
