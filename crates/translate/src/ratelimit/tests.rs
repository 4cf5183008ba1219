//! BackendTrafficPolicy rate limits: YAML in, Envoy resources, rate limit service rules and
//! policy status out; what is emitted is validated by the real Envoy.

use crate::route_tests::bootstrap_of;
use crate::tests::{apply_all, envoy_validate, events, web_world};
use crate::{type_url, TranslateOptions, Translator};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::config::route::v3::rate_limit::action::ActionSpecifier;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::XRateLimitHeadersRfcVersion;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::{
    RateLimit as GlobalFilter, RateLimitPerRoute,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use flotilla_model::{Kind, ResourceKey};
use prost::Message;

const BASE: &str = concat!(
    web_world!(),
    r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [www.example.com]
  rules:
  - name: limited
    matches: [{path: {type: PathPrefix, value: /limited}}]
    backendRefs: [{name: web, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /free}}]
    backendRefs: [{name: web, port: 80}]
"#
);

fn policy(rate_limit: &str) -> String {
    format!(
        r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: rl, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: limited}}]
  rateLimit:
{rate_limit}"#
    )
}

const LOCAL: &str = r#"
    type: Local
    local:
      rules:
      - limit: {requests: 3, unit: Minute}
      - clientSelectors: [{headers: [{name: x-user, type: Distinct}]}]
        limit: {requests: 1, unit: Hour}
"#;

const GLOBAL: &str = r#"
    type: Global
    global:
      rules:
      - limit: {requests: 3, unit: Minute}
      - clientSelectors:
        - headers: [{name: x-user, type: Distinct}, {name: x-tier, value: free}]
          sourceCIDR: {type: Distinct, value: 10.1.0.0/16}
        limit: {requests: 1, unit: Hour}
        shadowMode: true
"#;

fn translate(opts: TranslateOptions, rate_limit: &str) -> Translator {
    let mut t = Translator::with_options(opts);
    apply_all(
        &mut t,
        &events("c1", &format!("{BASE}---\n{}", policy(rate_limit))),
    );
    t
}

fn with_service() -> TranslateOptions {
    TranslateOptions {
        rate_limit_service: vec!["127.0.0.1:18081".into(), "localhost:18082".into()],
        ..Default::default()
    }
}

const GW: &str = "c1/infra/gw";

fn routes(t: &Translator) -> Vec<Route> {
    let g = &t.gateways()[GW];
    let r = g
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .expect("a route configuration");
    RouteConfiguration::decode(r.body.clone())
        .unwrap()
        .virtual_hosts
        .into_iter()
        .flat_map(|v| v.routes)
        .collect()
}

fn route<'a>(rs: &'a [Route], prefix: &str) -> &'a Route {
    rs.iter()
        .find(|r| r.name.contains(prefix))
        .unwrap_or_else(|| panic!("no route {prefix}"))
}

fn http_filters(t: &Translator) -> Vec<HttpFilter> {
    let g = &t.gateways()[GW];
    let l = g
        .resources
        .iter()
        .find(|r| r.type_url == type_url::LISTENER)
        .expect("a listener");
    let l = Listener::decode(l.body.clone()).unwrap();
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no HCM");
    };
    HttpConnectionManager::decode(any.value.as_slice())
        .unwrap()
        .http_filters
}

/// The HTTP filters of the gateway's connection manager, but for those every connection
/// manager holds for BackendTrafficPolicy's other fields (disabled until a route enables them).
fn filter_names(t: &Translator) -> Vec<String> {
    let others = |n: &str| {
        [
            crate::traffic::FAULT_FILTER,
            crate::traffic::CUSTOM_RESPONSE_FILTER,
            crate::traffic::BUFFER_FILTER,
            crate::traffic::BANDWIDTH_REQUEST_FILTER,
            crate::traffic::BANDWIDTH_RESPONSE_FILTER,
            crate::traffic::ADMISSION_CONTROL_FILTER,
        ]
        .contains(&n)
            || n.starts_with("envoy.filters.http.compressor.")
    };
    http_filters(t)
        .into_iter()
        .map(|f| f.name)
        .filter(|n| !others(n))
        .collect()
}

/// The global rate limit filter of the gateway's HTTP connection manager.
fn global_filter(t: &Translator) -> GlobalFilter {
    let filters = http_filters(t);
    let global = filters
        .iter()
        .find(|f| f.name == super::GLOBAL_FILTER)
        .expect("the rate limit filter");
    let Some(http_filter::ConfigType::TypedConfig(any)) = &global.config_type else {
        panic!()
    };
    GlobalFilter::decode(any.value.as_slice()).unwrap()
}

