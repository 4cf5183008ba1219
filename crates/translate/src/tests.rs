use super::*;
use envoy_types::pb::envoy::config::route::v3::{route, route_action, RouteConfiguration};
use prost::Message;

/// The GatewayClass `eg` of Envoy Gateway's controller. This and the fixtures below are YAML
/// literals (macros, so that `concat!` can join them into a test's own `const`): the world most
/// translate tests start from, written once.
macro_rules! gateway_class {
    () => {
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
"#
    };
}
pub(crate) use gateway_class;

/// The Gateway `infra/gw` of class `eg`: one HTTP listener on 8080, routes from every namespace.
macro_rules! web_gateway {
    () => {
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"#
    };
}
pub(crate) use web_gateway;

/// The Service `app/web` (port 80) and its EndpointSlice: one endpoint, 127.0.0.1 or the given
/// address, on port 9000.
macro_rules! web_service {
    () => {
        $crate::tests::web_service!("127.0.0.1")
    };
    ($address:literal) => {
        concat!(
            r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9000}]
endpoints: [{addresses: ["#,
            $address,
            r#"]}]
"#
        )
    };
}
pub(crate) use web_service;

/// [`gateway_class`], [`web_gateway`] and [`web_service`].
macro_rules! web_world {
    () => {
        concat!(
            $crate::tests::gateway_class!(),
            "---\n",
            $crate::tests::web_gateway!(),
            "---\n",
            $crate::tests::web_service!()
        )
    };
}
pub(crate) use web_world;

/// The TLS Secret `infra/cert`: an EC P-256 self-signed certificate for a.example.com and
/// *.b.example.com (the CA of `CA_PEM` in the listener tests), and its key.
macro_rules! cert_secret {
    () => {
        r#"apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: infra}
type: kubernetes.io/tls
data:
  # An EC P-256 self-signed certificate for a.example.com and *.b.example.com, and its key.
  tls.crt: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJzVENDQVZpZ0F3SUJBZ0lVSU5rcWU4eWNVejd5Zk1yNkJPRXdialZaU08wd0NnWUlLb1pJemowRUF3SXcKR0RFV01CUUdBMVVFQXd3TllTNWxlR0Z0Y0d4bExtTnZiVEFnRncweU5qRXlNREV5TWpNeE1EWmFHQTh5TVRJMgpNVEV3TnpJeU16RXdObG93R0RFV01CUUdBMVVFQXd3TllTNWxlR0Z0Y0d4bExtTnZiVEJaTUJNR0J5cUdTTTQ5CkFnRUdDQ3FHU000OUF3RUhBMElBQk5aSVFTem5mSW54eEJwLysyTm5jazBCRy9oNnhHYmVyYk9iaFZXVkZqSFAKRFEwM0tXOEVsc3k2WWx1UzVOdks0YWU5RDltdkRSb252RW0zMDZvQW9lNmpmakI4TUIwR0ExVWREZ1FXQkJTZwo1Mll0UlBhSk0ydmpsZitNaVRqQWtxV1haekFmQmdOVkhTTUVHREFXZ0JTZzUyWXRSUGFKTTJ2amxmK01pVGpBCmtxV1haekFQQmdOVkhSTUJBZjhFQlRBREFRSC9NQ2tHQTFVZEVRUWlNQ0NDRFdFdVpYaGhiWEJzWlM1amIyMkMKRHlvdVlpNWxlR0Z0Y0d4bExtTnZiVEFLQmdncWhrak9QUVFEQWdOSEFEQkVBaUFkMWVlKzIzVFBXQjE2am0yVQpuL1dYdkRkNkFtWEtWWFh6Y0hOcWU5R0d2UUlnYmJqTndTR0ZHMjlObDV0WVlYMG1KQTV1R3g4cDl1cnFSemRtCmptaGwyMjg9Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K
  tls.key: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEJHMHdhd0lCQVFRZ0FYSjFZRVFDcXlITU9jc08KVFpJMzZ4Undjemp3Q3Q4T1BwNTF5bXRNNUlLaFJBTkNBQVRXU0VFczUzeUo4Y1FhZi90alozSk5BUnY0ZXNSbQozcTJ6bTRWVmxSWXh6dzBOTnlsdkJKYk11bUpia3VUYnl1R252US9acncwYUo3eEp0OU9xQUtIdQotLS0tLUVORCBQUklWQVRFIEtFWS0tLS0tCg==
"#
    };
}
pub(crate) use cert_secret;

const BASE: &str = concat!(
    gateway_class!(),
    r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  addresses: [{type: IPAddress, value: 127.0.0.2}]
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
"#,
    web_service!()
);

fn mk_route(name: &str, path: &str, backends: &[(&str, i32)]) -> String {
    let refs: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("{{name: {b}, port: 80, weight: {w}}}"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{}]\n",
        refs.join(", ")
    )
}

