//! ClientTrafficPolicy settings through the translator: the xDS each field produces, refused
//! values, listeners sharing a port, and the real Envoy accepting all of it.

use super::xds::*;
use super::*;
use crate::tests::{cert_secret, gateway_class};
use crate::{type_url, Translator};
use envoy_types::pb::envoy::config::core::v3::socket_option;
use envoy_types::pb::envoy::config::listener::v3::FilterChain;
use envoy_types::pb::envoy::config::listener::v3::{filter, listener_filter, Filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit as ClProto;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, DownstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Duration;
use flotilla_model::{Kind, ResourceKey};
use prost::Message;

pub(super) const BASE: &str = concat!(
    gateway_class!(),
    "---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: infra}
spec: {ports: [{name: tcp, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, namespace: infra, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: tcp, port: 9000}]
endpoints: [{addresses: [127.0.0.1]}]
---
",
    cert_secret!(),
    "---
apiVersion: v1
kind: Secret
metadata: {name: ca, namespace: infra}
data:
  ca.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJzVENDQVZpZ0F3SUJBZ0lVSU5rcWU4eWNVejd5Zk1yNkJPRXdialZaU08wd0NnWUlLb1pJemowRUF3SXcKR0RFV01CUUdBMVVFQXd3TllTNWxlR0Z0Y0d4bExtTnZiVEFnRncweU5qRXlNREV5TWpNeE1EWmFHQTh5TVRJMgpNVEV3TnpJeU16RXdObG93R0RFV01CUUdBMVVFQXd3TllTNWxlR0Z0Y0d4bExtTnZiVEJaTUJNR0J5cUdTTTQ5CkFnRUdDQ3FHU000OUF3RUhBMElBQk5aSVFTem5mSW54eEJwLysyTm5jazBCRy9oNnhHYmVyYk9iaFZXVkZqSFAKRFEwM0tXOEVsc3k2WWx1UzVOdks0YWU5RDltdkRSb252RW0zMDZvQW9lNmpmakI4TUIwR0ExVWREZ1FXQkJTZwo1Mll0UlBhSk0ydmpsZitNaVRqQWtxV1haekFmQmdOVkhTTUVHREFXZ0JTZzUyWXRSUGFKTTJ2amxmK01pVGpBCmtxV1haekFQQmdOVkhSTUJBZjhFQlRBREFRSC9NQ2tHQTFVZEVRUWlNQ0NDRFdFdVpYaGhiWEJzWlM1amIyMkMKRHlvdVlpNWxlR0Z0Y0d4bExtTnZiVEFLQmdncWhrak9QUVFEQWdOSEFEQkVBaUFkMWVlKzIzVFBXQjE2am0yVQpuL1dYdkRkNkFtWEtWWFh6Y0hOcWU5R0d2UUlnYmJqTndTR0ZHMjlObDV0WVlYMG1KQTV1R3g4cDl1cnFSemRtCmptaGwyMjg9Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K
"
);

/// A gateway `gw` in `infra` with `listeners`, an HTTPRoute on it, and ClientTrafficPolicy `ctp`
/// targeting `target` (a YAML flow mapping) with `spec` (YAML lines indented by two).
pub(super) fn translate(listeners: &str, target: &str, spec: &str) -> Translator {
    crate::tests::translate_yaml(&format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: ctp, namespace: infra}}
spec:
  targetRefs: [{target}]
{spec}",
        base_and_gateway(listeners)
    ))
}

/// [`BASE`] and a gateway `gw` in `infra` with `listeners` (YAML lines indented by two).
pub(super) fn base_and_gateway(listeners: &str) -> String {
    format!(
        "{BASE}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: eg
  listeners:
{listeners}"
    )
}

pub(super) const HTTP: &str = "  - {name: http, port: 8080, protocol: HTTP}\n";
/// A TCPRoute `raw` on the listener `tcp` (after a policy spec).
pub(super) const TCP_ROUTE: &str = "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: raw, namespace: infra}\nspec:\n  parentRefs: [{name: gw, sectionName: tcp}]\n  rules: [{backendRefs: [{name: svc, port: 80}]}]\n";
pub(super) const GW: &str = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}";

