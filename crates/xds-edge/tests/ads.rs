//! In-process tests: fake store -> edge -> ADS client, over real gRPC on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use support::*;

/// Base state: two clusters, one endpoint set, one listener, one route configuration.
fn base() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (CDS, "c1", "v1"),
        (CDS, "c2", "v1"),
        (EDS, "c1", "v1"),
        (LDS, "l1", "v1"),
        (RDS, "r1", "v1"),
    ]
}

async fn setup() -> (FakeStore, Conn, TestEdge) {
    init_tracing();
    let mut store = FakeStore::start().await;
    let edge = TestEdge::start(vec![store.url.clone()]).await;
    let conn = store.next_conn().await;
    assert_eq!(conn.req.since_revision, 0);
    assert_eq!(conn.req.edge_id, "test-edge");
    conn.send(full(1, vec![gw(GW, &base())])).await;
    edge.wait_revision(1).await;
    (store, conn, edge)
}

#[tokio::test]
async fn waits_for_sync_then_serves_wildcard_and_named() {
    init_tracing();
    let mut store = FakeStore::start().await;
    let edge = TestEdge::start(vec![store.url.clone()]).await;
    let conn = store.next_conn().await;

    // A proxy connecting before the edge has the full state gets nothing (not an empty config).
    let mut d = Delta::open(&edge).await;
    d.subscribe(CDS, &[]).await;
    d.expect_quiet().await;
    assert!(!edge.edge.stats().synced);

    conn.send(full(1, vec![gw(GW, &base())])).await;
    let r = d.recv_ack().await;
    assert_eq!(r.type_url, CDS);
    assert_eq!(names(&r), map(&[("c1", "v1"), ("c2", "v1")]));
    assert_eq!(r.system_version_info, "1");
    assert!(r.removed_resources.is_empty());
    assert_eq!(
        r.resources[0].resource.as_ref().map(|a| a.value.clone()),
        Some(b"c1@v1".to_vec())
    );

    d.subscribe(LDS, &[]).await;
    let r = d.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), names(&r)),
        (LDS, map(&[("l1", "v1")]))
    );

    d.subscribe(EDS, &["c1"]).await;
    let r = d.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), names(&r)),
        (EDS, map(&[("c1", "v1")]))
    );

    // A name that does not exist is reported as removed (so Envoy does not wait for it).
    d.subscribe(RDS, &["r1", "nope"]).await;
    let r = d.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), names(&r)),
        (RDS, map(&[("r1", "v1")]))
    );
    assert_eq!(r.removed_resources, vec!["nope".to_string()]);
    d.expect_quiet().await;

    edge.wait_stats(|s| {
        s.synced
            && (
                s.revision,
                s.max_revision_served,
                s.streams,
                s.acks,
                s.nacks,
            ) == (1, 1, 1, 4, 0)
    })
    .await;
}