pub(crate) fn events(cluster: &str, text: &str) -> Vec<ResourceEvent> {
    let (rs, errs) = flotilla_model::parse_documents("test.yaml", text, cluster);
    assert!(errs.is_empty(), "{errs:?}");
    rs.into_iter()
        .map(|r| ResourceEvent {
            cluster: cluster.into(),
            source: "test".into(),
            body: EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: None,
            },
        })
        .collect()
}

/// Applies the objects of `text` (cluster `c1`) as upserts, without recomputing: what a test
/// of the bookkeeping between two recomputations starts with.
pub(crate) fn apply_yaml(t: &mut Translator, text: &str) {
    for e in events("c1", text) {
        t.apply(&e).unwrap();
    }
}

pub(crate) fn apply_all(t: &mut Translator, evs: &[ResourceEvent]) -> Changes {
    for e in evs {
        t.apply(e).unwrap();
    }
    t.recompute()
}

fn route_config(t: &Translator, gw: &str) -> RouteConfiguration {
    let g = &t.gateways()[gw];
    let r = g
        .resources
        .iter()
        .find(|r| r.type_url == type_url::ROUTE)
        .expect("a route configuration");
    RouteConfiguration::decode(r.body.clone()).unwrap()
}

fn key(kind: Kind, ns: &str, name: &str) -> ResourceKey {
    ResourceKey::new("c1", kind, ns, name)
}

#[test]
fn route_to_service_produces_listener_route_cluster_endpoints() {
    let mut t = Translator::new();
    let ch = apply_all(
        &mut t,
        &events(
            "c1",
            &format!("{BASE}---\n{}", mk_route("r", "/app", &[("web", 1)])),
        ),
    );
    assert_eq!(ch.updated.len(), 1);
    let g = &t.gateways()["c1/infra/gw"];
    let kinds: Vec<(&str, &str)> = g
        .resources
        .iter()
        .map(|r| (r.type_url.rsplit('.').next().unwrap(), r.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("Cluster", "app/web/80"),
            ("ClusterLoadAssignment", "app/web/80"),
            ("Listener", "http-8080"),
            ("RouteConfiguration", "http-8080"),
        ]
    );
    let rc = route_config(&t, "c1/infra/gw");
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].domains, vec!["*"]);
    let st = t.status(&key(Kind::HTTPRoute, "app", "r")).unwrap();
    assert_eq!(st["parents"][0]["conditions"][0]["type"], "Accepted");
    assert_eq!(st["parents"][0]["conditions"][0]["status"], "True");
    assert_eq!(st["parents"][0]["conditions"][1]["reason"], "ResolvedRefs");
    let gs = t.status(&key(Kind::Gateway, "infra", "gw")).unwrap();
    assert_eq!(gs["listeners"][0]["attachedRoutes"], 1);
}

#[test]
fn missing_service_is_backend_not_found_and_500() {
    let mut t = Translator::new();
    apply_all(
        &mut t,
        &events(
            "c1",
            &format!("{BASE}---\n{}", mk_route("r", "/x", &[("nope", 1)])),
        ),
    );
    let st = t.status(&key(Kind::HTTPRoute, "app", "r")).unwrap();
    let rr = &st["parents"][0]["conditions"][1];
    assert_eq!(rr["status"], "False");
    assert_eq!(rr["reason"], "BackendNotFound");
    assert_eq!(
        rr["message"],
        "Failed to process route rule 0 backendRef 0: service app/nope not found."
    );
    let rc = route_config(&t, "c1/infra/gw");
    let action = rc.virtual_hosts[0].routes[0].action.clone().unwrap();
    assert!(matches!(action, route::Action::DirectResponse(d) if d.status == 500));
}

