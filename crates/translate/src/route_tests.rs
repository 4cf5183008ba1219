//! End-to-end tests of HTTPRoute filters/matches and GRPCRoute: YAML in, status and Envoy
//! routes out.

use super::*;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, RouteConfiguration,
};
use prost::Message;

use crate::tests::web_world;

const BASE: &str = web_world!();

fn translate(extra: &str) -> Translator {
    crate::tests::translate_yaml(&format!(
        "{BASE}---
{extra}"
    ))
}

fn conditions(t: &Translator, kind: Kind, name: &str) -> Vec<(String, String, String, String)> {
    let st = t
        .status(&ResourceKey::new("c1", kind, "app", name))
        .expect("a status");
    st["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("status"), s("reason"), s("message"))
        })
        .collect()
}

fn find<'a>(
    conds: &'a [(String, String, String, String)],
    type_: &str,
) -> &'a (String, String, String, String) {
    conds.iter().find(|c| c.0 == type_).expect(type_)
}

fn routes(t: &Translator) -> Vec<envoy_types::pb::envoy::config::route::v3::Route> {
    let g = &t.gateways()["c1/infra/gw"];
    let r = g
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .expect("a route configuration");
    let rc = RouteConfiguration::decode(r.body.clone()).unwrap();
    rc.virtual_hosts
        .into_iter()
        .flat_map(|v| v.routes)
        .collect()
}

fn attached(t: &Translator) -> u64 {
    t.status(&ResourceKey::new("c1", Kind::Gateway, "infra", "gw"))
        .unwrap()["listeners"][0]["attachedRoutes"]
        .as_u64()
        .unwrap()
}

const ROUTE_HEAD: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\nspec:\n  parentRefs: [{name: gw, namespace: infra}]\n  rules:\n";

#[test]
fn grpcroute_attaches_to_http_listener_with_method_match() {
    let t = translate(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g, namespace: app}\nspec:\n  parentRefs: [{name: gw, namespace: infra}]\n  rules:\n  - matches: [{method: {service: com.example.Svc, method: Get}}]\n    backendRefs: [{name: web, port: 80}]\n",
    );
    let c = conditions(&t, Kind::GRPCRoute, "g");
    assert_eq!(find(&c, "Accepted").1, "True");
    assert_eq!(find(&c, "ResolvedRefs").1, "True");
    assert_eq!(attached(&t), 1);
    let rs = routes(&t);
    assert_eq!(
        rs[0].r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Path(
            "/com.example.Svc/Get".into()
        ))
    );
    // gRPC backends speak HTTP/2.
    let g = &t.gateways()["c1/infra/gw"];
    let c = g
        .resources
        .iter()
        .find(|r| r.type_url == type_url::CLUSTER)
        .unwrap();
    let c = envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(c.body.clone()).unwrap();
    assert!(c
        .typed_extension_protocol_options
        .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"));
}

#[test]
fn invalid_redirect_status_rejects_the_route_but_counts_it() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - filters: [{{type: RequestRedirect, requestRedirect: {{statusCode: 666}}}}]\n"
    ));
    let c = conditions(&t, Kind::HTTPRoute, "r");
    let a = find(&c, "Accepted");
    assert_eq!((a.1.as_str(), a.2.as_str()), ("False", "UnsupportedValue"));
    assert_eq!(
        a.3,
        "Status code 666 is invalid, only 302 and 301 are supported."
    );
    assert_eq!(attached(&t), 1);
}