#[tokio::test]
async fn empty_first_answer_for_unknown_gateway_and_types() {
    let (_store, conn, edge) = setup().await;
    let mut d = Delta::open(&edge).await;
    d.send(DeltaDiscoveryRequest {
        node: node("east/ns/other"),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let r = d.recv_ack().await;
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    // Garbage type URLs are ignored, the stream lives on.
    d.send(DeltaDiscoveryRequest {
        type_url: "garbage".into(),
        ..Default::default()
    })
    .await;
    d.expect_quiet().await;
    // The gateway appears later: the stream gets it.
    conn.send(delta(2, vec![gw("east/ns/other", &[(CDS, "x", "v1")])]))
        .await;
    let r = d.recv_ack().await;
    assert_eq!(names(&r), map(&[("x", "v1")]));
    assert_eq!(r.system_version_info, "2");
}

#[tokio::test]
async fn change_sends_only_changed_and_orders_removals() {
    let (_store, conn, edge) = setup().await;
    let mut d = Delta::open(&edge).await;
    for (t, n) in [
        (CDS, vec![]),
        (EDS, vec!["c1", "c2"]),
        (LDS, vec![]),
        (RDS, vec!["r1"]),
    ] {
        d.subscribe(t, &n).await;
        d.recv_ack().await;
    }
    // An unrelated gateway changing wakes nobody here.
    conn.send(delta(2, vec![gw("west/ns/gw", &[(CDS, "z", "v1")])]))
        .await;
    d.expect_quiet().await;

    // One cluster changes: one response, one resource.
    let mut s = base();
    s[1] = (CDS, "c2", "v2");
    conn.send(delta(3, vec![gw(GW, &s)])).await;
    let r = d.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), names(&r)),
        (CDS, map(&[("c2", "v2")]))
    );
    assert_eq!(r.system_version_info, "3");
    d.expect_quiet().await;

    // Add c3 + its endpoints + a new route, and change the listener: clusters -> endpoints ->
    // listeners -> routes.
    let s = vec![
        (CDS, "c1", "v1"),
        (CDS, "c2", "v2"),
        (CDS, "c3", "v1"),
        (EDS, "c1", "v1"),
        (EDS, "c2", "v1"),
        (LDS, "l1", "v2"),
        (RDS, "r1", "v2"),
    ];
    conn.send(delta(4, vec![gw(GW, &s)])).await;
    let order: Vec<(String, Vec<String>)> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            let r = d.recv_ack().await;
            v.push((r.type_url.clone(), names(&r).into_keys().collect()));
        }
        v
    };
    let ty: Vec<&str> = order.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(ty, vec![CDS, EDS, LDS, RDS]);
    assert_eq!(order[0].1, vec!["c3"]);
    assert_eq!(order[1].1, vec!["c2"]);

    // Remove c3 and c2's endpoints and change the route: the route goes first, then the
    // cluster and endpoint removals.
    let s = vec![
        (CDS, "c1", "v1"),
        (CDS, "c2", "v2"),
        (EDS, "c1", "v1"),
        (LDS, "l1", "v2"),
        (RDS, "r1", "v3"),
    ];
    conn.send(delta(5, vec![gw(GW, &s)])).await;
    let r = d.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), names(&r)),
        (RDS, map(&[("r1", "v3")]))
    );
    let r = d.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), r.removed_resources.clone()),
        (CDS, vec!["c3".to_string()])
    );
    let r = d.recv_ack().await;
    assert_eq!(
        (r.type_url.as_str(), r.removed_resources.clone()),
        (EDS, vec!["c2".to_string()])
    );
    d.expect_quiet().await;

    // Gateway removed: everything the proxy has is removed, listeners first.
    conn.send(delta_removed(6, GW)).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let r = d.recv_ack().await;
        assert!(r.resources.is_empty());
        got.push((r.type_url.clone(), r.removed_resources.len()));
    }
    let ty: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(ty, vec![LDS, RDS, CDS, EDS]);
    assert_eq!(edge.edge.stats().max_revision_served, 6);
}

fn delta_removed(rev: u64, gateway: &str) -> flotilla_proto::watch::WatchResponse {
    let mut r = delta(rev, vec![]);
    r.removed_gateways.push(gateway.into());
    r
}

#[tokio::test]
async fn unsubscribe_stops_updates() {
    let (_store, conn, edge) = setup().await;
    let mut d = Delta::open(&edge).await;
    d.subscribe(EDS, &["c1"]).await;
    d.recv_ack().await;
    d.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_unsubscribe: vec!["c1".into()],
        ..Default::default()
    })
    .await;
    let mut s = base();
    s[2] = (EDS, "c1", "v2");
    conn.send(delta(2, vec![gw(GW, &s)])).await;
    d.expect_quiet().await;
    // Subscribing again sends the current version.
    d.subscribe(EDS, &["c1"]).await;
    let r = d.recv_ack().await;
    assert_eq!(names(&r), map(&[("c1", "v2")]));
}