#[test]
fn weights_become_weighted_clusters_and_change_versions() {
    let mut t = Translator::new();
    apply_all(
        &mut t,
        &events(
            "c1",
            &format!("{BASE}---\n{}", mk_route("r", "/a", &[("web", 1)])),
        ),
    );
    let before = t.gateways()["c1/infra/gw"].clone();
    // A backend without endpoints gets no traffic (BackendsAvailable=False), so web2 has one.
    let svc2 = "apiVersion: v1\nkind: Service\nmetadata: {name: web2, namespace: app}\nspec: {ports: [{name: http, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web2-1, namespace: app, labels: {kubernetes.io/service-name: web2}}\naddressType: IPv4\nports: [{name: http, port: 9000}]\nendpoints: [{addresses: [127.0.0.3]}]\n";
    let ch = apply_all(
        &mut t,
        &events(
            "c1",
            &format!(
                "{svc2}---\n{}",
                mk_route("r", "/a", &[("web", 3), ("web2", 1)])
            ),
        ),
    );
    assert_eq!(ch.updated.len(), 1);
    let rc = route_config(&t, "c1/infra/gw");
    let Some(route::Action::Route(ra)) = rc.virtual_hosts[0].routes[0].action.clone() else {
        panic!("not a route action")
    };
    let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) = ra.cluster_specifier else {
        panic!("not weighted")
    };
    let w: Vec<(String, u32)> = wc
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.unwrap().value))
        .collect();
    assert_eq!(w, vec![("app/web/80".into(), 3), ("app/web2/80".into(), 1)]);
    // The listener did not change, so it keeps its version; the route config did.
    let after = &t.gateways()["c1/infra/gw"];
    let ver = |g: &GatewayXds, ty: &str| {
        g.resources
            .iter()
            .find(|r| r.type_url == ty)
            .unwrap()
            .version
            .clone()
    };
    assert_eq!(
        ver(&before, type_url::LISTENER),
        ver(after, type_url::LISTENER)
    );
    assert_ne!(ver(&before, type_url::ROUTE), ver(after, type_url::ROUTE));
}

#[test]
fn unchanged_input_changes_nothing() {
    let mut t = Translator::new();
    let evs = events(
        "c1",
        &format!("{BASE}---\n{}", mk_route("r", "/a", &[("web", 1)])),
    );
    apply_all(&mut t, &evs);
    let ch = apply_all(&mut t, &evs);
    assert_eq!(ch, Changes::default());
}

#[test]
fn endpoint_change_touches_only_gateways_using_the_service() {
    let mut t = Translator::new();
    let other = BASE
        .replace("name: gw, namespace: infra", "name: gw2, namespace: infra")
        .replace("127.0.0.2", "127.0.0.3");
    apply_all(
        &mut t,
        &events(
            "c1",
            &format!(
                "{BASE}---\n{other}---\n{}",
                mk_route("r", "/a", &[("web", 1)])
            ),
        ),
    );
    assert_eq!(t.gateways().len(), 2);
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: app, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 9001}]\nendpoints: [{addresses: [127.0.0.1]}]\n";
    let ch = apply_all(&mut t, &events("c1", slice));
    let ids: Vec<&str> = ch.updated.iter().map(|g| g.gateway.as_str()).collect();
    assert_eq!(ids, vec!["c1/infra/gw"]);
}

#[test]
fn invalid_regex_drops_the_rule_and_keeps_the_rest() {
    let mut t = Translator::new();
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\nspec:\n  parentRefs: [{name: gw, namespace: infra}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /ok}}]\n    backendRefs: [{name: web, port: 80}]\n  - matches: [{path: {type: RegularExpression, value: '*regex*'}}]\n    backendRefs: [{name: web, port: 80}]\n";
    apply_all(&mut t, &events("c1", &format!("{BASE}---\n{route}")));
    let st = t.status(&key(Kind::HTTPRoute, "app", "r")).unwrap();
    let conds = st["parents"][0]["conditions"].as_array().unwrap();
    assert_eq!(conds[0]["status"], "True");
    assert_eq!(conds[1]["type"], "PartiallyInvalid");
    assert_eq!(conds[1]["reason"], "UnsupportedValue");
    let msg = conds[1]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "Dropped Rule(s) [1]: Failed to process route rule 1: regex \"*regex*\" is invalid"
        ),
        "{msg}"
    );
    let rc = route_config(&t, "c1/infra/gw");
    assert_eq!(rc.virtual_hosts[0].routes.len(), 1);
}

