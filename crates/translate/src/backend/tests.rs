use crate::tests::{gateway_class, web_gateway, web_service};
use crate::{type_url, Translator};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use flotilla_model::{Kind, ResourceKey};
use prost::Message;
use serde_json::Value;

const BASE: &str = concat!(
    gateway_class!(),
    "---\n",
    web_gateway!(),
    r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: infra}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 9090, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
"#,
    web_service!("10.0.0.1")
);

/// A route in namespace `ns` on gateway `gw` whose single rule has these backendRefs (YAML
/// flow mappings).
pub(crate) fn mk_route(name: &str, ns: &str, gw: &str, refs: &[&str]) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: {gw}, namespace: infra}}]\n  rules:\n  - backendRefs: [{}]\n",
        refs.join(", ")
    )
}

pub(crate) fn translate(text: &str) -> Translator {
    crate::tests::translate_yaml(text)
}

pub(crate) fn key(kind: Kind, ns: &str, name: &str) -> ResourceKey {
    ResourceKey::new("c1", kind, ns, name)
}

/// The (type, status, reason, message) of the route's first parent's conditions.
pub(crate) fn route_conditions(
    t: &Translator,
    ns: &str,
    name: &str,
) -> Vec<(String, String, String, String)> {
    let st = t
        .status(&key(Kind::HTTPRoute, ns, name))
        .expect("route status");
    st["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (f("type"), f("status"), f("reason"), f("message"))
        })
        .collect()
}

fn resolved_refs(t: &Translator, ns: &str, name: &str) -> (String, String, String) {
    let c = route_conditions(t, ns, name)
        .into_iter()
        .find(|c| c.0 == "ResolvedRefs")
        .expect("a ResolvedRefs condition");
    (c.1, c.2, c.3)
}

pub(crate) fn cluster_named(t: &Translator, gw: &str, name: &str) -> Option<Cluster> {
    let g = &t.gateways()[gw];
    g.resources
        .iter()
        .find(|r| r.type_url == type_url::CLUSTER && r.name == name)
        .map(|r| Cluster::decode(r.body.clone()).unwrap())
}

fn load_assignment(t: &Translator, gw: &str, name: &str) -> Option<ClusterLoadAssignment> {
    let g = &t.gateways()[gw];
    g.resources
        .iter()
        .find(|r| r.type_url == type_url::ENDPOINT && r.name == name)
        .map(|r| ClusterLoadAssignment::decode(r.body.clone()).unwrap())
}

const GRANT: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: app}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}]
  to: [{group: "", kind: Service}]
"#;

#[test]
fn cross_namespace_backend_needs_a_reference_grant() {
    let route = mk_route(
        "r",
        "other",
        "gw",
        &["{name: web, namespace: app, port: 80}"],
    );
    let t = translate(&format!("{BASE}---\n{route}"));
    assert_eq!(
        resolved_refs(&t, "other", "r"),
        (
            "False".into(),
            "RefNotPermitted".into(),
            "Failed to process route rule 0 backendRef 0: Backend ref to Service app/web not \
             permitted by any ReferenceGrant."
                .into()
        )
    );
    let t = translate(&format!("{BASE}---\n{route}{GRANT}"));
    assert_eq!(resolved_refs(&t, "other", "r").0, "True");
    assert!(cluster_named(&t, "c1/infra/gw", "app/web/80").is_some());
}

#[test]
fn invalid_group_kind_and_port_read_like_envoy_gateway() {
    let cases = [
        (
            "{group: example.com, kind: Service, name: web, port: 80}",
            "InvalidKind",
            "Group is invalid, only the core API group (specified by omitting the group field or \
             setting it to an empty string), multicluster.x-k8s.io and gateway.envoyproxy.io are \
             supported",
        ),
        (
            "{kind: Pod, name: web, port: 80}",
            "InvalidKind",
            "Kind is invalid, only Service, MCS ServiceImport and Envoy Gateway Backend are supported",
        ),
        (
            "{name: web, port: 81}",
            "PortNotFound",
            "TCP Port 81 not found on Service app/web",
        ),
        (
            "{name: web}",
            "PortNotSpecified",
            "A valid port number corresponding to a port on the Service must be specified",
        ),
        ("{name: nope, port: 80}", "BackendNotFound", "service app/nope not found"),
        (
            "{kind: ServiceImport, name: nope, port: 80}",
            "BackendNotFound",
            "service import app/nope not found",
        ),
        (
            "{group: gateway.envoyproxy.io, kind: Backend, name: nope}",
            "BackendNotFound",
            "Backend app/nope not found",
        ),
    ];
    for (r, reason, msg) in cases {
        let t = translate(&format!("{BASE}---\n{}", mk_route("r", "app", "gw", &[r])));
        assert_eq!(
            resolved_refs(&t, "app", "r"),
            (
                "False".into(),
                reason.into(),
                format!("Failed to process route rule 0 backendRef 0: {msg}.")
            ),
            "{r}"
        );
    }
}