#[tokio::test]
async fn ack_nack_semantics() {
    let (_store, conn, edge) = setup().await;
    let mut d = Delta::open(&edge).await;
    d.subscribe(CDS, &[]).await;
    d.recv_ack().await;

    // c1 v2 is rejected.
    let mut s = base();
    s[0] = (CDS, "c1", "v2");
    conn.send(delta(2, vec![gw(GW, &s)])).await;
    let r = d.recv().await;
    assert_eq!(names(&r), map(&[("c1", "v2")]));
    d.nack(&r).await;
    d.expect_quiet().await; // not resent in a loop

    // Another change: c2 is sent, the rejected c1 v2 is not.
    s[1] = (CDS, "c2", "v2");
    conn.send(delta(3, vec![gw(GW, &s)])).await;
    let r = d.recv_ack().await;
    assert_eq!(names(&r), map(&[("c2", "v2")]));

    // c1 back to v1: the proxy still has v1 (the NACK did not count v2 as its), nothing sent.
    s[0] = (CDS, "c1", "v1");
    conn.send(delta(4, vec![gw(GW, &s)])).await;
    d.expect_quiet().await;

    // The rejected version again: still not resent. A new version: sent.
    s[0] = (CDS, "c1", "v2");
    conn.send(delta(5, vec![gw(GW, &s)])).await;
    d.expect_quiet().await;
    s[0] = (CDS, "c1", "v3");
    conn.send(delta(6, vec![gw(GW, &s)])).await;
    let r = d.recv_ack().await;
    assert_eq!(names(&r), map(&[("c1", "v3")]));

    edge.wait_stats(|s| s.acks == 3 && s.nacks == 1).await;
}

#[tokio::test]
async fn reconnect_with_initial_versions_sends_only_difference() {
    let (_store, _conn, edge) = setup().await;
    let mut d = Delta::open(&edge).await;
    d.send(DeltaDiscoveryRequest {
        node: node(GW),
        type_url: CDS.into(),
        initial_resource_versions: HashMap::from([
            ("c1".to_string(), "v1".to_string()),
            ("c2".to_string(), "v0".to_string()),
            ("gone".to_string(), "v1".to_string()),
        ]),
        ..Default::default()
    })
    .await;
    let r = d.recv_ack().await;
    assert_eq!(names(&r), map(&[("c2", "v1")]));
    assert_eq!(r.removed_resources, vec!["gone".to_string()]);

    // Everything up to date: still answered (empty), Envoy waits for it.
    let mut d2 = Delta::open(&edge).await;
    d2.send(DeltaDiscoveryRequest {
        node: node(GW),
        type_url: LDS.into(),
        initial_resource_versions: HashMap::from([("l1".to_string(), "v1".to_string())]),
        ..Default::default()
    })
    .await;
    let r = d2.recv_ack().await;
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    assert_eq!(edge.edge.stats().streams, 2);
}

