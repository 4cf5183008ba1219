//! Standalone mode (one node, embedded bus) and the watch service over real gRPC.

mod common;

use common::*;
use flotilla_proto::watch::watch_client::WatchClient;
use flotilla_proto::watch::{WatchRequest, WatchResponse};
use flotilla_store::EmbeddedBus;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

const T: Duration = Duration::from_secs(10);

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> TestResult<WatchResponse> {
    match tokio::time::timeout(T, stream.next()).await? {
        Some(r) => Ok(r?),
        None => Err("watch stream ended".into()),
    }
}

#[tokio::test]
async fn standalone_node_serves_watch_deltas() -> TestResult {
    init_tracing();
    let bus = Arc::new(EmbeddedBus::new());
    let (_dir, node, peers) = start_single(&bus).await?;
    eventually("leader", T, || node.node.leader() == Some(1)).await?;

    for ev in events(BASE)? {
        bus.publish_event(&ev)?;
    }
    eventually("gateway translated", T, || {
        let s = node.node.state();
        s.last_seq() == 3 && s.view().gateways().contains_key(GATEWAY_ID)
    })
    .await?;

    let mut client = WatchClient::connect(format!("http://{}", node.addr)).await?;

    // since = 0: the full state.
    let mut s = client
        .watch(WatchRequest {
            since_revision: 0,
            edge_id: "e1".into(),
        })
        .await?
        .into_inner();
    let first = next(&mut s).await?;
    assert!(first.full_state);
    assert_eq!(first.revision, node.node.revision());
    assert_eq!(first.gateways.len(), 1);
    assert_eq!(first.gateways[0].gateway, GATEWAY_ID);
    assert!(!first.gateways[0].resources.is_empty());
    let rev0 = first.revision;

    // A route change: a delta with the gateway's complete new resource set.
    bus.publish_event(&events(&route("r1", "/a"))?.remove(0))?;
    let delta = next(&mut s).await?;
    assert!(!delta.full_state);
    assert!(delta.revision > rev0);
    assert_eq!(delta.gateways.len(), 1);
    assert_eq!(delta.gateways[0].gateway, GATEWAY_ID);
    assert_ne!(delta.gateways[0].resources, first.gateways[0].resources);

    // A second watcher that already has rev0 gets only the change since.
    let mut s2 = client
        .watch(WatchRequest {
            since_revision: rev0,
            edge_id: "e2".into(),
        })
        .await?
        .into_inner();
    let d2 = next(&mut s2).await?;
    assert!(!d2.full_state);
    assert_eq!(d2.revision, delta.revision);
    assert_eq!(d2.gateways, delta.gateways);

    // One that is current gets an empty first answer at the current revision.
    let mut s3 = client
        .watch(WatchRequest {
            since_revision: delta.revision,
            edge_id: "e3".into(),
        })
        .await?
        .into_inner();
    let d3 = next(&mut s3).await?;
    assert!(!d3.full_state && d3.gateways.is_empty() && d3.removed_gateways.is_empty());
    assert_eq!(d3.revision, delta.revision);

    // Deleting the gateway: reported as removed.
    let gw_key = events(BASE)?
        .into_iter()
        .find_map(|e| match e.body {
            flotilla_model::EventBody::Upsert { key, .. }
                if key.kind == flotilla_model::Kind::Gateway =>
            {
                Some(key)
            }
            _ => None,
        })
        .ok_or("no gateway key")?;
    bus.publish_event(&flotilla_model::ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: flotilla_model::EventBody::Delete { key: gw_key },
    })?;
    let removed = next(&mut s3).await?;
    assert_eq!(removed.removed_gateways, vec![GATEWAY_ID.to_string()]);
    assert!(removed.gateways.is_empty());

    // Restart: same revision and state, before anything new is published.
    let counts = |n: &TestNode| {
        let s = n.node.state();
        (s.revision(), s.last_seq(), s.view().resource_count())
    };
    let before = counts(&node);
    node.stop().await?;
    let node = restart_node(1, &node, &peers, bus.clone()).await?;
    node.node.wait_ready().await;
    let after = counts(&node);
    assert!(after.0 >= before.0);
    assert_eq!((after.1, after.2), (before.1, before.2));
    node.stop().await?;
    Ok(())
}

/// Standalone restarted on its data dir gets a fresh bus whose sequences start at 1 again.
/// They are a new epoch: the state folds them instead of mistaking them for the sequences it
/// applied before the restart (which lost every edit made while it was down).
#[tokio::test]
async fn a_restarted_standalone_applies_its_new_bus_from_the_start() -> TestResult {
    init_tracing();
    let bus = Arc::new(EmbeddedBus::new());
    let (_dir, node, peers) = start_single(&bus).await?;
    let evs = events(&format!("{BASE}---\n{}", route("r1", "/a")))?;
    for ev in &evs {
        bus.publish_event(ev)?;
    }
    eventually("first life applied", T, || {
        node.node.state().last_seq() == 4
    })
    .await?;
    node.stop().await?;

    // Second life: a new bus, and the agent publishes the edited route first (sequence 1).
    let bus = Arc::new(EmbeddedBus::new());
    let node = restart_node(1, &node, &peers, bus.clone()).await?;
    node.node.wait_ready().await;
    let edited = events(&route("r1", "/edited"))?;
    assert_eq!(bus.publish_event(&edited[0])?, 1);
    eventually("the edit made while down is applied", T, || {
        let s = node.node.state();
        let found = s
            .view()
            .resources()
            .any(|r| r.raw.to_string().contains("/edited"));
        found
    })
    .await?;
    let s = node.node.state();
    assert_eq!(s.last_seq(), 1);
    assert_eq!(s.counters().events_applied, 5);
    node.stop().await?;
    Ok(())
}

/// The Raft core stops under a running node (here: shut down behind its back; a panic is
/// followed the same way, see `node::tests`): the node stops serving at once (readiness
/// false, watch streams end) and reports the failure, instead of answering ready with a state
/// that will never move again.
#[tokio::test]
async fn a_stopped_raft_core_stops_the_node() -> TestResult {
    init_tracing();
    let bus = Arc::new(EmbeddedBus::new());
    let (_dir, node, _peers) = start_single(&bus).await?;
    eventually("ready", T, || node.node.is_ready()).await?;
    for ev in events(BASE)? {
        bus.publish_event(&ev)?;
    }
    eventually("applied", T, || node.node.state().last_seq() == 3).await?;
    let mut client = WatchClient::connect(format!("http://{}", node.addr)).await?;
    let mut s = client
        .watch(WatchRequest {
            since_revision: 0,
            edge_id: "e1".into(),
        })
        .await?
        .into_inner();
    assert!(next(&mut s).await?.full_state);

    node.node.raft().shutdown().await?;
    eventually("not ready", T, || !node.node.is_ready()).await?;
    let failed = tokio::time::timeout(T, node.node.stopped()).await?;
    let why = failed.expect_err("a stopped core is a failure").to_string();
    assert!(why.contains("raft stopped"), "{why}");
    // The edge's stream ends (with an error or a close), so it moves to another replica.
    match tokio::time::timeout(T, s.next()).await? {
        None | Some(Err(_)) => {}
        Some(Ok(r)) => return Err(format!("the stream went on: {r:?}").into()),
    }
    Ok(())
}
