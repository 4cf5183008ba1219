//! Status publication into the NATS KV bucket: three real store nodes fed through a real
//! nats-server; only the leader writes; changes and deletions reach the bucket; a new leader
//! reconciles a bucket that is stale (extra keys, wrong values, missing keys).

mod common;

use common::*;
use flotilla_model::{EventBody, Kind, ResourceEvent, ResourceKey};
use flotilla_store::status::{self, StatusValue};
use std::collections::BTreeMap;
use std::time::Duration;

const STREAM: &str = "FLOTILLA_EVENTS";
const T: Duration = Duration::from_secs(30);
const GW_KEY: &str = "c1.Gateway.infra.gw";
const ROUTE_KEY: &str = "c1.HTTPRoute.app.r1";

type Bucket = BTreeMap<String, Option<StatusValue>>;

/// Reads the bucket until `f` holds or `T` passes.
async fn bucket_until(
    js: &async_nats::jetstream::Context,
    what: &str,
    f: impl Fn(&Bucket) -> bool,
) -> TestResult<Bucket> {
    let deadline = tokio::time::Instant::now() + T;
    let mut last = Bucket::new();
    loop {
        let reader = format!("test-{}", uuid::Uuid::new_v4().simple());
        if let Ok(b) = status::read_all(js, &reader).await {
            if f(&b) {
                return Ok(b);
            }
            last = b;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for: {what}; bucket: {last:#?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The (type, status) of every condition of a Gateway status, or of a route's parents.
fn conditions(v: &StatusValue) -> Vec<(String, String)> {
    let list: Vec<&serde_json::Value> = match v.status.get("parents") {
        Some(parents) => parents
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["conditions"].as_array().into_iter().flatten())
            .collect(),
        None => v.status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .collect(),
    };
    list.into_iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn has(v: Option<&Option<StatusValue>>, ty: &str, st: &str) -> bool {
    v.and_then(|v| v.as_ref())
        .is_some_and(|v| conditions(v).contains(&(ty.to_string(), st.to_string())))
}

/// The statuses of a node's state, as the bucket should hold them.
fn expected(n: &TestNode) -> BTreeMap<String, StatusValue> {
    status::desired(&n.node.state())
}

fn same(bucket: &Bucket, want: &BTreeMap<String, StatusValue>) -> bool {
    bucket.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| matches!(bucket.get(k), Some(Some(b)) if b.same_as(v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_publishes_statuses_and_a_new_leader_reconciles() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    let (_dirs, nodes, _peers) = start_cluster(&nats, STREAM).await?;
    for n in &nodes {
        n.node
            .publish_statuses(async_nats::connect(&nats.url).await?, n.shutdown.clone());
    }
    eventually("a leader", T, || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some()
    })
    .await?;

    // A Gateway and a route: both statuses land, with their conditions.
    publish(&js, &events(&format!("{BASE}---\n{}", route("r1", "/a")))?).await?;
    let b = bucket_until(&js, "gateway and route statuses", |b| {
        has(b.get(GW_KEY), "Accepted", "True")
            && has(b.get(GW_KEY), "Programmed", "True")
            && has(b.get(ROUTE_KEY), "Accepted", "True")
            && has(b.get(ROUTE_KEY), "ResolvedRefs", "True")
    })
    .await?;
    let r = b[ROUTE_KEY].as_ref().ok_or("route value")?;
    assert_eq!(
        (
            r.api_version.as_str(),
            r.kind.as_str(),
            r.namespace.as_str(),
            r.name.as_str()
        ),
        ("gateway.networking.k8s.io/v1", "HTTPRoute", "app", "r1")
    );
    assert!(b.contains_key("c1.GatewayClass._.eg"), "{b:#?}");

    // The route now points at a Service that does not exist: its status changes.
    let broken = route("r1", "/a").replace("name: web", "name: nowhere");
    publish(&js, &events(&broken)?).await?;
    bucket_until(&js, "the route's ResolvedRefs turns False", |b| {
        has(b.get(ROUTE_KEY), "ResolvedRefs", "False")
    })
    .await?;

    // The route goes: its key goes.
    let delete = ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: ResourceKey::new("c1", Kind::HTTPRoute, "app", "r1"),
        },
    };
    publish(&js, &[delete]).await?;
    bucket_until(&js, "the route's key deleted", |b| {
        !b.contains_key(ROUTE_KEY) && b.contains_key(GW_KEY)
    })
    .await?;

    // Someone (a crashed leader, an operator) leaves the bucket stale: a key with no status,
    // a wrong value, a missing key. Then the leader goes, and a route changes meanwhile.
    let kv = status::bucket(&js).await?;
    kv.put("c1.HTTPRoute.app.ghost", b"{}".to_vec().into())
        .await?;
    kv.put(GW_KEY, b"not json".to_vec().into()).await?;
    kv.delete("c1.GatewayClass._.eg").await?;
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).ok_or("no leader")?;
    let term = nodes[(leader - 1) as usize]
        .node
        .raft_metrics()
        .current_term;
    publish(&js, &events(&route("r2", "/b"))?).await?;
    nodes[(leader - 1) as usize].stop().await?;
    let survivors: Vec<&TestNode> = nodes
        .iter()
        .filter(|n| n.node.node_id() != leader)
        .collect();
    eventually("a new leader", T, || {
        agreed_leader(&survivors).is_some_and(|l| {
            l != leader && nodes[(l - 1) as usize].node.raft_metrics().current_term > term
        })
    })
    .await?;
    let new_leader = agreed_leader(&survivors).ok_or("no leader")?;
    let n = &nodes[(new_leader - 1) as usize];
    eventually("the new leader applied r2", T, || {
        n.node
            .state()
            .view()
            .status(&ResourceKey::new("c1", Kind::HTTPRoute, "app", "r2"))
            .is_some()
    })
    .await?;
    let b = bucket_until(&js, "the bucket equals the new leader's statuses", |b| {
        same(b, &expected(n))
    })
    .await?;
    assert!(!b.contains_key("c1.HTTPRoute.app.ghost"));
    assert!(
        has(b.get("c1.HTTPRoute.app.r2"), "Accepted", "True"),
        "{b:#?}"
    );
    for n in &nodes {
        n.stop().await?;
    }
    Ok(())
}
