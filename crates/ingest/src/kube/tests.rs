use super::index::{origin, secret_refs, strip, KubeIndex};
use crate::IngestStats;
use flotilla_model::{EventBody, Kind};
use serde_json::{json, Value};

fn mk_route(name: &str, path: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"},
        "spec": {"parentRefs": [{"name": "gw"}],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}]}]}
    })
}

fn mk_gateway(cert: Option<&str>) -> Value {
    let mut listener = json!({"name": "http", "port": 80, "protocol": "HTTP"});
    if let Some(c) = cert {
        listener = json!({"name": "https", "port": 443, "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": c}]}});
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "flotilla", "listeners": [listener]}
    })
}

fn mk_secret(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"tls.crt": "", "tls.key": ""}
    })
}

fn summary(out: &[EventBody]) -> Vec<String> {
    out.iter()
        .map(|e| match e {
            EventBody::Upsert { key, .. } => format!("upsert {key}"),
            EventBody::Delete { key } => format!("delete {key}"),
            EventBody::Resync { keys, .. } => format!(
                "resync [{}]",
                keys.iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        })
        .collect()
}

/// Lists `objs` as the first listing of `kind`.
fn list(ix: &mut KubeIndex, kind: Kind, objs: Vec<Value>, out: &mut Vec<EventBody>) {
    let stats = IngestStats::default();
    ix.init(kind);
    for o in objs {
        ix.init_apply(kind, o);
    }
    ix.init_done(kind, &stats, out);
}

#[test]
fn status_and_resource_version_changes_publish_nothing() {
    let stats = IngestStats::default();
    let mut ix = KubeIndex::new("c");
    let mut out = Vec::new();
    ix.apply(Kind::HTTPRoute, mk_route("r", "/a"), &stats, &mut out);
    assert_eq!(summary(&out), ["upsert c/HTTPRoute/default/r"]);
    let EventBody::Upsert {
        object, origin: o, ..
    } = &out[0]
    else {
        panic!("not an upsert")
    };
    assert!(object["metadata"].get("resourceVersion").is_none());
    assert_eq!(
        o.as_deref(),
        Some("kube/gateway.networking.k8s.io/HTTPRoute")
    );
    out.clear();
    let mut changed = mk_route("r", "/a");
    changed["metadata"]["resourceVersion"] = json!("8");
    changed["metadata"]["managedFields"] = json!([{"manager": "flotilla"}]);
    changed["status"] = json!({"parents": [{"conditions": []}]});
    ix.apply(Kind::HTTPRoute, changed, &stats, &mut out);
    assert!(out.is_empty(), "{:?}", summary(&out));
    ix.apply(Kind::HTTPRoute, mk_route("r", "/b"), &stats, &mut out);
    assert_eq!(summary(&out), ["upsert c/HTTPRoute/default/r"]);
}

#[test]
fn relist_deletes_only_what_vanished_and_resyncs_only_its_kind() {
    let mut ix = KubeIndex::new("c");
    let mut out = Vec::new();
    list(
        &mut ix,
        Kind::HTTPRoute,
        vec![mk_route("a", "/a"), mk_route("b", "/b")],
        &mut out,
    );
    list(&mut ix, Kind::Gateway, vec![mk_gateway(None)], &mut out);
    out.clear();
    // After a 410: the relist lacks `b`.
    list(
        &mut ix,
        Kind::HTTPRoute,
        vec![mk_route("a", "/a")],
        &mut out,
    );
    assert_eq!(
        summary(&out),
        [
            "delete c/HTTPRoute/default/b",
            "resync [c/HTTPRoute/default/a]"
        ]
    );
    let EventBody::Resync { keep_origins, .. } = &out[1] else {
        panic!("not a resync")
    };
    assert!(keep_origins.contains(&origin(Kind::Gateway)));
    assert!(!keep_origins.contains(&origin(Kind::HTTPRoute)));
    assert_eq!(keep_origins.len(), Kind::ALL.len() - 1);
}

#[test]
fn malformed_object_is_skipped_and_counted() {
    let stats = IngestStats::default();
    let mut ix = KubeIndex::new("c");
    let mut out = Vec::new();
    let mut bad = mk_route("bad", "/x");
    bad["spec"]["rules"] = json!("not a list");
    ix.apply(Kind::HTTPRoute, bad, &stats, &mut out);
    ix.apply(Kind::HTTPRoute, mk_route("good", "/g"), &stats, &mut out);
    assert_eq!(summary(&out), ["upsert c/HTTPRoute/default/good"]);
    assert_eq!(stats.snapshot().parse_errors, 1);
}

/// An object that does not parse is reported for a Warning Event once per message: the same
/// bad object listed again says nothing new; fixed, then broken again, it is reported again.
#[test]
fn a_malformed_object_is_reported_once_per_message() {
    let stats = IngestStats::default();
    let mut ix = KubeIndex::new("c");
    let mut out = Vec::new();
    let mut bad = mk_route("bad", "/x");
    bad["metadata"]["uid"] = json!("u-1");
    bad["spec"]["rules"] = json!("not a list");
    ix.apply(Kind::HTTPRoute, bad.clone(), &stats, &mut out);
    let told = ix.take_rejections();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].key.to_string(), "c/HTTPRoute/default/bad");
    assert_eq!(told[0].api_version, "gateway.networking.k8s.io/v1");
    assert_eq!(told[0].uid.as_deref(), Some("u-1"));
    assert!(
        told[0].message.contains("spec.rules"),
        "{}",
        told[0].message
    );
    // Relisted as it is: nothing new.
    ix.apply(Kind::HTTPRoute, bad.clone(), &stats, &mut out);
    assert!(ix.take_rejections().is_empty());
    // Fixed, then broken again: told again.
    ix.apply(Kind::HTTPRoute, mk_route("bad", "/x"), &stats, &mut out);
    assert!(ix.take_rejections().is_empty());
    ix.apply(Kind::HTTPRoute, bad, &stats, &mut out);
    assert_eq!(ix.take_rejections().len(), 1);
}