#[tokio::test]
async fn invalid_node_is_rejected() {
    let (_store, _conn, edge) = setup().await;
    for cluster in [None, Some("just-a-name")] {
        let mut d = Delta::open(&edge).await;
        d.send(DeltaDiscoveryRequest {
            node: cluster.and_then(node),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
        let st = d.recv_err().await;
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert!(
            st.message().contains("CLUSTER/NAMESPACE/GATEWAY"),
            "{}",
            st.message()
        );
    }
    let mut s = Sotw::open(&edge).await;
    s.send(Default::default()).await;
    let st = tokio::time::timeout(WAIT, s.rx.message())
        .await
        .unwrap()
        .err()
        .unwrap();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn sotw_full_sets_versions_and_acks() {
    let (_store, conn, edge) = setup().await;
    let mut s = Sotw::open(&edge).await;
    s.request(CDS, &[], "", "").await;
    let r = s.recv().await;
    assert_eq!(bodies(&r), vec!["c1@v1", "c2@v1"]);
    let v1 = r.version_info.clone();
    s.request(CDS, &[], &v1, &r.nonce).await; // ACK

    s.request(EDS, &["c1"], "", "").await;
    let e = s.recv().await;
    assert_eq!(bodies(&e), vec!["c1@v1"]);
    s.request(EDS, &["c1"], &e.version_info, &e.nonce).await; // ACK
    s.expect_quiet().await;

    // One cluster changes: the full set is resent with a new version; EDS unchanged: quiet.
    let mut st = base();
    st[1] = (CDS, "c2", "v2");
    conn.send(delta(2, vec![gw(GW, &st)])).await;
    let r2 = s.recv().await;
    assert_eq!(r2.type_url, CDS);
    assert_eq!(bodies(&r2), vec!["c1@v1", "c2@v2"]);
    assert_ne!(r2.version_info, v1);
    s.expect_quiet().await;

    // A stale request (old nonce) is ignored, a NACK is counted and nothing is resent.
    s.request(CDS, &[], &v1, &r.nonce).await;
    s.expect_quiet().await;
    s.send(
        envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
            type_url: CDS.into(),
            version_info: v1.clone(),
            response_nonce: r2.nonce.clone(),
            error_detail: Some(envoy_types::pb::google::rpc::Status {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..Default::default()
        },
    )
    .await;
    s.expect_quiet().await;

    // EDS subscription change: answered with the new names.
    s.request(EDS, &["c1", "c2"], &e.version_info, &e.nonce)
        .await;
    let e2 = s.recv().await;
    assert_eq!(bodies(&e2), vec!["c1@v1"]); // c2 has no endpoints
                                            // ACKs: CDS, EDS, and the EDS re-subscription (it carries the last version + nonce).
    edge.wait_stats(|s| s.acks == 3 && s.nacks == 1).await;
}

#[tokio::test]
async fn stale_revision_is_ignored() {
    let (_store, conn, edge) = setup().await;
    let mut d = Delta::open(&edge).await;
    d.subscribe(CDS, &[]).await;
    d.recv_ack().await;
    conn.send(delta(5, vec![gw(GW, &base())])).await;
    edge.wait_revision(5).await;
    // A lagging replica's older state (even a full one) must not roll the proxy back.
    let mut s = base();
    s[0] = (CDS, "c1", "old");
    conn.send(delta(4, vec![gw(GW, &s)])).await;
    conn.send(full(5, vec![gw(GW, &s)])).await;
    d.expect_quiet().await;
    assert_eq!(edge.edge.stats().revision, 5);
    s[0] = (CDS, "c1", "new");
    conn.send(delta(6, vec![gw(GW, &s)])).await;
    let r = d.recv_ack().await;
    assert_eq!(names(&r), map(&[("c1", "new")]));
}

#[tokio::test]
async fn failover_to_second_store_resumes_from_revision() {
    init_tracing();
    let mut a = FakeStore::start().await;
    let mut b = FakeStore::start().await;
    let edge = TestEdge::start(vec![a.url.clone(), b.url.clone()]).await;
    let ca = a.next_conn().await;
    assert_eq!(ca.req.since_revision, 0);
    ca.send(full(7, vec![gw(GW, &base())])).await;
    edge.wait_revision(7).await;
    let mut d = Delta::open(&edge).await;
    d.subscribe(CDS, &[]).await;
    d.recv_ack().await;

    // Store A goes away (stream ends and the server stops).
    drop(ca);
    a.stop.cancel();
    let cb = b.next_conn().await;
    assert_eq!(cb.req.since_revision, 7);
    // B lags at first: ignored. Then it catches up.
    let mut s = base();
    s[0] = (CDS, "c1", "lagging");
    cb.send(delta(6, vec![gw(GW, &s)])).await;
    d.expect_quiet().await;
    s[0] = (CDS, "c1", "v8");
    cb.send(delta(8, vec![gw(GW, &s)])).await;
    let r = d.recv_ack().await;
    assert_eq!(names(&r), map(&[("c1", "v8")]));
    assert_eq!(r.system_version_info, "8");

    // B fails too: the edge goes back to the first store in the list... which is down, then B
    // again (round robin), resuming from 8.
    drop(cb);
    let cb2 = b.next_conn().await;
    assert_eq!(cb2.req.since_revision, 8);
    assert!(edge.edge.stats().synced);
}

#[tokio::test]
async fn slow_proxy_does_not_stall_others() {
    let (_store, conn, edge) = setup().await;
    // A proxy that subscribes and never reads: its responses (1 MiB each) fill HTTP/2 windows
    // and its stream's queue.
    let slow = Delta::open(&edge).await;
    slow.subscribe(CDS, &[]).await;
    let mut fast = Delta::open(&edge).await;
    fast.subscribe(CDS, &[]).await;
    fast.recv_ack().await;
    let big = "x".repeat(1 << 20);
    for rev in 2..12u64 {
        let version = format!("v{rev}");
        let mut g = gw(GW, &[(CDS, "c1", &version)]);
        g.resources[0].body = bytes::Bytes::from(big.clone());
        conn.send(delta(rev, vec![g])).await;
        let r = fast.recv_ack().await;
        assert_eq!(names(&r), map(&[("c1", version.as_str())]));
    }
    drop(slow);
}
