//! Three real store nodes on 127.0.0.1 fed by a real nats-server: election, replication,
//! leader failover, restart from disk, snapshot install on a wiped follower.

mod common;

use common::*;
use flotilla_store::NatsSource;
use std::time::Duration;

const STREAM: &str = "FLOTILLA_EVENTS";
const T: Duration = Duration::from_secs(20);

fn state_of(n: &TestNode) -> (u64, u64, usize, bool) {
    let s = n.node.state();
    (
        s.revision(),
        s.last_seq(),
        s.view().resource_count(),
        s.view().gateways().contains_key(GATEWAY_ID),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_restart() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    let (_dirs, mut nodes, peers) = start_cluster(&nats, STREAM).await?;

    // Election.
    eventually("a leader all nodes agree on", T, || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some()
    })
    .await?;
    for n in &nodes {
        eventually("ready", T, || n.node.is_ready()).await?;
    }

    // Replication of a batch published to NATS.
    let evs = events(&format!("{BASE}---\n{}", route("r1", "/a")))?;
    let seqs = publish(&js, &evs).await?;
    let last = *seqs.last().ok_or("no seq")?;
    for n in &nodes {
        eventually("all events applied everywhere", T, || {
            let (_, last_seq, resources, gw) = state_of(n);
            last_seq == last && resources == 4 && gw
        })
        .await?;
    }
    let rev = nodes[0].node.revision();
    for n in &nodes {
        eventually("same revision everywhere", T, || n.node.revision() == rev).await?;
    }

    // Kill the leader; the others elect a new one and keep consuming.
    let old_leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).ok_or("no leader")?;
    let li = (old_leader - 1) as usize;
    nodes[li].stop().await?;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    eventually("a new leader", T, || {
        let alive: Vec<&TestNode> = survivors.iter().map(|i| &nodes[*i]).collect();
        matches!(agreed_leader(&alive), Some(l) if l != old_leader)
    })
    .await?;
    let seqs = publish(&js, &events(&route("r2", "/b"))?).await?;
    let last = *seqs.last().ok_or("no seq")?;
    for i in &survivors {
        eventually("new event applied by the survivors", T, || {
            let (_, last_seq, resources, _) = state_of(&nodes[*i]);
            last_seq == last && resources == 5
        })
        .await?;
    }

    // The old leader restarts from its disk and catches up.
    let src = NatsSource::connect(&nats.url, STREAM).await?;
    let restarted = restart_node(old_leader, &nodes[li], &peers, src).await?;
    nodes[li] = restarted;
    eventually("restarted node catches up", T, || {
        let (_, last_seq, resources, gw) = state_of(&nodes[li]);
        last_seq == last && resources == 5 && gw
    })
    .await?;

    // Every event applied exactly once: the log has exactly what NATS has.
    let states: Vec<_> = nodes.iter().map(state_of).collect();
    assert!(states.iter().all(|s| s.1 == last && s.2 == 5), "{states:?}");

    // Full cluster restart: revision and state come back from disk before anything new.
    let before = nodes.iter().map(state_of).collect::<Vec<_>>();
    for n in &nodes {
        n.stop().await?;
    }
    let mut again = Vec::new();
    for (i, old) in nodes.iter().enumerate() {
        let src = NatsSource::connect(&nats.url, STREAM).await?;
        again.push(restart_node(i as u64 + 1, old, &peers, src).await?);
    }
    for (n, b) in again.iter().zip(&before) {
        eventually("ready after restart", T, || n.node.is_ready()).await?;
        let (rev, last_seq, resources, gw) = state_of(n);
        assert!(rev >= b.0, "revision went back: {rev} < {}", b.0);
        assert_eq!((last_seq, resources, gw), (b.1, b.2, b.3));
    }
    eventually("a leader after full restart", T, || {
        agreed_leader(&again.iter().collect::<Vec<_>>()).is_some()
    })
    .await?;

    // A follower misses events while down; meanwhile the leader snapshots and purges its
    // log, so the follower can only catch up through InstallSnapshot over gRPC.
    let leader = agreed_leader(&again.iter().collect::<Vec<_>>()).ok_or("no leader")?;
    let li = (leader - 1) as usize;
    let victim = (1..=3u64).find(|id| *id != leader).ok_or("no victim")?;
    let vi = (victim - 1) as usize;
    again[vi].stop().await?;
    let seqs = publish(&js, &events(&route("r3", "/c"))?).await?;
    let last = *seqs.last().ok_or("no seq")?;
    eventually("leader applied while follower down", T, || {
        state_of(&again[li]).1 == last
    })
    .await?;
    again[li].node.raft().trigger().snapshot().await?;
    let rev = again[li].node.revision();
    eventually("snapshot built", T, || {
        again[li].node.raft_metrics().snapshot.map(|s| s.index) >= Some(rev)
    })
    .await?;
    let snap = again[li]
        .node
        .raft_metrics()
        .snapshot
        .ok_or("no snapshot")?;
    again[li]
        .node
        .raft()
        .trigger()
        .purge_log(snap.index)
        .await?;
    eventually("log purged", T, || {
        again[li].node.raft_metrics().purged == Some(snap)
    })
    .await?;
    let src = NatsSource::connect(&nats.url, STREAM).await?;
    let back = restart_node(victim, &again[vi], &peers, src).await?;
    again[vi] = back;
    eventually("follower caught up through a snapshot", T, || {
        let (_, last_seq, resources, gw) = state_of(&again[vi]);
        last_seq == last && resources == 6 && gw
    })
    .await?;
    // The state is installed before openraft publishes the snapshot in its metrics: wait for
    // the metrics too rather than race them.
    eventually("follower reports the installed snapshot", T, || {
        again[vi].node.raft_metrics().snapshot.is_some()
    })
    .await?;
    let installed = again[vi]
        .node
        .raft_metrics()
        .snapshot
        .ok_or("follower has no snapshot")?;
    assert!(installed.index >= snap.index);

    // And it keeps following new events.
    let seqs = publish(&js, &events(&route("r4", "/d"))?).await?;
    let last = *seqs.last().ok_or("no seq")?;
    for n in &again {
        eventually("event after snapshot install", T, || {
            let (_, last_seq, resources, _) = state_of(n);
            last_seq == last && resources == 7
        })
        .await?;
    }
    for n in &again {
        n.stop().await?;
    }
    Ok(())
}