pub(super) fn listener(t: &Translator, name: &str) -> Listener {
    let r = t.gateways()["c1/infra/gw"]
        .resources
        .iter()
        .find(|r| r.type_url == type_url::LISTENER && r.name == name)
        .unwrap_or_else(|| panic!("listener {name}"))
        .clone();
    Listener::decode(r.body.clone()).unwrap()
}

pub(super) fn typed<M: Message + Default>(f: &Filter) -> M {
    let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!("{} has no typed config", f.name)
    };
    M::decode(&a.value[..]).unwrap()
}

pub(super) fn hcm_of(chain: &FilterChain) -> HttpConnectionManager {
    let f = chain
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.http_connection_manager")
        .expect("an HCM");
    typed(f)
}

/// The downstream TLS context of a filter chain.
pub(super) fn downstream_tls(chain: &FilterChain) -> DownstreamTlsContext {
    use envoy_types::pb::envoy::config::core::v3::transport_socket;
    let Some(transport_socket::ConfigType::TypedConfig(a)) = chain
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.clone())
    else {
        panic!("tls socket")
    };
    DownstreamTlsContext::decode(&a.value[..]).unwrap()
}

/// The client certificate validation context of a downstream TLS context.
pub(super) fn validation_context(ctx: &DownstreamTlsContext) -> CertificateValidationContext {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
    let Some(ValidationContextType::ValidationContext(v)) = ctx
        .common_tls_context
        .as_ref()
        .and_then(|c| c.validation_context_type.clone())
    else {
        panic!("a validation context")
    };
    v
}

pub(super) fn secs(seconds: i64) -> Option<Duration> {
    Some(Duration { seconds, nanos: 0 })
}

pub(super) fn policy_status(t: &Translator) -> serde_json::Value {
    t.status(&ResourceKey::new(
        "c1",
        Kind::ClientTrafficPolicy,
        "infra",
        "ctp",
    ))
    .cloned()
    .unwrap_or_default()
}