#[test]
fn one_bad_rule_is_dropped_and_reported_partially_invalid() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - backendRefs: [{{name: web, port: 80}}]\n  - matches: [{{path: {{type: RegularExpression, value: '*x'}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
    ));
    let c = conditions(&t, Kind::HTTPRoute, "r");
    assert_eq!(find(&c, "Accepted").1, "True");
    let p = find(&c, "PartiallyInvalid");
    assert_eq!(p.2, "UnsupportedValue");
    assert!(
        p.3.starts_with(
            "Dropped Rule(s) [1]: Failed to process route rule 1: regex \"*x\" is invalid"
        ),
        "{}",
        p.3
    );
    assert_eq!(routes(&t).len(), 1);
}

#[test]
fn filters_become_route_configuration() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - matches: [{{path: {{type: PathPrefix, value: /api}}, method: GET}}]\n    filters:\n    - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-A, value: b}}], remove: [x-old]}}}}\n    - {{type: URLRewrite, urlRewrite: {{hostname: up.example.com, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}}}\n    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: web, port: 80}}, percent: 50}}}}\n    - {{type: CORS, cors: {{allowOrigins: ['https://*.example.com'], allowMethods: [GET]}}}}\n    backendRefs: [{{name: web, port: 80}}]\n"
    ));
    let c = conditions(&t, Kind::HTTPRoute, "r");
    assert_eq!(find(&c, "Accepted").1, "True", "{c:?}");
    let rs = routes(&t);
    // The route and its CORS preflight twin.
    assert_eq!(rs.len(), 2);
    let r = rs
        .iter()
        .find(|r| !r.name.ends_with("/cors-preflight"))
        .unwrap();
    assert_eq!(
        r.request_headers_to_add[0].header.as_ref().unwrap().key,
        "X-A"
    );
    assert_eq!(r.request_headers_to_remove, vec!["x-old".to_string()]);
    let cors = envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy::decode(
        r.typed_per_filter_config["envoy.filters.http.cors"]
            .value
            .as_slice(),
    )
    .unwrap();
    // A preflight from an origin not allowed is answered by Envoy, not forwarded.
    assert_eq!(
        cors.forward_not_matching_preflights.map(|b| b.value),
        Some(false)
    );
    let Some(route::Action::Route(ra)) = &r.action else {
        panic!("not forwarded")
    };
    assert_eq!(ra.prefix_rewrite, "/v2");
    assert_eq!(
        ra.host_rewrite_specifier,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "up.example.com".into()
        ))
    );
    assert_eq!(ra.request_mirror_policies[0].cluster, ra_cluster(ra));
    let pre = rs
        .iter()
        .find(|r| r.name.ends_with("/cors-preflight"))
        .unwrap();
    assert!(pre
        .r#match
        .as_ref()
        .unwrap()
        .headers
        .iter()
        .any(|h| h.name == "origin"));
}

fn ra_cluster(ra: &envoy_types::pb::envoy::config::route::v3::RouteAction) -> String {
    match &ra.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mirror_to_a_missing_service_is_unresolved() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: nope, port: 80}}}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
    ));
    let c = conditions(&t, Kind::HTTPRoute, "r");
    let r = find(&c, "ResolvedRefs");
    assert_eq!((r.1.as_str(), r.2.as_str()), ("False", "BackendNotFound"));
    assert!(
        r.3.starts_with("Failed to validate the RequestMirror filter: "),
        "{}",
        r.3
    );
}

#[test]
fn redirect_without_port_takes_the_schemes_port() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - filters: [{{type: RequestRedirect, requestRedirect: {{scheme: https, statusCode: 301}}}}]\n"
    ));
    let rs = routes(&t);
    let Some(route::Action::Redirect(ra)) = &rs[0].action else {
        panic!("not a redirect")
    };
    assert_eq!(ra.port_redirect, 443);
}

#[test]
fn every_gateway_api_redirect_code_maps_to_envoys() {
    use envoy_types::pb::envoy::config::route::v3::redirect_action::RedirectResponseCode as C;
    for (code, want) in [
        (301, C::MovedPermanently),
        (302, C::Found),
        (303, C::SeeOther),
        (307, C::TemporaryRedirect),
        (308, C::PermanentRedirect),
    ] {
        let t = translate(&format!(
            "{ROUTE_HEAD}  - filters: [{{type: RequestRedirect, requestRedirect: {{statusCode: {code}}}}}]\n"
        ));
        let c = conditions(&t, Kind::HTTPRoute, "r");
        assert_eq!(find(&c, "Accepted").1, "True", "{code}");
        let rs = routes(&t);
        let Some(route::Action::Redirect(ra)) = &rs[0].action else {
            panic!("{code}: not a redirect")
        };
        assert_eq!(ra.response_code, want as i32, "{code}");
    }
}