#[test]
fn precedence_exact_then_longest_prefix() {
    let mut t = Translator::new();
    let text = format!(
        "{BASE}---\n{}---\n{}---\n{}",
        mk_route("a", "/", &[("web", 1)]),
        mk_route("b", "/long/er", &[("web", 1)]),
        mk_route("c", "/long", &[("web", 1)])
    );
    apply_all(&mut t, &events("c1", &text));
    let rc = route_config(&t, "c1/infra/gw");
    let names: Vec<&str> = rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec![
            "httproute/app/b/rule/0/match/0",
            "httproute/app/c/rule/0/match/0",
            "httproute/app/a/rule/0/match/0"
        ]
    );
}

#[test]
fn deletes_and_resync_remove_output() {
    let mut t = Translator::new();
    apply_all(
        &mut t,
        &events(
            "c1",
            &format!("{BASE}---\n{}", mk_route("r", "/a", &[("web", 1)])),
        ),
    );
    let resync = ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Resync {
            keys: vec![key(Kind::HTTPRoute, "app", "r")],
            keep_origins: vec![],
        },
    };
    let ch = apply_all(&mut t, &[resync]);
    assert_eq!(ch.removed, vec!["c1/infra/gw".to_string()]);
    assert!(t.gateways().is_empty());
    assert_eq!(t.resources().count(), 1);
    // The route's parent is gone, so it has no status.
    assert!(t.status(&key(Kind::HTTPRoute, "app", "r")).is_none());
}

/// Upserts of `text` in cluster c1, each naming `origin`.
fn events_from(origin: &str, text: &str) -> Vec<ResourceEvent> {
    let mut evs = events("c1", text);
    for e in &mut evs {
        if let EventBody::Upsert { origin: o, .. } = &mut e.body {
            *o = Some(origin.to_string());
        }
    }
    evs
}

fn resync(cluster: &str, keys: Vec<ResourceKey>, keep_origins: &[&str]) -> ResourceEvent {
    ResourceEvent {
        cluster: cluster.into(),
        source: "test".into(),
        body: EventBody::Resync {
            keys,
            keep_origins: keep_origins.iter().map(|o| o.to_string()).collect(),
        },
    }
}

#[test]
fn origins_are_set_cleared_and_dropped_beside_the_object() {
    let mut t = Translator::new();
    let route = mk_route("r", "/a", &[("web", 1)]);
    let r = key(Kind::HTTPRoute, "app", "r");
    apply_all(&mut t, &events_from("routes/r.yaml", &route));
    assert_eq!(t.origin(&r), Some("routes/r.yaml"));
    // The stored object is exactly what was sent: the origin is not written into it.
    let (sent, _) = flotilla_model::parse_documents("x", &route, "c1");
    assert_eq!(t.resource(&r).map(|x| &x.raw), Some(&sent[0].raw));
    // The same object from another file: nothing to retranslate, but the origin moves.
    let ch = apply_all(&mut t, &events_from("other.yaml", &route));
    assert!(ch.updated.is_empty() && ch.status_changed.is_empty());
    assert_eq!(t.origin(&r), Some("other.yaml"));
    // An upsert without an origin clears it; a delete drops it.
    apply_all(&mut t, &events("c1", &route));
    assert_eq!(t.origin(&r), None);
    apply_all(&mut t, &events_from("routes/r.yaml", &route));
    let delete = ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Delete { key: r.clone() },
    };
    apply_all(&mut t, &[delete]);
    assert_eq!(t.origin(&r), None);
    assert!(t.resource(&r).is_none());
}