/// The per-route config of `filter` on route `r`.
fn per_filter<M: Message + Default>(r: &Route, filter: &str) -> M {
    M::decode(r.typed_per_filter_config[filter].value.as_slice()).unwrap()
}

fn btp_condition(t: &Translator) -> (String, String, String) {
    let st = t
        .status(&ResourceKey::new(
            "c1",
            Kind::BackendTrafficPolicy,
            "app",
            "rl",
        ))
        .expect("a status");
    let c = &st["ancestors"][0]["conditions"][0];
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("type"), s("reason"), s("message"))
}

#[test]
fn local_rate_limit_is_a_disabled_filter_enabled_by_the_rule_routes() {
    let t = translate(TranslateOptions::default(), LOCAL);
    assert_eq!(btp_condition(&t).1, "Accepted");
    let names = filter_names(&t);
    assert_eq!(
        names,
        [
            "envoy.filters.http.cors",
            super::LOCAL_FILTER,
            "envoy.filters.http.dynamic_forward_proxy",
            "envoy.filters.http.stateful_session",
            "envoy.filters.http.router"
        ]
    );
    assert!(http_filters(&t)[1].disabled);
    let rs = routes(&t);
    let limited = route(&rs, "/rule/0/");
    let cfg: LocalRateLimit = per_filter(limited, super::LOCAL_FILTER);
    let bucket = cfg.token_bucket.unwrap();
    assert_eq!(bucket.max_tokens, 3);
    assert_eq!(bucket.fill_interval.unwrap().seconds, 60);
    assert_eq!(cfg.descriptors.len(), 1);
    assert_eq!(cfg.descriptors[0].entries[0].key, "rule-0-match-0");
    assert_eq!(cfg.descriptors[0].entries[0].value, "");
    assert_eq!(
        cfg.descriptors[0]
            .token_bucket
            .as_ref()
            .unwrap()
            .fill_interval
            .unwrap()
            .seconds,
        3600
    );
    assert!(matches!(
        cfg.rate_limits[0].actions[0].action_specifier,
        Some(ActionSpecifier::RequestHeaders(ref h)) if h.header_name == "x-user"
    ));
    // The other rule has no policy.
    assert!(route(&rs, "/rule/1/").typed_per_filter_config.is_empty());
    assert!(t.gateways()[GW].rate_limits.is_none());
    envoy_validate(&bootstrap_of(&t.gateways()[GW]), GW).unwrap();
}

#[test]
fn no_rate_limit_no_filters() {
    let mut t = Translator::with_options(with_service());
    apply_all(&mut t, &events("c1", BASE));
    assert_eq!(filter_names(&t).len(), 4);
    assert!(!t.gateways()[GW]
        .resources
        .iter()
        .any(|r| r.name == super::SERVICE_CLUSTER));
}

