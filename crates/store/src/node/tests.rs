use super::*;
use openraft::error::Fatal;

fn metrics(leader: Option<u64>, applied: Option<u64>) -> RaftMetrics {
    let mut m = RaftMetrics::new_initial(1);
    m.current_leader = leader;
    m.last_applied =
        applied.map(|i| openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i));
    m
}

struct Harness {
    metrics: watch::Sender<RaftMetrics>,
    ready: watch::Receiver<bool>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Option<String>>,
}

fn start(start_committed: Option<u64>, initial: RaftMetrics) -> Harness {
    let (metrics, rx) = watch::channel(initial);
    let (ready_tx, ready) = watch::channel(false);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(follow_health(
        rx,
        start_committed,
        ready_tx,
        shutdown.clone(),
    ));
    Harness {
        metrics,
        ready,
        shutdown,
        task,
    }
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn ready_only_once_restored_and_with_a_leader() {
    let mut h = start(Some(10), metrics(Some(1), Some(5)));
    settle().await;
    assert!(!*h.ready.borrow(), "not restored yet");
    h.metrics.send_replace(metrics(Some(1), Some(10)));
    h.ready.wait_for(|r| *r).await.expect("ready");
    // The leader goes away: still ready during an election...
    h.metrics.send_replace(metrics(None, Some(10)));
    tokio::time::sleep(NO_LEADER_GRACE / 2).await;
    assert!(*h.ready.borrow(), "an election does not flap readiness");
    // ...not past the grace.
    tokio::time::sleep(NO_LEADER_GRACE).await;
    settle().await;
    assert!(!*h.ready.borrow(), "no leader for longer than the grace");
    h.metrics.send_replace(metrics(Some(2), Some(11)));
    h.ready
        .wait_for(|r| *r)
        .await
        .expect("ready again with a leader");
    h.shutdown.cancel();
    assert_eq!(
        h.task.await.expect("join"),
        None,
        "shutdown is not a failure"
    );
    assert!(!*h.ready.borrow());
}

#[tokio::test(start_paused = true)]
async fn a_panicked_core_is_a_failure_and_readiness_drops() {
    let mut h = start(None, metrics(Some(1), Some(3)));
    h.ready.wait_for(|r| *r).await.expect("ready");
    // A panicking core drops its metrics sender without reporting anything.
    drop(h.metrics);
    let why = h.task.await.expect("join").expect("a failure");
    assert!(why.contains("panicked"), "{why}");
    assert!(!*h.ready.borrow());
}

#[tokio::test(start_paused = true)]
async fn a_fatal_error_is_a_failure() {
    let mut h = start(None, metrics(Some(1), Some(3)));
    h.ready.wait_for(|r| *r).await.expect("ready");
    let mut m = metrics(Some(1), Some(3));
    m.running_state = Err(Fatal::Panicked);
    h.metrics.send_replace(m);
    let why = h.task.await.expect("join").expect("a failure");
    assert!(why.contains("raft stopped: panicked"), "{why}");
    assert!(!*h.ready.borrow());
}
