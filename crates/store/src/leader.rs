//! The leader loop: while this node leads, move events from the source into the Raft log.
//!
//! fetch (returns as soon as one event is there, up to [`MAX_BATCH`]) → `client_write` of one
//! [`EventBatch`] → after it commits, ack the source up to the batch's last sequence. The
//! start position is the state machine's `last_seq`, read after `ensure_linearizable` (so this
//! leader has applied everything committed before it took over); the state machine also skips
//! any event at or below its `last_seq`, so an overlap after failover is a no-op.

use crate::source::EventSource;
use crate::state_machine::Shared;
use crate::types::{EventBatch, NodeId, Raft, RaftMetrics};
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Events per log entry. Large enough to amortize one fsync + one replication round trip over
/// a burst; small enough that one entry stays a few MiB.
pub const MAX_BATCH: usize = 1024;
/// How long one fetch waits for a first event. Only bounds how quickly a deposed leader
/// notices; events themselves are not delayed by it.
const FETCH_WAIT: Duration = Duration::from_millis(250);
/// Pause after an error before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Why one leadership term's loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("confirming leadership: {0}")]
    Linearizable(String),
    #[error("event source: {0}")]
    Source(#[from] crate::source::Error),
    #[error("writing batch up to sequence {last_seq}: {message}")]
    Write { last_seq: u64, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn is_leader(m: &RaftMetrics, me: NodeId) -> bool {
    m.state == ServerState::Leader && m.current_leader == Some(me) && m.running_state.is_ok()
}

/// Runs until `shutdown`.
pub(crate) async fn run<S: EventSource>(
    raft: Raft,
    shared: Arc<Shared>,
    source: Arc<S>,
    me: NodeId,
    shutdown: CancellationToken,
) {
    let mut metrics = raft.metrics();
    loop {
        // Wait to be leader.
        loop {
            if is_leader(&metrics.borrow_and_update(), me) {
                break;
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
        tracing::info!("leading: consuming events");
        match lead(&raft, &shared, &*source, me, &shutdown).await {
            Ok(()) => tracing::info!("no longer leading"),
            Err(e) => {
                tracing::warn!(error = %e, "leader loop error; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

async fn lead<S: EventSource>(
    raft: &Raft,
    shared: &Shared,
    source: &S,
    me: NodeId,
    shutdown: &CancellationToken,
) -> Result<()> {
    raft.ensure_linearizable()
        .await
        .map_err(|e| Error::Linearizable(e.to_string()))?;
    let mut last_seq = shared.read().last_seq();
    source.begin(last_seq).await?;
    let metrics = raft.metrics();
    loop {
        if shutdown.is_cancelled() || !is_leader(&metrics.borrow(), me) {
            return Ok(());
        }
        let fetched = source.fetch(last_seq, MAX_BATCH, FETCH_WAIT).await?;
        let Some(batch_last) = fetched.last().map(|e| e.seq) else {
            continue;
        };
        let batch = EventBatch {
            last_seq: batch_last,
            events: fetched
                .into_iter()
                .filter(|e| e.seq > last_seq)
                .filter_map(|e| e.event.map(|ev| (e.seq, ev)))
                .collect(),
        };
        let events = batch.events.len();
        let resp = raft.client_write(batch).await.map_err(|e| Error::Write {
            last_seq: batch_last,
            message: e.to_string(),
        })?;
        last_seq = resp.data.last_seq.max(batch_last);
        tracing::debug!(
            revision = resp.data.revision,
            last_seq,
            events,
            "batch committed"
        );
        if let Err(e) = source.ack(last_seq).await {
            // Not fatal: the next ack covers it, and positions never rely on acks.
            tracing::warn!(error = %e, last_seq, "ack failed");
        }
    }
}