#[test]
fn global_rate_limit_calls_the_service_with_envoy_gateway_descriptors() {
    let t = translate(with_service(), GLOBAL);
    assert_eq!(btp_condition(&t).1, "Accepted");
    assert_eq!(filter_names(&t)[1], super::GLOBAL_FILTER);
    let f = global_filter(&t);
    assert_eq!(f.domain, GW);
    assert!(!f.failure_mode_deny);
    let closed = translate(
        TranslateOptions {
            rate_limit_fail_closed: true,
            ..with_service()
        },
        GLOBAL,
    );
    assert!(global_filter(&closed).failure_mode_deny);

    let rs = routes(&t);
    let limited = route(&rs, "/rule/0/");
    let per_route: RateLimitPerRoute = per_filter(limited, super::GLOBAL_FILTER);
    let key = "infra/gw/http/httproute/app/r/rule/0/match/0/www_example_com";
    let kinds: Vec<Vec<String>> = per_route
        .rate_limits
        .iter()
        .map(|rl| {
            rl.actions
                .iter()
                .map(|a| match a.action_specifier.as_ref().unwrap() {
                    ActionSpecifier::GenericKey(g) => format!("generic {}", g.descriptor_key),
                    ActionSpecifier::RequestHeaders(h) => format!("header {}", h.descriptor_key),
                    ActionSpecifier::HeaderValueMatch(h) => {
                        format!("match {}", h.descriptor_value)
                    }
                    ActionSpecifier::MaskedRemoteAddress(m) => {
                        format!("masked {}", m.v4_prefix_mask_len.as_ref().unwrap().value)
                    }
                    ActionSpecifier::RemoteAddress(_) => "remote".into(),
                    _ => "other".into(),
                })
                .collect()
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            vec![format!("generic {key}"), "generic rule-0-match--1".into()],
            vec![
                format!("generic {key}"),
                "header rule-1-match-0".into(),
                "match rule-1-match-1".into(),
                "masked 16".into(),
                "remote".into()
            ],
        ]
    );
    assert!(route(&rs, "/rule/1/").typed_per_filter_config.is_empty());

    // The service's rules: the same descriptors, most entries with their value.
    let rules = serde_json::to_value(t.view().rate_limit_rules()).unwrap();
    assert_eq!(
        rules,
        serde_json::json!({"domains": [{"domain": GW, "rules": [
            {"descriptor": [{"key": key, "value": key},
                            {"key": "rule-0-match--1", "value": "rule-0-match--1"}],
             "limit": {"requests_per_unit": 3, "unit": "minute"},
             "shadow_mode": false, "name": "app/rl/rule/0"},
            {"descriptor": [{"key": key, "value": key},
                            {"key": "rule-1-match-0"},
                            {"key": "rule-1-match-1", "value": "rule-1-match-1"},
                            {"key": "masked_remote_address", "value": "10.1.0.0/16"},
                            {"key": "remote_address"}],
             "limit": {"requests_per_unit": 1, "unit": "hour"},
             "shadow_mode": true, "name": "app/rl/rule/1"},
        ]}]})
    );
    // ... in the rate limit service's own format, which it accepts.
    let cfg: flotilla_ratelimit::RateLimitConfig = serde_json::from_value(rules).unwrap();
    flotilla_ratelimit::Rules::compile(&cfg).unwrap();

    let cluster = t.gateways()[GW]
        .resources
        .iter()
        .find(|r| r.type_url == type_url::CLUSTER && r.name == super::SERVICE_CLUSTER)
        .expect("the rate limit service cluster");
    let c = Cluster::decode(cluster.body.clone()).unwrap();
    assert_eq!(
        c.load_assignment.unwrap().endpoints[0].lb_endpoints.len(),
        2
    );
    envoy_validate(&bootstrap_of(&t.gateways()[GW]), GW).unwrap();
}

#[test]
fn rules_are_a_function_of_the_translated_state() {
    let a = translate(with_service(), GLOBAL);
    let mut b = Translator::with_options(with_service());
    // Another order of arrival, and a detour through another limit.
    let evs = events("c1", &format!("{BASE}---\n{}", policy(GLOBAL)));
    for e in evs.iter().rev() {
        b.apply(e).unwrap();
    }
    b.recompute();
    apply_all(
        &mut b,
        &events("c1", &policy(&GLOBAL.replace("requests: 3", "requests: 7"))),
    );
    assert_ne!(a.view().rate_limit_rules(), b.view().rate_limit_rules());
    apply_all(&mut b, &events("c1", &policy(GLOBAL)));
    assert_eq!(a.view().rate_limit_rules(), b.view().rate_limit_rules());
    assert_eq!(a.gateways()[GW], b.gateways()[GW]);
}

#[test]
fn global_rate_limit_without_a_service_is_refused() {
    let t = translate(TranslateOptions::default(), GLOBAL);
    assert_eq!(
        btp_condition(&t),
        (
            "Accepted".into(),
            "Invalid".into(),
            "RateLimit: enable Ratelimit in the EnvoyGateway config to configure global rateLimit."
                .into()
        )
    );
    assert!(!filter_names(&t).contains(&super::GLOBAL_FILTER.to_string()));
    assert!(route(&routes(&t), "/rule/0/")
        .typed_per_filter_config
        .is_empty());
}