#[test]
fn service_import_endpoints_come_from_mcs_labelled_slices() {
    let text = format!(
        "{BASE}---\n{}---\n{}",
        mk_route(
            "r",
            "app",
            "gw",
            &["{group: multicluster.x-k8s.io, kind: ServiceImport, name: si, port: 80}"]
        ),
        r#"apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: si, namespace: app}
spec: {type: ClusterSetIP, ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: si-east, namespace: app, labels: {multicluster.kubernetes.io/service-name: si}}
addressType: IPv4
ports: [{name: http, port: 8000}]
endpoints: [{addresses: [10.1.0.1]}, {addresses: [10.1.0.2], conditions: {ready: false}}]
"#
    );
    let t = translate(&text);
    assert_eq!(resolved_refs(&t, "app", "r").0, "True");
    let name = "serviceimport/app/si/80";
    assert!(cluster_named(&t, "c1/infra/gw", name).is_some());
    let cla = load_assignment(&t, "c1/infra/gw", name).expect("endpoints");
    assert_eq!(cla.endpoints[0].lb_endpoints.len(), 2);
}

const BACKENDS: &str = r#"
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: ip, namespace: app}
spec: {endpoints: [{ip: {address: 10.2.0.1, port: 3000}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: dns, namespace: app}
spec: {endpoints: [{fqdn: {hostname: api.example.com, port: 443}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: lo, namespace: app}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 3000}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: uds, namespace: app}
spec: {endpoints: [{unix: {path: /var/run/app.sock}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: mixed, namespace: app}
spec: {endpoints: [{ip: {address: 10.2.0.1, port: 3000}}, {fqdn: {hostname: api.example.com, port: 443}}]}
"#;

fn backend_ref(name: &str) -> String {
    format!("{{group: gateway.envoyproxy.io, kind: Backend, name: {name}}}")
}

#[test]
fn backends_become_eds_or_strict_dns_clusters() {
    let routes = [
        mk_route("ip", "app", "gw", &[&backend_ref("ip")]),
        mk_route("dns", "app", "gw", &[&backend_ref("dns")]),
    ];
    let t = translate(&format!(
        "{BASE}{BACKENDS}---\n{}---\n{}",
        routes[0], routes[1]
    ));
    assert_eq!(resolved_refs(&t, "app", "ip").0, "True");
    assert_eq!(resolved_refs(&t, "app", "dns").0, "True");
    let eds = cluster_named(&t, "c1/infra/gw", "backend/app/ip/-").unwrap();
    assert_eq!(
        eds.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    let dns = cluster_named(&t, "c1/infra/gw", "backend/app/dns/-").unwrap();
    assert_eq!(
        dns.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32
        ))
    );
    assert_eq!(
        dns.load_assignment.unwrap().endpoints[0].lb_endpoints.len(),
        1
    );
}

#[test]
fn invalid_backends_are_refused_with_envoy_gateway_reasons() {
    let cases = [
        (
            "lo",
            "InvalidAddress",
            "IP address 127.0.0.1 in the loopback range is only supported when using the Host \
             infrastructure",
        ),
        (
            "uds",
            "UnsupportedAddressType",
            "unix domain sockets are not supported in backend references",
        ),
        (
            "mixed",
            "UnsupportedAddressType",
            "mixed FQDN and IP or Unix address type for the same backendRef is not supported",
        ),
    ];
    for (name, reason, msg) in cases {
        let route = mk_route("r", "app", "gw", &[&backend_ref(name)]);
        let t = translate(&format!("{BASE}{BACKENDS}---\n{route}"));
        assert_eq!(
            resolved_refs(&t, "app", "r"),
            (
                "False".into(),
                reason.into(),
                format!("Failed to process route rule 0 backendRef 0: {msg}.")
            ),
            "{name}"
        );
    }
}

#[test]
fn backend_status_is_envoy_gateways() {
    let t = translate(&format!("{BASE}{BACKENDS}"));
    let cond = |name: &str| -> Value {
        t.status(&key(Kind::Backend, "app", name)).unwrap()["conditions"][0].clone()
    };
    assert_eq!(cond("ip")["type"], "Accepted");
    assert_eq!(cond("ip")["message"], "The Backend was accepted");
    // Envoy Gateway's quirk: a refused Backend has type Invalid and reason Accepted.
    assert_eq!(cond("lo")["type"], "Invalid");
    assert_eq!(cond("lo")["reason"], "Accepted");
    assert_eq!(cond("lo")["status"], "False");
    assert_eq!(
        cond("lo")["message"],
        "The Backend was not accepted: IP address 127.0.0.1 in the loopback range is only \
         supported when using the Host infrastructure"
    );
    assert_eq!(cond("uds")["type"], "Accepted");
}

#[test]
fn a_backend_change_recomputes_only_the_gateways_that_use_it() {
    let text = format!(
        "{BASE}{BACKENDS}---\n{}---\n{}",
        mk_route("a", "app", "gw", &[&backend_ref("ip")]),
        mk_route("b", "app", "other", &["{name: web, port: 80}"])
    );
    let mut t = translate(&text);
    let changed = r#"apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: ip, namespace: app}
spec: {endpoints: [{ip: {address: 10.2.0.9, port: 3000}}]}
"#;
    crate::tests::apply_yaml(&mut t, changed);
    // The route using it is placed again, on its gateway alone.
    assert!(t.dirty.is_empty());
    assert_eq!(
        t.dirty_routes
            .iter()
            .map(|(gw, routes)| (gw.clone(), routes.iter().cloned().collect::<Vec<_>>()))
            .collect::<Vec<_>>(),
        vec![(
            key(Kind::Gateway, "infra", "gw"),
            vec![key(Kind::HTTPRoute, "app", "a")]
        )]
    );
    let changes = t.recompute();
    assert_eq!(changes.updated.len(), 1);
    assert_eq!(changes.updated[0].gateway, "c1/infra/gw");
}

#[test]
fn a_service_import_slice_change_recomputes_its_gateway() {
    let text = format!(
        "{BASE}---\n{}---\n{}",
        mk_route("a", "app", "gw", &["{kind: ServiceImport, name: si, port: 80}"]),
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\nmetadata: {name: si, namespace: app}\nspec: {ports: [{name: http, port: 80}]}\n"
    );
    let mut t = translate(&text);
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s, namespace: app, labels: {multicluster.kubernetes.io/service-name: si}}\naddressType: IPv4\nports: [{name: http, port: 80}]\nendpoints: [{addresses: [10.3.0.1]}]\n";
    crate::tests::apply_yaml(&mut t, slice);
    // A slice marks its gateways for an endpoint refresh (retranslated if need be).
    assert_eq!(
        t.endpoint_dirty.keys().cloned().collect::<Vec<_>>(),
        vec![key(Kind::Gateway, "infra", "gw")]
    );
    let changes = t.recompute();
    assert_eq!(changes.updated.len(), 1);
    assert_eq!(changes.updated[0].gateway, "c1/infra/gw");
}

#[test]
fn the_share_of_invalid_backends_is_answered_with_500() {
    use envoy_types::pb::envoy::config::route::v3::{route, route_action, RouteConfiguration};
    let route = mk_route(
        "r",
        "app",
        "gw",
        &[
            "{name: web, port: 80, weight: 3}",
            "{name: nope, port: 80, weight: 1}",
        ],
    );
    let t = translate(&format!("{BASE}---\n{route}"));
    let g = &t.gateways()["c1/infra/gw"];
    let rc = g
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .map(|r| RouteConfiguration::decode(r.body.clone()).unwrap())
        .unwrap();
    let Some(route::Action::Route(ra)) = rc.virtual_hosts[0].routes[0].action.clone() else {
        panic!("a route action")
    };
    assert_eq!(
        ra.cluster_not_found_response_code,
        route_action::ClusterNotFoundResponseCode::InternalServerError as i32
    );
    let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) = ra.cluster_specifier else {
        panic!("weighted clusters")
    };
    let w: Vec<(String, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        w,
        vec![
            (super::INVALID_BACKEND_CLUSTER.to_string(), 1),
            ("app/web/80".to_string(), 3)
        ]
    );
    // The missing backend never becomes a cluster.
    assert!(cluster_named(&t, "c1/infra/gw", super::INVALID_BACKEND_CLUSTER).is_none());
}

#[test]
fn a_dynamic_resolver_becomes_a_dynamic_forward_proxy_cluster() {
    let dyn_backend = "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: dyn, namespace: app}\nspec: {type: DynamicResolver}\n";
    let t = translate(&format!(
        "{BASE}{dyn_backend}---\n{}",
        mk_route("r", "app", "gw", &[&backend_ref("dyn")])
    ));
    assert_eq!(resolved_refs(&t, "app", "r").0, "True");
    let c = cluster_named(&t, "c1/infra/gw", "backend/app/dyn/-").unwrap();
    let Some(cluster::ClusterDiscoveryType::ClusterType(ct)) = c.cluster_discovery_type else {
        panic!("a custom cluster type")
    };
    assert_eq!(ct.name, "envoy.clusters.dynamic_forward_proxy");
    assert_eq!(c.lb_policy, cluster::LbPolicy::ClusterProvided as i32);
    // With another backend in the rule, Envoy Gateway refuses it.
    let t = translate(&format!(
        "{BASE}{dyn_backend}---\n{}",
        mk_route(
            "r",
            "app",
            "gw",
            &[&backend_ref("dyn"), "{name: web, port: 80}"]
        )
    ));
    assert_eq!(
        resolved_refs(&t, "app", "r"),
        (
            "False".into(),
            "InvalidBackendRef".into(),
            "Failed to process route rule 0: dynamic resolver is not supported for multiple \
             backendRefs."
                .into()
        )
    );
}

/// `routingType: Service` on a ServiceImport reaches its IPs (Envoy Gateway's
/// `processServiceImportDestinationSetting`); one without IPs, and a Backend, keep their own
/// clusters' endpoints.
#[test]
fn routing_type_service_takes_a_service_import_ips_and_leaves_backends() {
    let si = |name: &str, ips: &str| {
        format!(
            "apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {{name: {name}, namespace: app}}
spec: {{type: ClusterSetIP, ips: [{ips}], ports: [{{name: http, port: 80, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-east, namespace: app, labels: {{multicluster.kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8000}}]
endpoints: [{{addresses: [10.1.0.1]}}]
"
        )
    };
    let policy = |route: &str| {
        format!(
            "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {route}, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]
  routingType: Service
"
        )
    };
    let text = [
        BASE.to_string(),
        BACKENDS.to_string(),
        si("si", "242.1.0.1, 242.1.0.2"),
        si("headless", ""),
        mk_route(
            "a",
            "app",
            "gw",
            &["{group: multicluster.x-k8s.io, kind: ServiceImport, name: si, port: 80}"],
        ),
        mk_route(
            "b",
            "app",
            "gw",
            &["{group: multicluster.x-k8s.io, kind: ServiceImport, name: headless, port: 80}"],
        ),
        mk_route("c", "app", "gw", &[&backend_ref("ip")]),
        policy("a"),
        policy("b"),
        policy("c"),
    ]
    .join("---\n");
    let t = crate::tests::translate_yaml(&text);
    let gw = &t.gateways()["c1/infra/gw"];
    let clusters: Vec<Cluster> = gw
        .resources
        .iter()
        .filter(|r| r.type_url == type_url::CLUSTER)
        .map(|r| Cluster::decode(r.body.clone()).unwrap())
        .collect();
    let variant = |base: &str| {
        clusters
            .iter()
            .find(|c| c.name.starts_with(&format!("{base}/btp-")))
            .unwrap_or_else(|| panic!("a variant of {base}"))
    };
    let kind = |c: &Cluster| match c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => t,
        _ => -1,
    };
    let si = variant("serviceimport/app/si/80");
    assert_eq!(kind(si), cluster::DiscoveryType::Static as i32);
    let la = si.load_assignment.as_ref().unwrap();
    assert_eq!(la.endpoints[0].lb_endpoints.len(), 2, "both IPs");
    let headless = variant("serviceimport/app/headless/80");
    assert_eq!(kind(headless), cluster::DiscoveryType::Eds as i32);
    let backend = variant("backend/app/ip/-");
    assert_eq!(kind(backend), cluster::DiscoveryType::Eds as i32);
    crate::tests::envoy_validate(&crate::route_tests::bootstrap_of(gw), "c1/infra/gw")
        .expect("Envoy accepts the config");
}