pub(super) fn condition(t: &Translator) -> (String, String, String) {
    let c = &policy_status(t)["ancestors"][0]["conditions"][0];
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn timeouts_connection_and_keepalive_reach_the_http_listener() {
    let t = translate(
        HTTP,
        GW,
        "  timeout:
    http: {requestReceivedTimeout: 5s, idleTimeout: 10s, streamIdleTimeout: 1m, requestHeadersReceivedTimeout: 2s}
  connection:
    connectionLimit: {value: 100, closeDelay: 1500ms}
    bufferLimit: 64Ki
    maxAcceptPerSocketEvent: 3
  tcpKeepalive: {probes: 3, idleTime: 1m, interval: 10s}
  headers: {maxRequestHeaderLimit: 128Ki}
",
    );
    assert_eq!(condition(&t).1, "Accepted");
    let l = listener(&t, "http-8080");
    assert_eq!(
        l.per_connection_buffer_limit_bytes.map(|v| v.value),
        Some(65_536)
    );
    assert_eq!(
        l.max_connections_to_accept_per_socket_event
            .map(|v| v.value),
        Some(3)
    );
    let opts: Vec<(i64, i64, Option<socket_option::Value>)> = l
        .socket_options
        .iter()
        .map(|o| (o.level, o.name, o.value.clone()))
        .collect();
    use socket_option::Value::IntValue;
    assert_eq!(
        opts,
        [
            (1, 9, Some(IntValue(1))),
            (6, 6, Some(IntValue(3))),
            (6, 4, Some(IntValue(60))),
            (6, 5, Some(IntValue(10))),
        ]
    );
    let chain = &l.filter_chains[0];
    assert_eq!(
        chain.filters[0].name,
        "envoy.filters.network.connection_limit"
    );
    let cl: ClProto = typed(&chain.filters[0]);
    assert_eq!(cl.max_connections.map(|v| v.value), Some(100));
    assert_eq!(
        cl.delay,
        Some(Duration {
            seconds: 1,
            nanos: 500_000_000
        })
    );
    let hcm = hcm_of(chain);
    assert_eq!(hcm.request_timeout, secs(5));
    assert_eq!(hcm.stream_idle_timeout, secs(60));
    assert_eq!(hcm.request_headers_timeout, secs(2));
    assert_eq!(hcm.max_request_headers_kb.map(|v| v.value), Some(128));
    assert_eq!(
        hcm.common_http_protocol_options
            .and_then(|o| o.idle_timeout),
        secs(10)
    );
}

#[test]
fn a_listener_without_a_policy_keeps_envoys_defaults() {
    let t = translate(
        "  - {name: http, port: 8080, protocol: HTTP}\n  - {name: other, port: 8081, protocol: HTTP}\n",
        "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}",
        "  timeout: {http: {requestReceivedTimeout: 5s}}\n",
    );
    assert_eq!(
        hcm_of(&listener(&t, "http-8080").filter_chains[0]).request_timeout,
        secs(5)
    );
    let other = listener(&t, "http-8081");
    assert!(other.socket_options.is_empty());
    let hcm = hcm_of(&other.filter_chains[0]);
    assert_eq!(hcm.request_timeout, None);
    assert_eq!(hcm.use_remote_address, None);
}

#[test]
fn client_ip_headers_path_http1_http2_and_health_check_reach_the_hcm() {
    let t = translate(
        HTTP,
        GW,
        "  clientIPDetection: {xForwardedFor: {numTrustedHops: 2}}
  headers:
    withUnderscoresAction: DropHeader
    requestID: PreserveOrGenerate
    enableEnvoyHeaders: false
    xForwardedClientCert: {mode: SanitizeSet, certDetailsToAdd: [Subject, DNS]}
  path: {escapedSlashesAction: RejectRequest, disableMergeSlashes: true}
  http1: {enableTrailers: true, preserveHeaderCase: true, http10: {}}
  http2: {initialStreamWindowSize: 128Ki, maxConcurrentStreams: 50, onInvalidMessage: TerminateStream}
  healthCheck: {path: /healthz}
",
    );
    assert_eq!(condition(&t).1, "Accepted");
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    assert_eq!(hcm.use_remote_address.map(|b| b.value), Some(true));
    assert_eq!(hcm.xff_num_trusted_hops, 2);
    use http_protocol_options::HeadersWithUnderscoresAction as U;
    assert_eq!(
        hcm.common_http_protocol_options
            .as_ref()
            .map(|o| o.headers_with_underscores_action),
        Some(U::DropHeader as i32)
    );
    assert!(hcm.preserve_external_request_id);
    assert_eq!(hcm.generate_request_id.map(|b| b.value), Some(true));
    use http_connection_manager::{
        ForwardClientCertDetails as F, PathWithEscapedSlashesAction as E,
    };
    assert_eq!(hcm.forward_client_cert_details, F::SanitizeSet as i32);
    let details = hcm.set_current_client_cert_details.unwrap();
    assert_eq!(details.subject.map(|b| b.value), Some(true));
    assert!(details.dns && !details.uri && !details.cert);
    assert_eq!(
        hcm.path_with_escaped_slashes_action,
        E::RejectRequest as i32
    );
    assert!(!hcm.merge_slashes);
    let h1 = hcm.http_protocol_options.clone().unwrap();
    assert!(h1.enable_trailers && h1.accept_http_10 && h1.header_key_format.is_some());
    let h2 = hcm.http2_protocol_options.clone().unwrap();
    assert_eq!(
        h2.initial_stream_window_size.map(|v| v.value),
        Some(131_072)
    );
    assert_eq!(
        h2.initial_connection_window_size.map(|v| v.value),
        Some(1_048_576)
    );
    assert_eq!(h2.max_concurrent_streams.map(|v| v.value), Some(50));
    assert_eq!(
        h2.override_stream_error_on_invalid_http_message
            .map(|b| b.value),
        Some(true)
    );
    // The health check filter answers first; the router hides x-envoy-* headers.
    assert_eq!(hcm.http_filters[0].name, HEALTH_CHECK_FILTER);
    let router = hcm
        .http_filters
        .iter()
        .find(|f| f.name == ROUTER_FILTER)
        .unwrap();
    let Some(http_filter::ConfigType::TypedConfig(a)) = &router.config_type else {
        panic!("router config")
    };
    let r =
        envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::decode(&a.value[..])
            .unwrap();
    assert!(r.suppress_envoy_headers);
}

#[test]
fn custom_header_and_trusted_cidrs_replace_the_peer_address() {
    let t = translate(
        HTTP,
        GW,
        "  clientIPDetection: {customHeader: {name: x-client-ip, failClosed: true}}\n",
    );
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    assert_eq!(hcm.use_remote_address.map(|b| b.value), Some(false));
    assert_eq!(
        hcm.original_ip_detection_extensions[0].name,
        "envoy.extensions.http.original_ip_detection.custom_header"
    );
    let t = translate(
        HTTP,
        GW,
        "  clientIPDetection: {xForwardedFor: {trustedCIDRs: [10.0.0.0/8, '2001:db8::/32']}}\n",
    );
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    let ext = &hcm.original_ip_detection_extensions[0];
    assert_eq!(ext.name, "envoy.extensions.http.original_ip_detection.xff");
    let x = XffConfig::decode(&ext.typed_config.as_ref().unwrap().value[..]).unwrap();
    let cidrs: Vec<(String, u32)> = x
        .xff_trusted_cidrs
        .unwrap()
        .cidrs
        .into_iter()
        .map(|c| (c.address_prefix, c.prefix_len.map_or(0, |v| v.value)))
        .collect();
    assert_eq!(
        cidrs,
        [("10.0.0.0".to_string(), 8), ("2001:db8::".to_string(), 32)]
    );
}

#[test]
fn invalid_values_get_a_status_and_never_reach_envoy() {
    for (spec, msg) in [
        (
            "  timeout: {http: {requestReceivedTimeout: 5 seconds}}\n",
            "Timeout: invalid HTTP RequestReceivedTimeout value 5 seconds.",
        ),
        (
            "  clientIPDetection: {xForwardedFor: {trustedCIDRs: [10.0.0.0/33]}}\n",
            "ClientIPDetection: invalid TrustedCIDRs value 10.0.0.0/33.",
        ),
        (
            "  tls: {minVersion: '1.3', maxVersion: '1.2'}\n",
            "TLS: minVersion must be smaller or equal to maxVersion.",
        ),
        (
            "  headers: {lateResponseHeaders: {add: [{name: 'a b', value: x}], remove: [ok]}}\n",
            "Headers: LateResponseHeaders cannot add a header with an invalid name. Header: '\"a b\"'.",
        ),
        (
            "  tcpKeepalive: {idleTime: 500ms, probes: 0}\n",
            "TCP KeepAlive: Probes value 0 is out of range, must be between 1 and 127\nIdleTime value 500ms is out of range, must be between 1s and 32767s.",
        ),
        (
            "  connection: {connectionLimit: {value: 0}}\n",
            "Connection: invalid ConnectionLimit value 0, must be at least 1.",
        ),
        (
            "  clientIPDetection: {xForwardedFor: {numTrustedHops: 1}, customHeader: {name: x-ip}}\n",
            "ClientIPDetection: customHeader cannot be used in conjunction with xForwardedFor.",
        ),
        (
            "  headers: {earlyRequestHeaders: {set: [{name: 'a:b', value: x}]}}\n",
            "Headers: EarlyRequestHeaders cannot set a header with a '/' or ':' character in them. Header: '\"a:b\"'\nEarlyRequestHeaders did not provide valid configuration to add/set/remove any headers.",
        ),
    ] {
        let t = translate(HTTP, GW, spec);
        assert_eq!(
            condition(&t),
            ("False".to_string(), "Invalid".to_string(), msg.to_string()),
            "{spec}"
        );
        let l = listener(&t, "http-8080");
        assert_eq!(l.filter_chains[0].filters.len(), 1, "{spec}");
        let hcm = hcm_of(&l.filter_chains[0]);
        assert_eq!(hcm.use_remote_address, None, "{spec}");
        assert_eq!(hcm.request_timeout, None, "{spec}");
        // The listener serves nothing without its policy: its routes answer 500.
        assert_eq!(route_statuses(&t, "http-8080"), [Some(500)], "{spec}");
    }
    // A valid policy leaves the routes alone.
    let t = translate(
        HTTP,
        GW,
        "  timeout: {http: {requestReceivedTimeout: 5s}}\n",
    );
    assert_eq!(route_statuses(&t, "http-8080"), [None]);
    // A TCP listener whose policy cannot be used takes no connections.
    let t = translate(
        "  - {name: tcp, port: 9000, protocol: TCP, allowedRoutes: {kinds: [{kind: TCPRoute}]}}\n",
        GW,
        &["  timeout: {tcp: {idleTimeout: 30 seconds}}\n", TCP_ROUTE].concat(),
    );
    assert_eq!(condition(&t).1, "Invalid");
    assert!(!t.gateways()["c1/infra/gw"]
        .resources
        .iter()
        .any(|r| r.type_url == type_url::LISTENER && r.name == "tcp-9000"));
}

/// The direct response status of each route of route configuration `name` (`None`: routed).
pub(super) fn route_statuses(t: &Translator, name: &str) -> Vec<Option<u32>> {
    use envoy_types::pb::envoy::config::route::v3::{route, RouteConfiguration};
    let r = t.gateways()["c1/infra/gw"]
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE && r.name == name)
        .unwrap_or_else(|| panic!("route configuration {name}"))
        .clone();
    let rc = RouteConfiguration::decode(r.body.clone()).unwrap();
    rc.virtual_hosts
        .iter()
        .flat_map(|vh| &vh.routes)
        .map(|r| match &r.action {
            Some(route::Action::DirectResponse(d)) => Some(d.status),
            _ => None,
        })
        .collect()
}