#[test]
fn invalid_rate_limits_get_a_condition_and_never_reach_envoy() {
    for (rl, msg) in [
        (
            LOCAL.replace("unit: Hour", "unit: Second"),
            "RateLimit: local rateLimit rule limit unit must be a multiple of the default limit unit.",
        ),
        (
            GLOBAL.replace("type: Distinct, value: 10.1.0.0/16", "value: 10.1.0.0/99"),
            "RateLimit: unable to translate rateLimit: invalid CIDR address: 10.1.0.0/99.",
        ),
        (
            GLOBAL.replace("{name: x-user, type: Distinct}", "{name: x-user, type: Distinct, invert: true}"),
            "RateLimit: unable to translate rateLimit.Invert is not applicable for distinct header match type.",
        ),
    ] {
        let t = translate(with_service(), &rl);
        assert_eq!(btp_condition(&t), ("Accepted".into(), "Invalid".into(), msg.into()));
        let names = filter_names(&t);
        assert!(!names.contains(&super::LOCAL_FILTER.to_string()), "{msg}");
        assert!(!names.contains(&super::GLOBAL_FILTER.to_string()), "{msg}");
        assert!(t.gateways()[GW].rate_limits.is_none());
        assert!(routes(&t)
            .iter()
            .all(|r| r.typed_per_filter_config.is_empty()));
    }
}

#[test]
fn a_shared_rule_has_one_counter_for_every_route_of_the_policy() {
    let shared = r#"
    type: Global
    global:
      rules:
      - limit: {requests: 3, unit: Minute}
        shared: true
"#;
    let mut t = Translator::with_options(with_service());
    let whole_route = policy(shared).replace(", sectionName: limited", "");
    apply_all(&mut t, &events("c1", &format!("{BASE}---\n{whole_route}")));
    let rules = t.view().rate_limit_rules();
    // Both rules' routes name the policy's counter: one rule in the service.
    assert_eq!(rules.domains[0].rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules.domains[0].rules[0].descriptor[0].key,
        "backendtrafficpolicy/app/rl"
    );
    let rs = routes(&t);
    for r in [route(&rs, "/rule/0/"), route(&rs, "/rule/1/")] {
        assert!(r.typed_per_filter_config.contains_key(super::GLOBAL_FILTER));
    }
}

/// The store rebuilds its translator from a view after a failure: the rate limit service (an
/// option, not a resource) must come back with it, or the rebuilt output would differ.
#[test]
fn a_rebuilt_translator_keeps_the_rate_limit_service() {
    let t = translate(with_service(), GLOBAL);
    let (rebuilt, _) = Translator::rebuild(&t.view());
    assert_eq!(rebuilt.options(), t.options());
    assert_eq!(rebuilt.gateways()[GW], t.gateways()[GW]);
}

#[test]
fn long_descriptor_keys_become_digests() {
    let short = super::route_descriptor("ns/gw/http", "httproute/ns/r/rule/0/match/0", "a.b");
    assert_eq!(short, "ns/gw/http/httproute/ns/r/rule/0/match/0/a_b");
    let long = super::route_descriptor("ns/gw/http", &"r".repeat(300), "a.b");
    assert_eq!(long.len(), "sha256:".len() + 32);
    assert_ne!(
        long,
        super::route_descriptor("ns/gw/http", &"r".repeat(301), "a.b")
    );
}