#[test]
fn h2c_app_protocol_makes_the_cluster_speak_http2() {
    let t = translate(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: h2, namespace: app}}\nspec: {{ports: [{{name: h2c, port: 8081, appProtocol: kubernetes.io/h2c}}, {{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: h2-1, namespace: app, labels: {{kubernetes.io/service-name: h2}}}}\naddressType: IPv4\nports: [{{name: h2c, port: 3001}}, {{name: http, port: 3000}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n{ROUTE_HEAD}  - matches: [{{path: {{value: /a}}}}]\n    backendRefs: [{{name: h2, port: 8081}}]\n  - backendRefs: [{{name: h2, port: 80}}]\n"
    ));
    let g = &t.gateways()["c1/infra/gw"];
    let http2 = |name: &str| {
        let c = g
            .resources
            .iter()
            .find(|r| r.type_url == type_url::CLUSTER && r.name == name)
            .expect(name);
        envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(c.body.clone())
            .unwrap()
            .typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    };
    assert!(http2("app/h2/8081"));
    assert!(!http2("app/h2/80"));
}

#[test]
fn retries_cover_connection_errors_and_each_attempt_is_bounded() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - matches: [{{path: {{value: /a}}}}]\n    retry: {{attempts: 3}}\n    timeouts: {{backendRequest: 200ms}}\n    backendRefs: [{{name: web, port: 80}}]\n  - retry: {{attempts: 2, codes: [500]}}\n    backendRefs: [{{name: web, port: 80}}]\n"
    ));
    let policies: Vec<_> = routes(&t)
        .into_iter()
        .map(|r| match r.action {
            Some(route::Action::Route(ra)) => ra.retry_policy.expect("a retry policy"),
            other => panic!("{other:?}"),
        })
        .collect();
    let (a, codes) = if policies[0].retriable_status_codes == vec![500] {
        (&policies[1], &policies[0])
    } else {
        (&policies[0], &policies[1])
    };
    assert!(
        a.retry_on.split(',').any(|t| t == "reset"),
        "{}",
        a.retry_on
    );
    assert_eq!(a.num_retries.as_ref().map(|n| n.value), Some(3));
    assert_eq!(
        a.per_try_timeout.as_ref().map(|d| d.nanos),
        Some(200_000_000)
    );
    assert!(codes.retry_on.split(',').any(|t| t == "reset"));
    assert!(codes.retry_on.contains("retriable-status-codes"));
    assert_eq!(codes.per_try_timeout, None);
}

#[test]
fn missing_extension_filter_is_unresolved_and_answers_500() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - filters: [{{type: ExtensionRef, extensionRef: {{group: gateway.envoyproxy.io, kind: HTTPRouteFilter, name: gone}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
    ));
    let c = conditions(&t, Kind::HTTPRoute, "r");
    let r = find(&c, "ResolvedRefs");
    assert_eq!((r.1.as_str(), r.2.as_str()), ("False", "UnsupportedValue"));
    assert_eq!(r.3, "Unable to translate HTTPRouteFilter: app/gone.");
    let rs = routes(&t);
    assert!(matches!(&rs[0].action, Some(route::Action::DirectResponse(d)) if d.status == 500));
}

#[test]
fn header_filter_errors_are_listed() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{add: [{{name: '', value: a}}], set: [{{name: '', value: b}}]}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
    ));
    let c = conditions(&t, Kind::HTTPRoute, "r");
    let a = find(&c, "Accepted");
    assert_eq!(a.1, "False");
    assert_eq!(
        a.3,
        "RequestHeaderModifier Filter did not provide valid configuration to add/set/remove any headers."
    );
}

/// The translated resources of `t`'s gateway as one static bootstrap (routes inline in their
/// listeners, EDS clusters made static with their endpoints), for `envoy --mode validate`.
fn static_bootstrap(t: &Translator) -> Vec<u8> {
    bootstrap_of(&t.gateways()["c1/infra/gw"])
}