#[test]
fn http_listeners_sharing_a_port_share_the_first_ones_settings() {
    let two = "  - {name: a, port: 8080, protocol: HTTP, hostname: a.example.com}
  - {name: b, port: 8080, protocol: HTTP, hostname: b.example.com}
";
    // A Gateway-wide policy configures both: the one HCM carries it.
    let t = translate(two, GW, "  timeout: {http: {idleTimeout: 7s}}\n");
    assert_eq!(condition(&t).1, "Accepted");
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    assert_eq!(
        hcm.common_http_protocol_options
            .and_then(|o| o.idle_timeout),
        secs(7)
    );
    // A policy on one of them would configure the other too: refused, and nothing applies.
    let t = translate(
        two,
        "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: b}",
        "  timeout: {http: {idleTimeout: 7s}}\n",
    );
    assert_eq!(condition(&t).1, "Invalid");
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    assert_eq!(
        hcm.common_http_protocol_options
            .and_then(|o| o.idle_timeout),
        None
    );
}

/// The real Envoy (validate mode) accepts listeners carrying every setting this module writes.
#[test]
fn envoy_accepts_every_client_traffic_setting() {
    let t = translate(
        "  - {name: http, port: 18080, protocol: HTTP}
  - {name: https, port: 18443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: tcp, port: 19000, protocol: TCP, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
",
        GW,
        &[
            "  timeout:
    tcp: {idleTimeout: 30s}
    http: {requestReceivedTimeout: 5s, idleTimeout: 10s, streamIdleTimeout: 1m, requestHeadersReceivedTimeout: 3s}
  connection: {connectionLimit: {value: 100, closeDelay: 1s}, bufferLimit: 64Ki, maxAcceptPerSocketEvent: 2}
  tcpKeepalive: {probes: 3, idleTime: 1m, interval: 10s}
  proxyProtocol: {optional: true}
  clientIPDetection: {xForwardedFor: {trustedCIDRs: [10.0.0.0/8, '2001:db8::/32']}}
  headers:
    withUnderscoresAction: Allow
    requestID: Preserve
    xForwardedClientCert: {mode: AppendForward, certDetailsToAdd: [Subject, Cert, Chain, DNS, URI]}
    earlyRequestHeaders: {set: [{name: x-early, value: e}], add: [{name: x-more, value: m}], remove: [x-drop], removeOnMatch: [{type: Prefix, value: x-internal-}]}
    host: {stripTrailingHostDot: true}
    lateResponseHeaders: {set: [{name: x-late, value: l}], addIfAbsent: [{name: x-once, value: o}], remove: [server]}
  path: {escapedSlashesAction: UnescapeAndForward}
  http1: {enableTrailers: true, preserveHeaderCase: true, http10: {}, ignoredUpgradeTypes: [{type: Prefix, value: TLS/}]}
  http2: {initialStreamWindowSize: 1Mi, initialConnectionWindowSize: 2Mi, maxConcurrentStreams: 200, onInvalidMessage: TerminateConnection}
  healthCheck: {path: /ready}
  grpc: {enableWeb: true}
  scheme: MatchBackend
  tls:
    minVersion: '1.2'
    maxVersion: '1.3'
    ciphers: [ECDHE-ECDSA-AES128-GCM-SHA256]
    ecdhCurves: [X25519, P-256]
    signatureAlgorithms: [ecdsa_secp256r1_sha256]
    alpnProtocols: [h2, http/1.1]
    session: {resumption: {stateless: {}, stateful: {}}}
    fingerprints: [JA3, JA4]
",
            TCP_ROUTE,
        ]
        .concat(),
    );
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    assert_eq!(validate_with_envoy(&t), 3);
}

/// Runs the real Envoy in validate mode on the gateway's listeners and clusters; returns how
/// many listeners it took.
pub(super) fn validate_with_envoy(t: &Translator) -> usize {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    let gw = &t.gateways()["c1/infra/gw"];
    let listeners: Vec<Listener> = gw
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::LISTENER)
        .map(|r| Listener::decode(r.body.clone()).unwrap())
        .collect();
    let n = listeners.len();
    let clusters: Vec<Cluster> = gw
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::CLUSTER)
        .map(|r| Cluster::decode(r.body.clone()).unwrap())
        .collect();
    if let Err(e) = crate::tests::envoy_validate_static(listeners, clusters, "c1/infra/gw") {
        panic!("envoy rejected the configuration:\n{e}");
    }
    n
}