#[test]
fn resync_keeps_what_came_from_the_files_it_names() {
    let mut t = Translator::new();
    apply_all(&mut t, &events_from("base.yaml", BASE));
    apply_all(
        &mut t,
        &events_from("a.yaml", &mk_route("ra", "/a", &[("web", 1)])),
    );
    apply_all(
        &mut t,
        &events_from("b.yaml", &mk_route("rb", "/b", &[("web", 1)])),
    );
    apply_all(&mut t, &events("c1", &mk_route("rn", "/n", &[("web", 1)])));
    apply_all(
        &mut t,
        &events_from("a.yaml", &mk_route("ra", "/a", &[("web", 1)])),
    );
    // Another cluster's objects from a file of the same name are not this resync's business.
    apply_all(&mut t, &events("c2", &mk_route("ra", "/a", &[("web", 1)])));
    let base_keys: Vec<ResourceKey> = t
        .resources()
        .filter(|r| r.key.cluster == "c1" && t.origin(&r.key) == Some("base.yaml"))
        .map(|r| r.key.clone())
        .collect();
    assert_eq!(base_keys.len(), 4);
    // The agent sees only base.yaml's objects; a.yaml could not be read: its object stays,
    // b.yaml's and the origin-less route go.
    apply_all(&mut t, &[resync("c1", base_keys.clone(), &["a.yaml"])]);
    let left: Vec<String> = t.resources().map(|r| r.key.to_string()).collect();
    assert_eq!(left.len(), 6, "{left:?}");
    assert!(t.resource(&key(Kind::HTTPRoute, "app", "ra")).is_some());
    assert!(t.resource(&key(Kind::HTTPRoute, "app", "rb")).is_none());
    assert!(t.resource(&key(Kind::HTTPRoute, "app", "rn")).is_none());
    assert!(t
        .resource(&ResourceKey::new("c2", Kind::HTTPRoute, "app", "ra"))
        .is_some());
    // a.yaml repaired and no longer defining ra: the next resync drops it.
    apply_all(&mut t, &[resync("c1", base_keys, &[])]);
    assert!(t.resource(&key(Kind::HTTPRoute, "app", "ra")).is_none());
    assert_eq!(t.origin(&key(Kind::HTTPRoute, "app", "ra")), None);
}

#[test]
fn sibling_cluster_with_same_names_is_independent() {
    let mut t = Translator::new();
    apply_all(
        &mut t,
        &events(
            "c1",
            &format!("{BASE}---\n{}", mk_route("r", "/a", &[("web", 1)])),
        ),
    );
    apply_all(
        &mut t,
        &events(
            "c2",
            &format!("{BASE}---\n{}", mk_route("r", "/b", &[("web", 1)])),
        ),
    );
    assert_eq!(t.gateways().len(), 2);
    let del = ResourceEvent {
        cluster: "c2".into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: ResourceKey::new("c2", Kind::HTTPRoute, "app", "r"),
        },
    };
    let ch = apply_all(&mut t, &[del]);
    let ids: Vec<&str> = ch.updated.iter().map(|g| g.gateway.as_str()).collect();
    assert_eq!(ids, vec!["c2/infra/gw"]);
}

#[test]
fn event_key_must_belong_to_its_cluster() {
    let mut t = Translator::new();
    let bad = ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: ResourceKey::new("c2", Kind::HTTPRoute, "app", "r"),
        },
    };
    assert!(matches!(t.apply(&bad), Err(Error::InvalidEvent { .. })));
}