pub(crate) fn bootstrap_of(g: &GatewayXds) -> Vec<u8> {
    use envoy_types::pb::envoy::config::bootstrap::v3::{bootstrap::StaticResources, Bootstrap};
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager,
    };
    let of = |url: &'static str| g.resources.iter().filter(move |r| r.type_url == url);
    let routes: Vec<RouteConfiguration> = of(type_url::ROUTE)
        .map(|r| {
            let mut rc = RouteConfiguration::decode(r.body.clone()).unwrap();
            // Served over RDS, where Envoy does not check that clusters exist (the invalid
            // backend share relies on that); inline it would.
            rc.validate_clusters =
                Some(envoy_types::pb::google::protobuf::BoolValue { value: false });
            rc
        })
        .collect();
    let mut listeners = Vec::new();
    for r in of(type_url::LISTENER) {
        let mut l = Listener::decode(r.body.clone()).unwrap();
        for fc in &mut l.filter_chains {
            for f in &mut fc.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                    continue;
                };
                let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                    continue;
                };
                if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                    let rc = routes
                        .iter()
                        .find(|rc| rc.name == rds.route_config_name)
                        .cloned()
                        .unwrap_or_default();
                    hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
                    any.value = hcm.encode_to_vec();
                }
            }
        }
        listeners.push(l);
    }
    let mut clusters = Vec::new();
    for r in of(type_url::CLUSTER) {
        let mut c = Cluster::decode(r.body.clone()).unwrap();
        if let Some(eds) = c.eds_cluster_config.take() {
            // A settings variant reads its base cluster's endpoints.
            let service = eds.service_name;
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            ));
            c.load_assignment = of(type_url::ENDPOINT)
                .find(|e| e.name == service)
                .map(|e| ClusterLoadAssignment::decode(e.body.clone()).unwrap());
        }
        clusters.push(c);
    }
    Bootstrap {
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            secrets: vec![],
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Everything the route translation emits must be accepted by Envoy 1.40 (`$ENVOY_BIN`, or
/// where `scripts/setup.sh` installs it; the test fails if there is none).
#[test]
fn envoy_accepts_translated_filters_and_grpc_routes() {
    let t = translate(&format!(
        "{ROUTE_HEAD}  - matches: [{{path: {{type: PathPrefix, value: /api/}}, method: GET, headers: [{{name: X-V, value: '^v[0-9]+$', type: RegularExpression}}], queryParams: [{{name: q, value: '1'}}]}}]\n    filters:\n    - {{type: RequestHeaderModifier, requestHeaderModifier: {{add: [{{name: X-A, value: b}}], set: [{{name: X-B, value: c d}}], remove: [x-old]}}}}\n    - {{type: ResponseHeaderModifier, responseHeaderModifier: {{set: [{{name: X-R, value: r}}]}}}}\n    - {{type: URLRewrite, urlRewrite: {{hostname: up.example.com, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}}}\n    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: web, port: 80}}, fraction: {{numerator: 1, denominator: 3}}}}}}\n    - {{type: CORS, cors: {{allowOrigins: ['https://*.example.com', 'https://a.b'], allowMethods: [GET, POST], allowHeaders: [x-a], exposeHeaders: [x-b], maxAge: 60, allowCredentials: true}}}}\n    backendRefs: [{{name: web, port: 80, weight: 2}}, {{name: missing, port: 80}}]\n    timeouts: {{request: 10s, backendRequest: 2s}}\n    retry: {{codes: [503, 502], attempts: 3, backoff: 100ms}}\n    sessionPersistence: {{sessionName: s1, absoluteTimeout: 1h, cookieConfig: {{lifetimeType: Permanent}}}}\n  - matches: [{{path: {{type: Exact, value: /full}}}}]\n    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /other}}}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n    sessionPersistence: {{type: Header, sessionName: x-session}}\n  - matches: [{{path: {{type: RegularExpression, value: '/re/[a-z]+'}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {{scheme: https, hostname: x.example.com, path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new/}}, statusCode: 301}}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  rules:\n  - matches: [{{method: {{service: a.B, method: C}}}}, {{method: {{method: D}}}}, {{method: {{type: RegularExpression, service: 'foo.*'}}, headers: [{{name: x-h, value: v}}]}}]\n    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-g, value: '1'}}]}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n    sessionPersistence: {{}}\n"
    ));
    if let Err(e) = crate::tests::envoy_validate(&static_bootstrap(&t), "c1/infra/gw") {
        panic!("envoy rejected the config:\n{e}");
    }
}

/// A rule's sessionPersistence enables the stateful session filter on each of its routes, with a
/// cookie named, pathed and timed as Envoy Gateway does, or a header; the route configuration's
/// bytes do not depend on hash-map order (two entries: CORS and the session).
#[test]
fn session_persistence_enables_stateful_session_per_route() {
    use envoy_types::pb::envoy::extensions::filters::http::stateful_session::v3::{
        stateful_session_per_route::Override, StatefulSessionPerRoute,
    };
    use envoy_types::pb::envoy::extensions::http::stateful_session::cookie::v3::CookieBasedSessionState;
    use envoy_types::pb::envoy::extensions::http::stateful_session::header::v3::HeaderBasedSessionState;
    let yaml = format!(
        "{ROUTE_HEAD}  - matches: [{{path: {{type: PathPrefix, value: /cart}}}}]\n    filters: [{{type: CORS, cors: {{allowOrigins: ['https://a.b']}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n    sessionPersistence: {{absoluteTimeout: 10m, cookieConfig: {{lifetimeType: Permanent}}}}\n  - matches: [{{path: {{type: Exact, value: /h}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n    sessionPersistence: {{type: Header, sessionName: X-Session}}\n  - matches: [{{path: {{type: Exact, value: /bad}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n    sessionPersistence: {{type: Header, sessionName: 'bad name'}}\n"
    );
    let t = translate(&yaml);
    let c = conditions(&t, Kind::HTTPRoute, "r");
    assert_eq!(find(&c, "Accepted").1, "True", "{c:?}");
    let partial = find(&c, "PartiallyInvalid");
    assert!(
        partial.3.contains("rule 2") && partial.3.contains("not a valid header name"),
        "{partial:?}"
    );
    let session = |r: &envoy_types::pb::envoy::config::route::v3::Route| {
        let any = &r.typed_per_filter_config["envoy.filters.http.stateful_session"];
        let per = StatefulSessionPerRoute::decode(any.value.as_slice()).unwrap();
        let Some(Override::StatefulSession(s)) = per.r#override else {
            panic!("not enabled")
        };
        s.session_state.unwrap()
    };
    let rs = routes(&t);
    let cart = rs
        .iter()
        .find(|r| r.name.ends_with("rule/0/match/0"))
        .unwrap();
    assert!(cart
        .typed_per_filter_config
        .contains_key("envoy.filters.http.cors"));
    let state = session(cart);
    assert_eq!(state.name, "envoy.http.stateful_session.cookie");
    let cookie = CookieBasedSessionState::decode(state.typed_config.unwrap().value.as_slice())
        .unwrap()
        .cookie
        .unwrap();
    assert_eq!(cookie.name, "httproute-app-r-rule-0");
    assert_eq!(cookie.path, "/cart");
    assert_eq!(cookie.ttl.unwrap().seconds, 600);
    let h = rs
        .iter()
        .find(|r| r.name.ends_with("rule/1/match/0"))
        .unwrap();
    let state = session(h);
    assert_eq!(state.name, "envoy.http.stateful_session.header");
    assert_eq!(
        HeaderBasedSessionState::decode(state.typed_config.unwrap().value.as_slice())
            .unwrap()
            .name,
        "X-Session"
    );
    assert!(!rs.iter().any(|r| r.name.contains("rule/2/")));
    // Same input, same bytes, whatever order each run's hash maps iterate in.
    let version = |t: &Translator| {
        t.gateways()["c1/infra/gw"]
            .resources
            .iter()
            .find(|r| r.type_url == type_url::ROUTE)
            .unwrap()
            .body
            .clone()
    };
    let first = version(&t);
    for _ in 0..16 {
        assert_eq!(version(&translate(&yaml)), first);
    }
}

/// Every HTTP listener's connection manager allows WebSocket upgrades, as Envoy Gateway's does
/// (HTTPRouteBackendProtocolWebSocket); `envoy_accepts_translated_filters_and_grpc_routes`
/// validates the same listeners with Envoy.
#[test]
fn http_listener_allows_websocket_upgrades() {
    use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    let t = translate(&format!(
        "{ROUTE_HEAD}  - backendRefs: [{{name: web, port: 80}}]\n"
    ));
    let g = &t.gateways()["c1/infra/gw"];
    let mut hcms = 0;
    for r in g
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::LISTENER)
    {
        let l = Listener::decode(r.body.clone()).unwrap();
        for f in l.filter_chains.iter().flat_map(|fc| &fc.filters) {
            if f.name != "envoy.filters.network.http_connection_manager" {
                continue;
            }
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("HCM without typed config");
            };
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
            let upgrades: Vec<(&str, Option<bool>)> = hcm
                .upgrade_configs
                .iter()
                .map(|u| (u.upgrade_type.as_str(), u.enabled.map(|b| b.value)))
                .collect();
            assert_eq!(upgrades, [("websocket", None)], "listener {}", l.name);
            hcms += 1;
        }
    }
    assert_eq!(hcms, 1, "one HTTP listener");
}