#[test]
fn early_request_and_late_response_headers() {
    let t = translate(
        HTTP,
        GW,
        "  headers:
    earlyRequestHeaders: {set: [{name: x-early, value: e}], remove: [x-drop]}
    lateResponseHeaders: {add: [{name: x-late, value: l}]}
  healthCheck: {path: /healthz}
",
    );
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    let early = &hcm.early_header_mutation_extensions[0];
    assert_eq!(
        early.name,
        "envoy.http.early_header_mutation.header_mutation"
    );
    let m = envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation::decode(
        &early.typed_config.as_ref().unwrap().value[..],
    )
    .unwrap();
    assert_eq!(m.mutations.len(), 2);
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(&names[..2], [LATE_HEADERS_FILTER, HEALTH_CHECK_FILTER]);
    let Some(http_filter::ConfigType::TypedConfig(a)) = &hcm.http_filters[0].config_type else {
        panic!("late headers config")
    };
    let late = envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::HeaderMutation::decode(&a.value[..]).unwrap();
    assert_eq!(late.mutations.unwrap().response_mutations.len(), 1);
}

#[test]
fn proxy_protocol_reads_the_header_first() {
    use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
    for (spec, allow_without) in [
        ("  proxyProtocol: {optional: true}\n", true),
        ("  enableProxyProtocol: true\n", false),
        // The newer field wins.
        (
            "  enableProxyProtocol: true\n  proxyProtocol: {optional: true}\n",
            true,
        ),
    ] {
        let t = translate(
            "  - {name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}\n",
            GW,
            spec,
        );
        let l = listener(&t, "tcp-8443");
        let names: Vec<&str> = l.listener_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "envoy.filters.listener.proxy_protocol",
                "envoy.filters.listener.tls_inspector"
            ],
            "{spec}"
        );
        let Some(listener_filter::ConfigType::TypedConfig(a)) = &l.listener_filters[0].config_type
        else {
            panic!("proxy protocol config")
        };
        let pp = ProxyProtocol::decode(&a.value[..]).unwrap();
        assert_eq!(
            pp.allow_requests_without_proxy_protocol, allow_without,
            "{spec}"
        );
    }
}

