//! Incremental translation computes what a translation from scratch computes: after every
//! step of a script (routes, policies by name and by label, listeners, parents, deletions in
//! several orders), the statuses and xDS of the translator that folded the steps one by one
//! equal those of a translator rebuilt from its resources. Every shortcut of `recompute`
//! (policy passes reused, route statuses kept, outputs compared by version) is checked here
//! against the long way.

use super::tests::events;
use super::*;

mod routes;

const CLASS_AND_GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: other, port: 8081, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {ports: [{name: http, port: 80}]}
"#;

fn route(name: &str, gw: &str, labels: &str, rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: app, labels: {{{labels}}}}}
spec:
  parentRefs: [{{name: {gw}, namespace: infra}}]
  rules:
  - name: {rule}
    matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]
    backendRefs: [{{name: web, port: 80}}]
"
    )
}

fn btp_by_name(name: &str, route: &str, section: Option<&str>, timeout: &str) -> String {
    let section = section.map_or(String::new(), |s| format!(", sectionName: {s}"));
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {name}, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}{section}}}]
  timeout: {{http: {{requestTimeout: {timeout}}}}}
"
    )
}

const BTP_BY_LABEL: &str = "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: by-label, namespace: app}
spec:
  targetSelectors: [{group: gateway.networking.k8s.io, kind: HTTPRoute, matchLabels: {tier: gold}}]
  timeout: {http: {requestTimeout: 3s}}
";

fn ctp(name: &str, section: Option<&str>) -> String {
    let section = section.map_or(String::new(), |s| format!(", sectionName: {s}"));
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: {name}, namespace: infra}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw{section}}}]
  timeout: {{http: {{requestReceivedTimeout: 5s}}}}
"
    )
}

fn slice(name: &str, ip: &str, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: app, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 9000}}]
endpoints: [{{addresses: [{ip}], conditions: {{ready: {ready}}}}}]
"
    )
}

fn fqdn_slice(name: &str, host: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: app, labels: {{kubernetes.io/service-name: web}}}}
addressType: FQDN
ports: [{{name: http, port: 9000}}]
endpoints: [{{addresses: [{host}]}}]
"
    )
}

enum Step {
    Put(String),
    Delete(Kind, &'static str, &'static str),
}

pub(super) fn delete(cluster: &str, kind: Kind, ns: &str, name: &str) -> ResourceEvent {
    ResourceEvent {
        cluster: cluster.into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: ResourceKey::new(cluster, kind, ns, name),
        },
    }
}

/// Every status and every gateway's xDS of `t`, against a translator rebuilt from `t`'s
/// resources.
pub(super) fn assert_same_as_rebuilt(t: &Translator, step: usize) {
    let view = t.view();
    let (fresh, _) = Translator::rebuild(&view);
    let keys: BTreeSet<&ResourceKey> = t.statuses.keys().chain(fresh.statuses.keys()).collect();
    for k in keys {
        assert_eq!(
            t.status(k),
            fresh.status(k),
            "step {step}: status of {k} differs from a translation from scratch"
        );
    }
    assert_eq!(
        t.gateways(),
        fresh.gateways(),
        "step {step}: xDS differs from a translation from scratch"
    );
    // Every version is the content hash of its body, as the edges' clients compute it.
    for r in t.gateways().values().flat_map(|g| &g.resources) {
        let rc = r.type_url == type_url::ROUTE;
        assert_eq!(
            r.version,
            flotilla_model::digest::xds_version(rc, &r.body),
            "step {step}: version of {} is not its content's",
            r.name
        );
    }
}

