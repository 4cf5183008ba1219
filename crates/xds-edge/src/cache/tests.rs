use flotilla_proto::watch::XdsResource;

use super::*;

const T: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

fn mk_res(name: &str, version: &str) -> XdsResource {
    XdsResource {
        type_url: T.into(),
        name: name.into(),
        version: version.into(),
        body: Bytes::from(format!("{name}@{version}")),
    }
}

fn mk_gw(id: &str, res: &[(&str, &str)]) -> GatewayResources {
    GatewayResources {
        gateway: id.into(),
        resources: res.iter().map(|(n, v)| mk_res(n, v)).collect(),
    }
}

fn resp(revision: u64, full: bool, gws: Vec<GatewayResources>, removed: &[&str]) -> WatchResponse {
    WatchResponse {
        revision,
        full_state: full,
        gateways: gws,
        removed_gateways: removed.iter().map(|s| s.to_string()).collect(),
    }
}

fn cache() -> Cache {
    Cache::new(Arc::new(StatsInner::default()))
}

fn versions(s: &GatewaySnapshot) -> Vec<(String, String)> {
    s.iter()
        .flat_map(|g| g.resources.values())
        .flat_map(|m| m.iter())
        .map(|(n, r)| (n.to_string(), r.version.to_string()))
        .collect()
}

#[test]
fn synced_only_after_full_state() {
    let c = cache();
    assert!(!c.is_synced());
    assert_eq!(
        c.apply(resp(3, false, vec![mk_gw("a/b/c", &[("x", "1")])], &[])),
        Applied::Applied
    );
    assert!(!c.is_synced());
    c.apply(resp(4, true, vec![mk_gw("a/b/c", &[("x", "1")])], &[]));
    assert!(c.is_synced());
    assert_eq!(c.revision(), 4);
}

#[test]
fn stale_revision_ignored_once_synced() {
    let c = cache();
    c.apply(resp(10, true, vec![mk_gw("a/b/c", &[("x", "1")])], &[]));
    assert_eq!(
        c.apply(resp(9, false, vec![mk_gw("a/b/c", &[("x", "0")])], &[])),
        Applied::Stale
    );
    assert_eq!(c.apply(resp(10, true, vec![], &[])), Applied::Stale);
    assert_eq!(
        versions(&c.gateway("a/b/c")),
        vec![("x".into(), "1".into())]
    );
    assert_eq!(c.revision(), 10);
}

#[test]
fn watch_wakes_only_on_own_change() {
    let c = cache();
    c.apply(resp(
        1,
        true,
        vec![mk_gw("a/b/c", &[("x", "1")]), mk_gw("a/b/d", &[("y", "1")])],
        &[],
    ));
    let mut rx_c = c.subscribe("a/b/c");
    let mut rx_d = c.subscribe("a/b/d");
    rx_c.borrow_and_update();
    rx_d.borrow_and_update();
    // d changes, c is re-sent unchanged: only d wakes.
    c.apply(resp(
        2,
        false,
        vec![mk_gw("a/b/c", &[("x", "1")]), mk_gw("a/b/d", &[("y", "2")])],
        &[],
    ));
    assert!(!rx_c.has_changed().unwrap_or(true));
    assert!(rx_d.has_changed().unwrap_or(false));
    // The silent update still records the newer revision.
    assert_eq!(rx_c.borrow().as_ref().map(|g| g.revision), Some(2));
}

#[test]
fn absent_gateway_then_created_then_removed() {
    let c = cache();
    c.apply(resp(1, true, vec![], &[]));
    let mut rx = c.subscribe("a/b/new");
    assert!(rx.borrow_and_update().is_none());
    c.apply(resp(2, false, vec![mk_gw("a/b/new", &[("x", "1")])], &[]));
    assert!(rx.has_changed().unwrap_or(false));
    assert!(rx.borrow_and_update().is_some());
    c.apply(resp(3, false, vec![], &["a/b/new"]));
    assert!(rx.has_changed().unwrap_or(false));
    assert!(rx.borrow_and_update().is_none());
}

#[test]
fn full_state_removes_unlisted() {
    let c = cache();
    c.apply(resp(
        1,
        true,
        vec![mk_gw("a/b/c", &[("x", "1")]), mk_gw("a/b/d", &[("y", "1")])],
        &[],
    ));
    c.apply(resp(5, true, vec![mk_gw("a/b/d", &[("y", "1")])], &[]));
    assert!(c.gateway("a/b/c").is_none());
    assert!(c.gateway("a/b/d").is_some());
}

#[test]
fn unchanged_resources_share_bytes() {
    let c = cache();
    c.apply(resp(
        1,
        true,
        vec![mk_gw("a/b/c", &[("x", "1"), ("y", "1")])],
        &[],
    ));
    let before = c.gateway("a/b/c");
    c.apply(resp(
        2,
        false,
        vec![mk_gw("a/b/c", &[("x", "1"), ("y", "2")])],
        &[],
    ));
    let after = c.gateway("a/b/c");
    let get = |s: &GatewaySnapshot, n: &str| {
        s.as_ref()
            .and_then(|g| g.of_type(T))
            .and_then(|m| m.get(n))
            .cloned()
    };
    let (bx, ax) = (get(&before, "x"), get(&after, "x"));
    assert!(matches!((&bx, &ax), (Some(b), Some(a)) if Arc::ptr_eq(b, a)));
    assert_eq!(
        get(&after, "y").map(|r| r.version.to_string()),
        Some("2".into())
    );
}

#[test]
fn release_drops_unused_absent_channels() {
    let c = cache();
    c.apply(resp(1, true, vec![], &[]));
    let rx = c.subscribe("x/y/z");
    drop(rx);
    c.release("x/y/z");
    assert!(c.lock().gateways.is_empty());
}