#[test]
fn http10_default_host_is_the_listeners_hostname() {
    let spec = "  http1: {http10: {useDefaultHost: true}}\n";
    let t = translate(
        "  - {name: http, port: 8080, protocol: HTTP, hostname: a.example.com}\n",
        GW,
        spec,
    );
    assert_eq!(condition(&t).1, "Accepted");
    let h1 = hcm_of(&listener(&t, "http-8080").filter_chains[0])
        .http_protocol_options
        .unwrap();
    assert!(h1.accept_http_10);
    assert_eq!(h1.default_host_for_http_10, "a.example.com");
    // No hostname to use: refused, and nothing applies.
    let t = translate(HTTP, GW, spec);
    assert_eq!(
        condition(&t),
        (
            "False".into(),
            "Invalid".into(),
            "HTTP1: cannot set http10 default host on listener with only wildcard hostnames."
                .into()
        )
    );
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    assert_eq!(hcm.http_protocol_options, None);
    assert_eq!(hcm.use_remote_address, None);
}

#[test]
fn xff_append_host_dot_upgrades_and_header_matches() {
    let t = translate(
        HTTP,
        GW,
        "  clientIPDetection: {xForwardedFor: {numTrustedHops: 1, disableXForwardedForAppend: true}}
  headers:
    host: {stripTrailingHostDot: true}
    lateResponseHeaders: {removeOnMatch: [{type: Suffix, value: -secret}]}
  http1: {ignoredUpgradeTypes: [{type: Prefix, value: TLS/}]}
",
    );
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    assert!(hcm.skip_xff_append && hcm.strip_trailing_host_dot);
    assert_eq!(hcm.scheme_header_transformation, None);
    assert_eq!(
        hcm.http_protocol_options
            .as_ref()
            .map(|o| o.ignore_http_11_upgrade.len()),
        Some(1)
    );
    assert_eq!(hcm.http_filters[0].name, LATE_HEADERS_FILTER);
    assert!(!hcm
        .http_filters
        .iter()
        .any(|f| f.name == "envoy.filters.http.grpc_web"));
    let t = translate(
        HTTP,
        GW,
        "  grpc: {enableWeb: true}\n  scheme: MatchBackend\n",
    );
    let hcm = hcm_of(&listener(&t, "http-8080").filter_chains[0]);
    assert!(hcm
        .scheme_header_transformation
        .as_ref()
        .is_some_and(|t| t.match_upstream));
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    let n = names.len();
    assert_eq!(
        &names[n - 2..],
        ["envoy.filters.http.grpc_web", ROUTER_FILTER]
    );
}