#[test]
fn every_step_equals_a_translation_from_scratch() {
    let steps = vec![
        Step::Put(CLASS_AND_GATEWAY.into()),
        // A policy naming a route that does not exist yet, then the route.
        Step::Put(btp_by_name("p1", "r1", None, "5s")),
        Step::Put(route("r1", "gw", "tier: silver", "main")),
        Step::Put(route("r2", "gw", "tier: silver", "main")),
        // A label selector policy: no match, then a route relabelled into it, then out.
        Step::Put(BTP_BY_LABEL.into()),
        Step::Put(route("r2", "gw", "tier: gold", "main")),
        Step::Put(route("r2", "gw", "tier: silver", "main")),
        // A rule-level policy, then the rule renamed away from it.
        Step::Put(btp_by_name("p2", "r2", Some("main"), "7s")),
        Step::Put(route("r2", "gw", "tier: silver", "renamed")),
        // Gateway-wide and listener client policies; a listener removed under one.
        Step::Put(ctp("c1", None)),
        Step::Put(ctp("c2", Some("other"))),
        Step::Put(
            CLASS_AND_GATEWAY.replace(
                "  - {name: other, port: 8081, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n",
                "",
            ),
        ),
        // A route moved to a gateway that does not exist, and back.
        Step::Put(route("r1", "nowhere", "tier: silver", "main")),
        Step::Put(route("r1", "gw", "tier: silver", "main")),
        // The same input twice.
        Step::Put(route("r1", "gw", "tier: silver", "main")),
        // Endpoints: the first ones (the backend had none), moved, a second slice, none
        // ready, ready again, host names (a DNS cluster), addresses again, the slice gone.
        Step::Put(slice("web-1", "10.0.0.1", true)),
        Step::Put(slice("web-1", "10.0.0.2", true)),
        Step::Put(slice("web-2", "10.0.0.3", true)),
        Step::Put(slice("web-1", "10.0.0.2", false)),
        Step::Put(slice("web-2", "10.0.0.3", false)),
        Step::Put(slice("web-2", "10.0.0.4", true)),
        Step::Put(fqdn_slice("web-1", "web.example.com")),
        Step::Put(slice("web-1", "10.0.0.5", true)),
        Step::Delete(Kind::EndpointSlice, "app", "web-2"),
        Step::Delete(Kind::EndpointSlice, "app", "web-1"),
        Step::Delete(Kind::BackendTrafficPolicy, "app", "p1"),
        Step::Delete(Kind::HTTPRoute, "app", "r2"),
        Step::Delete(Kind::ClientTrafficPolicy, "infra", "c1"),
        Step::Delete(Kind::Gateway, "infra", "gw"),
        Step::Put(CLASS_AND_GATEWAY.into()),
    ];
    let mut t = Translator::new();
    for (i, step) in steps.into_iter().enumerate() {
        let evs = match step {
            Step::Put(text) => events("c1", &text),
            Step::Delete(kind, ns, name) => vec![delete("c1", kind, ns, name)],
        };
        for e in &evs {
            t.apply(e).expect("apply");
        }
        t.recompute();
        assert_same_as_rebuilt(&t, i);
    }
}

/// An endpoint change that translation does not read besides the endpoints (an address moved,
/// a ready endpoint added) rewrites the ClusterLoadAssignment alone: no gateway is
/// retranslated, and no other resource changes.
#[test]
fn an_endpoint_move_rewrites_only_the_load_assignment() {
    let mut t = Translator::new();
    let text = format!(
        "{CLASS_AND_GATEWAY}---\n{}---\n{}",
        route("r1", "gw", "tier: silver", "main"),
        slice("web-1", "10.0.0.1", true)
    );
    for e in events("c1", &text) {
        t.apply(&e).expect("apply");
    }
    t.recompute();
    let before = t.gateways().clone();
    let translations = t.translations;
    for step in [
        slice("web-1", "10.0.0.2", true),
        slice("web-2", "10.0.0.3", true),
    ] {
        for e in events("c1", &step) {
            t.apply(&e).expect("apply");
        }
        let changes = t.recompute();
        assert_eq!(changes.updated.len(), 1, "the gateway's output changed");
        assert_eq!(t.translations, translations, "no gateway was retranslated");
    }
    let after = &t.gateways()["c1/infra/gw"];
    let changed: Vec<(&str, &str)> = after
        .resources
        .iter()
        .filter(|r| !before["c1/infra/gw"].resources.contains(r))
        .map(|r| (r.type_url.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(changed, [(type_url::ENDPOINT, "app/web/80")]);
    assert_same_as_rebuilt(&t, 0);
    // No ready endpoint left: translation reads that (the route's status), so it runs.
    for e in events("c1", &slice("web-1", "10.0.0.2", false)) {
        t.apply(&e).expect("apply");
    }
    for e in events("c1", &slice("web-2", "10.0.0.3", false)) {
        t.apply(&e).expect("apply");
    }
    t.recompute();
    assert!(t.translations > translations);
    assert_same_as_rebuilt(&t, 1);
}