/// Certificates and CAs from SDS servers (Envoy Gateway's `gateway.envoyproxy.io/sds`
/// Secrets): the listener's TLS context and the upstream validation context name the secret
/// and a static cluster to the server's socket, once, and Envoy accepts the whole.
#[test]
fn sds_certificates_and_cas_are_accepted_by_envoy() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, UpstreamTlsContext,
    };
    // url: unix:///run/sds.sock, secretName: server (and ca).
    let sds = |name: &str, secret: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: app}}\ntype: gateway.envoyproxy.io/sds\ndata: {{url: dW5peDovLy9ydW4vc2RzLnNvY2s=, secretName: {secret}}}\n---\n")
    };
    let t = translate(&format!(
        "{}{}apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: tls, namespace: app}}\nspec:\n  gatewayClassName: eg\n  listeners:\n  - {{name: https, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: p, namespace: app}}\nspec:\n  targetRefs: [{{group: '', kind: Service, name: web}}]\n  validation: {{hostname: web.app, caCertificateRefs: [{{group: '', kind: Secret, name: ca}}]}}\n---\n{ROUTE_HEAD}  - backendRefs: [{{name: web, port: 80}}]\n",
        sds("cert", "c2VydmVy"),
        sds("ca", "Y2E="),
    ).replace("parentRefs: [{name: gw, namespace: infra}]", "parentRefs: [{name: gw, namespace: infra}, {name: tls}]"));
    let st = t
        .status(&ResourceKey::new("c1", Kind::BackendTLSPolicy, "app", "p"))
        .cloned()
        .unwrap();
    assert!(st.to_string().contains("Policy has been accepted"), "{st}");
    let g = &t.gateways()["c1/app/tls"];
    let clusters: Vec<Cluster> = g
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::CLUSTER)
        .map(|r| Cluster::decode(r.body.clone()).unwrap())
        .collect();
    assert_eq!(
        clusters
            .iter()
            .filter(|c| c.name == "sds_run_sds.sock")
            .count(),
        1
    );
    let web = clusters
        .iter()
        .find(|c| c.name.starts_with("app/web"))
        .unwrap();
    let Some(ConfigType::TypedConfig(any)) = web
        .transport_socket
        .as_ref()
        .and_then(|s| s.config_type.clone())
    else {
        panic!("no upstream TLS")
    };
    let ctx = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    let Some(ValidationContextType::CombinedValidationContext(c)) =
        ctx.common_tls_context.unwrap().validation_context_type
    else {
        panic!("CA not from SDS")
    };
    assert_eq!(c.validation_context_sds_secret_config.unwrap().name, "ca");
    for g in [g, &t.gateways()["c1/infra/gw"]] {
        if let Err(e) = crate::tests::envoy_validate(&bootstrap_of(g), &g.gateway) {
            panic!("envoy rejected {}:\n{e}", g.gateway);
        }
    }
}

