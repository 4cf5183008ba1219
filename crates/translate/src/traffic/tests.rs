//! BackendTrafficPolicy → xDS: YAML in, the Envoy routes, clusters and filters out, and the
//! real Envoy's `--mode validate` on the whole gateway. This module holds the fixtures (a
//! gateway with one three-rule HTTPRoute, a policy builder, readers of the output); the tests
//! are in one submodule per part of the policy.

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

// One module per part of the policy (named apart from Envoy's `cluster` and `route` modules).
mod cluster_settings;
mod policy;
mod response_override;
mod route_settings;
mod routing_type;
mod telemetry;

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