/// `clientSelectors[].methods` and `path` are conditions on `:method` and `:path`, after the
/// headers; a cost from metadata is a `hits_addend` format, a limit from metadata the rate
/// limit's override. Local and global, Envoy accepts
/// them.
#[test]
fn methods_paths_and_metadata_costs_reach_envoy() {
    let t = translate(
        with_service(),
        r#"
    global:
      rules:
      - clientSelectors:
        - headers: [{name: x-user, type: Distinct}]
          methods: [{value: GET}, {value: POST}]
          path: {type: PathPrefix, value: /limited/a}
        limit: {requests: 1, unit: Hour, fromMetadata: {namespace: io.example, key: limit}}
        cost:
          request: {from: Number, number: 1}
          response: {from: Metadata, metadata: {namespace: io.example, key: tokens}}
    local:
      rules:
      - clientSelectors: [{methods: [{value: DELETE, invert: true}], path: {type: Exact, value: /limited}}]
        limit: {requests: 2, unit: Minute}
"#,
    );
    assert_eq!(btp_condition(&t).1, "Accepted");
    let rs = routes(&t);
    let limited = route(&rs, "/rule/0/");
    let per_route: RateLimitPerRoute = per_filter(limited, super::GLOBAL_FILTER);
    assert_eq!(per_route.rate_limits.len(), 2, "request and response cost");
    let matched: Vec<(String, String)> = per_route.rate_limits[0]
        .actions
        .iter()
        .filter_map(|a| match a.action_specifier.as_ref()? {
            ActionSpecifier::HeaderValueMatch(h) => {
                Some((h.descriptor_key.clone(), h.headers[0].name.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        matched,
        [
            ("rule-0-match-1".to_string(), ":method".to_string()),
            ("rule-0-match-2".to_string(), ":path".to_string())
        ]
    );
    let over = format!("{:?}", per_route.rate_limits[0].limit);
    assert!(
        over.contains("io.example") && over.contains("\"limit\""),
        "{over}"
    );
    let response = &per_route.rate_limits[1];
    assert!(response.apply_on_stream_done);
    assert_eq!(
        response.hits_addend.as_ref().unwrap().format,
        "%DYNAMIC_METADATA(io.example:tokens)%"
    );
    let rules = serde_json::to_value(t.view().rate_limit_rules()).unwrap();
    let keys: Vec<&str> = rules["domains"][0]["rules"][0]["descriptor"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys[1..],
        ["rule-0-match-0", "rule-0-match-1", "rule-0-match-2"]
    );
    assert!(limited
        .typed_per_filter_config
        .contains_key(super::LOCAL_FILTER));
    envoy_validate(&bootstrap_of(&t.gateways()[GW]), GW).unwrap();
}

/// The global filter's `x-ratelimit-*` headers, on unless a ClientTrafficPolicy of the
/// listener sets `headers.disableRateLimitHeaders`.
#[test]
fn client_policy_turns_the_global_rate_limit_headers_off() {
    let headers = |t: &Translator| global_filter(t).enable_x_ratelimit_headers;
    let on = translate(with_service(), GLOBAL);
    assert_eq!(
        headers(&on),
        XRateLimitHeadersRfcVersion::DraftVersion03 as i32
    );
    let mut off = Translator::with_options(with_service());
    let ctp = r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: ctp, namespace: infra}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  headers: {disableRateLimitHeaders: true}
"#;
    apply_all(
        &mut off,
        &events("c1", &format!("{BASE}---\n{}---\n{ctp}", policy(GLOBAL))),
    );
    assert_eq!(headers(&off), XRateLimitHeadersRfcVersion::Off as i32);
    envoy_validate(&bootstrap_of(&off.gateways()[GW]), GW).unwrap();
}

/// With the service's CA, Envoy reaches the rate limit service over TLS: its certificate must
/// chain to that CA and name one of the configured hosts (by IP or DNS), the DNS name is the
/// SNI, gRPC's h2 the ALPN; Envoy accepts the cluster. Without a CA, plaintext as before; a
/// CA bundle with no certificate is refused before it reaches any translation.
#[test]
fn the_rate_limit_service_is_reached_over_tls_with_its_ca() {
    use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
        UpstreamTlsContext,
    };
    let service_cluster = |t: &Translator| {
        let r = t.gateways()[GW]
            .resources
            .iter()
            .find(|r| r.type_url == type_url::CLUSTER && r.name == super::SERVICE_CLUSTER)
            .expect("the rate limit service cluster")
            .clone();
        Cluster::decode(r.body.clone()).unwrap()
    };
    let plain = translate(with_service(), GLOBAL);
    assert!(service_cluster(&plain).transport_socket.is_none());

    let ca = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    };
    let opts = TranslateOptions {
        rate_limit_service_ca: Some(ca.clone()),
        ..with_service()
    };
    assert_eq!(opts.check(), Ok(()));
    let t = translate(opts, GLOBAL);
    let ts = service_cluster(&t).transport_socket.expect("TLS");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = ts.config_type else {
        panic!("typed config")
    };
    let ctx = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(ctx.sni, "localhost");
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, vec!["h2"]);
    let Some(ValidationContextType::ValidationContext(v)) = common.validation_context_type else {
        panic!("a validation context")
    };
    assert_eq!(
        v.trusted_ca.unwrap().specifier,
        Some(data_source::Specifier::InlineString(ca))
    );
    let sans: Vec<(i32, String)> = v
        .match_typed_subject_alt_names
        .iter()
        .map(|m| {
            (
                m.san_type,
                format!("{:?}", m.matcher.as_ref().unwrap().match_pattern),
            )
        })
        .collect();
    assert_eq!(
        sans,
        vec![
            (
                SanType::IpAddress as i32,
                "Some(Exact(\"127.0.0.1\"))".into()
            ),
            (SanType::Dns as i32, "Some(Exact(\"localhost\"))".into()),
        ]
    );
    envoy_validate(&bootstrap_of(&t.gateways()[GW]), GW).unwrap();

    let bad = TranslateOptions {
        rate_limit_service_ca: Some("not a certificate".into()),
        ..with_service()
    };
    assert!(bad.check().is_err());
}