/// A clean step-down (another node wins an election while the old leader is alive and keeps
/// running), repeated under a stream of events: every event is applied exactly once on every
/// node. Before per-term sessions, the deposed leader's pull stream kept taking about every
/// other message and the new leader took the gaps for consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_step_downs_lose_nothing() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    let (_dirs, nodes, _peers) = start_cluster(&nats, STREAM).await?;
    eventually("a leader", T, || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some()
    })
    .await?;
    let mut published = publish(&js, &events(BASE)?).await?;
    for round in 0..4 {
        let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).ok_or("no leader")?;
        let term = nodes[(leader - 1) as usize]
            .node
            .raft_metrics()
            .current_term;
        // Another node campaigns: the old leader sees the higher term and steps down cleanly
        // (it may win the next election itself: what counts is that its term ended).
        let next = (1..=3u64).find(|id| *id != leader).ok_or("no candidate")?;
        nodes[(next - 1) as usize]
            .node
            .raft()
            .trigger()
            .elect()
            .await?;
        let mut evs = Vec::new();
        for i in 0..25 {
            evs.extend(events(&route(
                &format!("r{round}-{i}"),
                &format!("/r{round}/{i}"),
            ))?);
        }
        published.extend(publish(&js, &evs).await?);
        eventually("a leader of a later term after the step-down", T, || {
            agreed_leader(&nodes.iter().collect::<Vec<_>>())
                .is_some_and(|l| nodes[(l - 1) as usize].node.raft_metrics().current_term > term)
        })
        .await?;
    }
    let last = *published.last().ok_or("nothing published")?;
    for n in &nodes {
        eventually("every event applied on every node", T, || {
            n.node.state().last_seq() == last
        })
        .await?;
        let c = n.node.state().counters();
        assert_eq!(
            (c.events_applied, c.sequences_missing),
            (published.len() as u64, 0),
            "node {}: {c:?}",
            n.node.node_id()
        );
        assert_eq!(n.node.state().view().resource_count(), 3 + 4 * 25);
    }
    for n in &nodes {
        n.stop().await?;
    }
    Ok(())
}