/// A world folded at once ([`Translator::apply_all`]: objects parsed on every core) is that
/// world folded one event at a time: the same result for each event, in order (refused events
/// among them), and the same objects, origins, statuses and output. Enough events that the
/// parsing is split across threads.
#[test]
fn folding_a_batch_equals_folding_each_event() {
    let mut evs = events_from("world.yaml", web_world!());
    for i in 0..700 {
        let text = mk_route(&format!("r{i}"), &format!("/p{}", i % 97), &[("web", 1)]);
        evs.extend(events_from(&format!("routes/{}.yaml", i % 7), &text));
    }
    // Refused in the middle: an object its event's key does not name, an apiVersion outside
    // its kind's group, a key of another cluster.
    let mut wrong_key = events("c1", &mk_route("r1", "/x", &[("web", 1)])).remove(0);
    if let EventBody::Upsert { key, .. } = &mut wrong_key.body {
        key.name = "someone-else".into();
    }
    evs.insert(300, wrong_key);
    let mut refused = events("c1", &mk_route("r2", "/y", &[("web", 1)])).remove(0);
    if let EventBody::Upsert { object, .. } = &mut refused.body {
        object["apiVersion"] = "example.com/v1".into();
    }
    evs.insert(301, refused);
    evs.insert(
        302,
        ResourceEvent {
            cluster: "c1".into(),
            source: "test".into(),
            body: EventBody::Delete {
                key: ResourceKey::new("c2", Kind::HTTPRoute, "app", "r3"),
            },
        },
    );
    // Later events act on earlier ones: deletes, a route changed, and a resync that keeps the
    // world's file and three of the seven route files.
    evs.push(ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: key(Kind::HTTPRoute, "app", "r5"),
        },
    });
    evs.extend(events_from(
        "routes/moved.yaml",
        &mk_route("r8", "/moved", &[("web", 1)]),
    ));
    evs.push(resync(
        "c1",
        vec![key(Kind::HTTPRoute, "app", "r13")],
        &[
            "world.yaml",
            "routes/0.yaml",
            "routes/1.yaml",
            "routes/2.yaml",
        ],
    ));

    let mut one_by_one = Translator::new();
    let want: Vec<Result<(), String>> = evs
        .iter()
        .map(|e| one_by_one.apply(e).map_err(|e| e.to_string()))
        .collect();
    let mut batch = Translator::new();
    let got: Vec<Result<(), String>> = batch
        .apply_all(evs.clone())
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.iter().filter(|r| r.is_err()).count(), 3, "{got:?}");

    let keys = |t: &Translator| -> Vec<(ResourceKey, Option<String>)> {
        t.resources()
            .map(|r| (r.key.clone(), t.origin(&r.key).map(str::to_string)))
            .collect()
    };
    assert_eq!(keys(&batch), keys(&one_by_one));
    // The resync kept r13 by key, and routes 0-2 by file: some routes went, some stayed.
    let routes = keys(&batch)
        .iter()
        .filter(|(k, _)| k.kind == Kind::HTTPRoute)
        .count();
    assert!((300..700).contains(&routes), "{routes} routes left");
    batch.recompute();
    one_by_one.recompute();
    assert_eq!(batch.gateways(), one_by_one.gateways());
    for r in one_by_one.resources() {
        assert_eq!(batch.status(&r.key), one_by_one.status(&r.key), "{}", r.key);
    }
}

/// Namespace objects are honoured as Envoy Gateway honours them: in a cluster that declares its
/// namespaces (a Kubernetes agent sends them all), a route in a namespace it does not declare
/// attaches nowhere; declaring the namespace later attaches it; a cluster that declares none
/// (files) has every namespace its objects name.
#[test]
fn a_route_in_an_undeclared_namespace_attaches_nowhere() {
    const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: infra}\n";
    let route = mk_route("r", "/", &[("web", 1)]);
    let accepted = |t: &Translator| -> String {
        let st = t
            .status(&key(Kind::HTTPRoute, "app", "r"))
            .expect("route status");
        let cond = st["parents"][0]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted"))
            .expect("Accepted");
        format!(
            "{} {}",
            cond["status"].as_str().unwrap_or(""),
            cond["reason"].as_str().unwrap_or("")
        )
    };
    let attached = |t: &Translator| -> i64 {
        let gw = t
            .status(&key(Kind::Gateway, "infra", "gw"))
            .expect("gateway status");
        gw["listeners"][0]["attachedRoutes"].as_i64().unwrap_or(-1)
    };

    // No Namespace objects: every namespace exists.
    let mut t = Translator::new();
    apply_all(
        &mut t,
        &events("c1", &format!("{}---\n{route}", web_world!())),
    );
    assert_eq!(accepted(&t), "True Accepted");
    assert_eq!(attached(&t), 1);

    // The cluster declares `infra` only: the route in `app` is not allowed.
    apply_all(&mut t, &events("c1", NAMESPACES));
    assert_eq!(accepted(&t), "False NotAllowedByListeners");
    assert_eq!(attached(&t), 0);
    assert!(
        route_config(&t, "c1/infra/gw")
            .virtual_hosts
            .iter()
            .all(|v| v.routes.is_empty()),
        "no route served"
    );

    // Declared later: attached again.
    apply_all(
        &mut t,
        &events(
            "c1",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n",
        ),
    );
    assert_eq!(accepted(&t), "True Accepted");
    assert_eq!(attached(&t), 1);
    crate::incremental_tests::assert_same_as_rebuilt(&t, 3);

    // Another cluster's Namespace objects say nothing of this one's.
    let mut t = Translator::new();
    apply_all(&mut t, &events("c2", NAMESPACES));
    apply_all(
        &mut t,
        &events("c1", &format!("{}---\n{route}", web_world!())),
    );
    assert_eq!(accepted(&t), "True Accepted");
}