#[test]
fn http3_adds_a_quic_listener_and_announces_it() {
    let https = "  - {name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}\n";
    let t = translate(
        https,
        GW,
        "  http3: {}\n  timeout: {http: {idleTimeout: 9s}}\n  connection: {connectionLimit: {value: 10}}\n",
    );
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    let q = listener(&t, "quic-8443");
    assert!(q.udp_listener_config.and_then(|u| u.quic_options).is_some());
    let chain = &q.filter_chains[0];
    assert_eq!(
        chain
            .filter_chain_match
            .as_ref()
            .map(|m| m.server_names.clone()),
        Some(vec!["a.example.com".to_string()])
    );
    assert_eq!(
        chain.transport_socket.as_ref().map(|t| t.name.as_str()),
        Some("envoy.transport_sockets.quic")
    );
    let hcm = hcm_of(chain);
    assert_eq!(
        hcm.codec_type,
        http_connection_manager::CodecType::Http3 as i32
    );
    assert_eq!(
        hcm.common_http_protocol_options
            .and_then(|o| o.idle_timeout),
        secs(9)
    );
    // HTTP/1.1 and HTTP/2 clients learn of it.
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    let rc = t.gateways()["c1/infra/gw"]
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE && r.name.starts_with("https-8443/"))
        .map(|r| RouteConfiguration::decode(r.body.clone()).unwrap())
        .expect("the HTTPS route configuration");
    let alt: Vec<(String, String)> = rc
        .response_headers_to_add
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert_eq!(
        alt,
        [("alt-svc".to_string(), "h3=\":8443\"; ma=86400".to_string())]
    );
    assert_eq!(validate_with_envoy(&t), 2);

    // Client certificates cannot be validated over QUIC: no HTTP/3, and a warning.
    let t = translate(
        https,
        GW,
        "  http3: {}\n  tls: {clientValidation: {caCertificateRefs: [{name: ca}]}}\n",
    );
    assert!(!t.gateways()["c1/infra/gw"]
        .resources
        .iter()
        .any(|r| r.name == "quic-8443"));
    let st = policy_status(&t);
    let warning = st["ancestors"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Warning")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        warning["reason"], "UnsupportedHTTP3ClientValidation",
        "{st}"
    );
    assert_eq!(
        warning["message"],
        "HTTP/3 was disabled for listener \"https\" because Envoy does not support downstream client TLS validation over QUIC"
    );
}