#[test]
fn secrets_follow_their_references() {
    let stats = IngestStats::default();
    let mut ix = KubeIndex::new("c");
    let mut out = Vec::new();
    ix.watch_started(Kind::Secret);
    ix.watch_started(Kind::Gateway);
    list(
        &mut ix,
        Kind::Secret,
        vec![mk_secret("cert"), mk_secret("other")],
        &mut out,
    );
    // The Secrets' resync waits for the Gateways' listing.
    assert!(out.is_empty(), "{:?}", summary(&out));
    list(&mut ix, Kind::Gateway, vec![mk_gateway(None)], &mut out);
    assert_eq!(
        summary(&out),
        [
            "upsert c/Gateway/default/gw",
            "resync [c/Gateway/default/gw]",
            "resync []"
        ]
    );
    out.clear();
    ix.apply(Kind::Gateway, mk_gateway(Some("cert")), &stats, &mut out);
    assert_eq!(
        summary(&out),
        [
            "upsert c/Secret/default/cert",
            "upsert c/Gateway/default/gw"
        ]
    );
    out.clear();
    ix.apply(Kind::Gateway, mk_gateway(None), &stats, &mut out);
    assert_eq!(
        summary(&out),
        [
            "upsert c/Gateway/default/gw",
            "delete c/Secret/default/cert"
        ]
    );
    out.clear();
    ix.apply(Kind::Secret, mk_secret("other"), &stats, &mut out);
    assert!(out.is_empty());
    assert_eq!(ix.object_count(), 1);
}

#[test]
fn secret_refs_defaulted_and_explicit() {
    let btls = json!({"spec": {"validation": {"caCertificateRefs": [
        {"group": "", "kind": "ConfigMap", "name": "ca"},
        {"group": "", "kind": "Secret", "name": "s1", "namespace": "other"}]}}});
    let refs = secret_refs(Kind::BackendTLSPolicy, "default", &btls);
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        [("other".into(), "s1".into())]
    );
    let gw = mk_gateway(Some("cert"));
    let refs = secret_refs(Kind::Gateway, "default", &gw);
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        [("default".into(), "cert".into())]
    );
    // A parentRef (no kind, not a Secret field) is no Secret.
    assert!(secret_refs(Kind::HTTPRoute, "default", &mk_route("r", "/")).is_empty());
}

#[test]
fn strip_keeps_core_status_and_drops_gateway_status() {
    let mut svc = json!({"kind": "Service", "metadata": {"name": "s", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": "{}"}}, "status": {"loadBalancer": {}}});
    strip(Kind::Service, &mut svc);
    assert!(svc["metadata"].get("annotations").is_none());
    assert!(svc.get("status").is_some());
    let mut gw = mk_gateway(None);
    gw["status"] = json!({"conditions": []});
    strip(Kind::Gateway, &mut gw);
    assert!(gw.get("status").is_none());
}

#[test]
fn an_object_that_stops_parsing_stays_published_and_in_its_resync() {
    let stats = IngestStats::default();
    let mut ix = KubeIndex::new("c");
    let mut out = Vec::new();
    list(
        &mut ix,
        Kind::HTTPRoute,
        vec![mk_route("r", "/a")],
        &mut out,
    );
    out.clear();
    let mut bad = mk_route("r", "/a");
    bad["spec"]["rules"] = json!(7);
    ix.apply(Kind::HTTPRoute, bad.clone(), &stats, &mut out);
    assert!(out.is_empty(), "{:?}", summary(&out));
    // A relist that still shows it broken keeps it (better stale than gone).
    list(&mut ix, Kind::HTTPRoute, vec![bad], &mut out);
    assert_eq!(summary(&out), ["resync [c/HTTPRoute/default/r]"]);
}

#[test]
fn a_kind_that_goes_deletes_its_objects_and_releases_their_secrets() {
    let stats = IngestStats::default();
    let mut ix = KubeIndex::new("c");
    let mut out = Vec::new();
    list(&mut ix, Kind::Secret, vec![mk_secret("cert")], &mut out);
    list(
        &mut ix,
        Kind::Gateway,
        vec![mk_gateway(Some("cert"))],
        &mut out,
    );
    out.clear();
    ix.gone(Kind::Gateway, &stats, &mut out);
    assert_eq!(
        summary(&out),
        [
            "delete c/Gateway/default/gw",
            "delete c/Secret/default/cert",
            "resync []"
        ]
    );
    assert_eq!(ix.object_count(), 0);
}