/// The real Envoy for validation tests: `$ENVOY_BIN`, else where `scripts/setup.sh` installs it.
/// Missing Envoy fails the test: these checks are what keeps rejected config away from proxies.
pub(crate) fn envoy_bin() -> String {
    let envoy = std::env::var("ENVOY_BIN")
        .unwrap_or_else(|_| "/opt/flotilla-tools/venv/bin/envoy".to_string());
    assert!(
        std::path::Path::new(&envoy).exists(),
        "no Envoy binary at {envoy}: run scripts/setup.sh or set ENVOY_BIN"
    );
    envoy
}

/// Runs the real Envoy's `--mode validate` on a bootstrap holding `listeners` and `clusters`
/// statically, with an ADS cluster `xds` for what they take over xDS (routes, secrets), as a
/// node of gateway `gateway`.
pub(crate) fn envoy_validate_static(
    listeners: Vec<envoy_types::pb::envoy::config::listener::v3::Listener>,
    mut clusters: Vec<envoy_types::pb::envoy::config::cluster::v3::Cluster>,
    gateway: &str,
) -> Result<(), String> {
    use envoy_types::pb::envoy::config::bootstrap::v3::{bootstrap, Bootstrap};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{
        api_config_source, grpc_service, ApiConfigSource, ApiVersion, GrpcService,
        Http2ProtocolOptions, Node,
    };
    #[allow(deprecated)]
    clusters.push(Cluster {
        name: "xds".into(),
        http2_protocol_options: Some(Http2ProtocolOptions::default()),
        ..Default::default()
    });
    let bootstrap = Bootstrap {
        node: Some(Node {
            id: "test".into(),
            cluster: gateway.into(),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: "xds".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    envoy_validate(&bootstrap.encode_to_vec(), gateway)
}

/// Runs the real Envoy's `--mode validate` on an encoded bootstrap; `Err` holds what Envoy said.
/// The node names `gateway` (SDS subscriptions need a node, as every real bootstrap has).
pub(crate) fn envoy_validate(bootstrap: &[u8], gateway: &str) -> Result<(), String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("flotilla-validate-{}-{n}.pb", std::process::id()));
    std::fs::write(&path, bootstrap).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(envoy_bin())
        .args(["--service-node", "validate", "--service-cluster", gateway])
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.map_err(|e| format!("running envoy: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn gateway_conditions(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn c3(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[test]
fn gateway_level_conditions() {
    let gw = key(Kind::Gateway, "infra", "gw");
    let mut t = Translator::new();
    apply_all(&mut t, &events("c1", BASE));
    assert_eq!(
        gateway_conditions(t.status(&gw).unwrap()),
        vec![
            c3("Accepted", "True", "Accepted"),
            c3("Programmed", "True", "Programmed")
        ]
    );
    // Envoy Gateway's translator view carries neither (its status updater writes them).
    assert!(t
        .translator_status(&gw)
        .unwrap()
        .get("conditions")
        .is_none());
    assert!(t
        .translator_status(&key(Kind::GatewayClass, "", "eg"))
        .is_none());

    let bad = BASE.replace("protocol: HTTP", "protocol: SCTP");
    let mut t = Translator::new();
    apply_all(&mut t, &events("c1", &bad));
    assert_eq!(
        gateway_conditions(t.status(&gw).unwrap()),
        vec![
            c3("Accepted", "False", "ListenersNotValid"),
            c3("Programmed", "False", "Invalid")
        ]
    );

    let params = BASE.replace(
        "  gatewayClassName: eg\n",
        "  gatewayClassName: eg\n  infrastructure: {parametersRef: {group: invalid.io, kind: InvalidParameters, name: x}}\n",
    );
    let mut t = Translator::new();
    apply_all(&mut t, &events("c1", &params));
    assert_eq!(
        gateway_conditions(t.status(&gw).unwrap())[0],
        c3("Accepted", "False", "InvalidParameters")
    );
}

/// Folds every object of `text` (cluster `c1`) into a new translator and translates once: the
/// builder the test modules share.
pub(crate) fn translate_yaml(text: &str) -> Translator {
    let mut t = Translator::new();
    apply_all(&mut t, &events("c1", text));
    t
}

/// Multi-Cluster Services: a ServiceImport's endpoints are its own cluster's at priority 0
/// and those of every cluster exporting the Service behind them (priority 1, one locality
/// per cluster); a change in another cluster's export recomputes the importing gateway.
#[test]
fn service_import_fails_over_to_exporting_clusters() {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let mut t = Translator::new();
    let export = |ip: &str| {
        format!(
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: pool, namespace: app}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: pool, namespace: app}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: pool-1, namespace: app, labels: {{kubernetes.io/service-name: pool}}}}\naddressType: IPv4\nports: [{{name: http, port: 9000}}]\nendpoints: [{{addresses: [{ip}]}}]\n"
        )
    };
    let import = "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\nmetadata: {name: pool, namespace: app}\nspec: {type: ClusterSetIP, ports: [{name: http, port: 80, protocol: TCP}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\nspec:\n  parentRefs: [{name: gw, namespace: infra}]\n  rules:\n  - backendRefs: [{group: multicluster.x-k8s.io, kind: ServiceImport, name: pool, port: 80}]\n";
    apply_all(
        &mut t,
        &events(
            "east",
            &format!("{BASE}---\n{import}---\n{}", export("10.0.0.1")),
        ),
    );
    let cla = |t: &Translator| {
        let g = &t.gateways()["east/infra/gw"];
        let r = g
            .resources
            .iter()
            .find(|r| r.type_url == type_url::ENDPOINT && r.name.contains("serviceimport/app/pool"))
            .expect("the import's endpoints");
        let cla = ClusterLoadAssignment::decode(r.body.clone()).unwrap();
        cla.endpoints
            .iter()
            .map(|l| {
                let zone = l.locality.as_ref().map(|z| z.zone.clone()).unwrap_or_default();
                let ips: Vec<String> = l
                    .lb_endpoints
                    .iter()
                    .map(|e| {
                        let Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else { panic!() };
                        let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) = ep.address.as_ref().unwrap().address.as_ref() else { panic!() };
                        sa.address.clone()
                    })
                    .collect();
                (l.priority, zone, ips)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cla(&t),
        vec![(0, String::new(), vec!["10.0.0.1".to_string()])]
    );

    // Another cluster exports the same Service: the east gateway gets it as a failover.
    let ch = apply_all(&mut t, &events("west", &export("10.1.0.1")));
    let ids: Vec<&str> = ch.updated.iter().map(|g| g.gateway.as_str()).collect();
    assert_eq!(ids, vec!["east/infra/gw"]);
    assert_eq!(
        cla(&t),
        vec![
            (0, String::new(), vec!["10.0.0.1".to_string()]),
            (1, "west".to_string(), vec!["10.1.0.1".to_string()]),
        ]
    );
    // Its endpoints move: recomputed again.
    let ch = apply_all(
        &mut t,
        &events("west", export("10.1.0.2").split("---\n").last().unwrap()),
    );
    assert_eq!(ch.updated.len(), 1);
    assert_eq!(cla(&t)[1].2, vec!["10.1.0.2".to_string()]);
    // West stops exporting: only the local endpoints remain.
    let unexport = ResourceEvent {
        cluster: "west".into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: ResourceKey::new("west", Kind::ServiceExport, "app", "pool"),
        },
    };
    t.apply(&unexport).unwrap();
    let ch = t.recompute();
    assert_eq!(ch.updated.len(), 1);
    assert_eq!(
        cla(&t),
        vec![(0, String::new(), vec!["10.0.0.1".to_string()])]
    );
}