/// Two HTTPRoutes with the same match: the older one's Envoy route comes first and takes the
/// traffic. Creation times are compared as instants: `…:45Z` is older than `…:45.5Z`, which
/// sorts first as text.
#[test]
fn the_older_route_takes_an_identical_match() {
    let route = |name: &str, created: &str| {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app, creationTimestamp: \"{created}\"}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  rules:\n  - matches: [{{path: {{type: Exact, value: /x}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n")
    };
    let t = translate(&format!(
        "{}{}",
        route("aa-young", "2025-01-01T00:00:45.5Z"),
        route("zz-old", "2025-01-01T00:00:45Z")
    ));
    let names: Vec<String> = routes(&t).into_iter().map(|r| r.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].contains("zz-old"), "{names:?}");
    assert!(names[1].contains("aa-young"), "{names:?}");
    // The reverse creation times reverse the order: the names decide nothing.
    let t = translate(&format!(
        "{}{}",
        route("aa-young", "2025-01-01T00:00:46Z"),
        route("zz-old", "2025-01-01T00:00:45.999Z")
    ));
    let names: Vec<String> = routes(&t).into_iter().map(|r| r.name).collect();
    assert!(names[0].contains("zz-old"), "{names:?}");
}

/// Durations reach Envoy exact, and the ones that do not parse get Envoy Gateway's treatment:
/// a route timeout becomes its 15s default, a backoff or per-try timeout is dropped (no
/// condition either way), a session TTL refuses the rule (UnsupportedValue, Go's message).
/// Nothing overflowing or negative is ever encoded.
#[test]
fn durations_are_exact_and_invalid_ones_follow_envoy_gateway() {
    let rule = |path: &str, extra: &str| {
        format!("  - matches: [{{path: {{type: Exact, value: {path}}}}}]\n{extra}    backendRefs: [{{name: web, port: 80}}]\n")
    };
    let t = translate(&format!(
        "{ROUTE_HEAD}{}{}{}{}{}",
        rule("/exact", "    timeouts: {request: 1.005s}\n"),
        rule("/overflow", "    timeouts: {request: 9999999999999h}\n"),
        rule("/negative", "    timeouts: {backendRequest: -1s}\n"),
        rule(
            "/retry",
            "    retry: {attempts: 2, backoff: 1x}\n    timeouts: {backendRequest: 99999999999999h}\n"
        ),
        rule(
            "/session",
            "    sessionPersistence: {absoluteTimeout: 5sec, cookieConfig: {lifetimeType: Permanent}}\n"
        ),
    ));
    let rs = routes(&t);
    let action = |path: &str| {
        let r = rs
            .iter()
            .find(|r| r.name.contains(&format!("rule/{path}/")))
            .unwrap_or_else(|| panic!("rule {path} in {rs:?}"));
        match &r.action {
            Some(route::Action::Route(ra)) => ra.clone(),
            other => panic!("{other:?}"),
        }
    };
    let secs =
        |d: Option<envoy_types::pb::google::protobuf::Duration>| d.map(|d| (d.seconds, d.nanos));
    assert_eq!(secs(action("0").timeout), Some((1, 5_000_000)));
    assert_eq!(secs(action("1").timeout), Some((15, 0)));
    assert_eq!(secs(action("2").timeout), Some((15, 0)));
    let retry = action("3").retry_policy.expect("a retry policy");
    assert_eq!(retry.retry_back_off, None);
    assert_eq!(retry.per_try_timeout, None);
    // The session rule is dropped, with Go's error as Envoy Gateway words it.
    assert!(!rs.iter().any(|r| r.name.contains("rule/4/")));
    let c = conditions(&t, Kind::HTTPRoute, "r");
    let p = find(&c, "PartiallyInvalid");
    assert_eq!(p.2, "UnsupportedValue");
    assert!(
        p.3.ends_with(
            "Failed to process route rule 4: time: unknown unit \"sec\" in duration \"5sec\"."
        ),
        "{}",
        p.3
    );
    if let Err(e) = crate::tests::envoy_validate(&static_bootstrap(&t), "c1/infra/gw") {
        panic!("envoy rejected the config:\n{e}");
    }
}
