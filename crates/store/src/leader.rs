//! The leader loop: while this node leads, move events from the source into the Raft log.
//!
//! Per term: confirm leadership (`ensure_linearizable`: everything committed before this term
//! is applied), read the state's position, open a [`SourceSession`] there, then
//! fetch (returns as soon as one event is there, up to [`MAX_BATCH`]) → `client_write` of one
//! dense [`EventBatch`] → after it commits, ack the source up to the batch's last sequence.
//!
//! The session lives exactly as long as the leadership it was opened for: the loop watches
//! Raft's metrics and returns the moment this node stops leading or the term changes, dropping
//! the session (and with it everything that can receive from the source).
//!
//! Contiguity is proven, never assumed: the session must hand out sequences that continue the
//! committed position, the batch is dense by construction, and the state machine refuses a
//! batch that does not continue its sequence. Any break is an error that ends the session; the
//! next one starts again from the committed position.

use crate::source::{EventSource, SourceSession, Start};
use crate::state_machine::Shared;
use crate::types::{EventBatch, NodeId, Raft, RaftMetrics, StreamItem};
use openraft::ServerState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Events per log entry. Large enough to amortize one fsync + one replication round trip over
/// a burst; small enough that one entry stays a few MiB.
pub const MAX_BATCH: usize = 1024;
/// How long one fetch waits for a first event before looking around again.
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
    #[error("the source broke the sequence: after {after} it delivered {got}")]
    NotDense { after: u64, got: u64 },
    #[error("building a batch: {0}")]
    Batch(#[from] crate::types::BatchError),
    #[error("writing batch up to sequence {last_seq}: {message}")]
    Write { last_seq: u64, message: String },
    #[error("the state machine refused the batch: {0}")]
    Refused(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn leading_term(m: &RaftMetrics, me: NodeId) -> Option<u64> {
    (m.state == ServerState::Leader && m.current_leader == Some(me) && m.running_state.is_ok())
        .then_some(m.current_term)
}

/// Runs until `shutdown`.
pub(crate) async fn run<S: EventSource>(
    raft: Raft,
    shared: Arc<Shared>,
    source: S,
    me: NodeId,
    shutdown: CancellationToken,
) {
    let mut metrics = raft.metrics();
    loop {
        // Wait to be leader.
        let term = loop {
            if let Some(term) = leading_term(&metrics.borrow_and_update(), me) {
                break term;
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        };
        tracing::info!(term, "leading: consuming events");
        let outcome = tokio::select! {
            r = lead(&raft, &shared, &source, me, term) => r,
            // The session inside `lead` is dropped here, so a deposed leader stops receiving
            // at once, whatever it was waiting on.
            _ = lost(raft.metrics(), me, term) => {
                tracing::info!(term, "no longer leading: event session closed");
                Ok(())
            }
            _ = shutdown.cancelled() => return,
        };
        if let Err(e) = outcome {
            tracing::warn!(term, error = %e, "leader loop error; reopening the event session");
            tokio::select! {
                _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Resolves when this node no longer leads in `term` (or Raft is gone).
async fn lost(mut metrics: watch::Receiver<RaftMetrics>, me: NodeId, term: u64) {
    loop {
        if leading_term(&metrics.borrow_and_update(), me) != Some(term) {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

async fn lead<S: EventSource>(
    raft: &Raft,
    shared: &Shared,
    source: &S,
    me: NodeId,
    term: u64,
) -> Result<()> {
    raft.ensure_linearizable()
        .await
        .map_err(|e| Error::Linearizable(e.to_string()))?;
    let epoch = source.epoch().await?;
    // Everything committed before this term is applied (ensure_linearizable), so the published
    // state is where this term starts.
    let mut after = shared.load().position().last_seq_of(&epoch);
    let mut session = source
        .open(Start {
            node: me,
            term,
            epoch: epoch.clone(),
            after,
        })
        .await?;
    loop {
        let fetched = session.fetch(MAX_BATCH, FETCH_WAIT).await?;
        let Some(&(first_seq, _)) = fetched.first() else {
            continue;
        };
        if first_seq != after + 1 {
            return Err(Error::NotDense {
                after,
                got: first_seq,
            });
        }
        let mut next = first_seq;
        let mut items = Vec::with_capacity(fetched.len());
        for (seq, item) in fetched {
            if seq != next {
                return Err(Error::NotDense {
                    after: next - 1,
                    got: seq,
                });
            }
            next = seq + item.len();
            items.push(item);
        }
        let batch = EventBatch::new(epoch.clone(), first_seq, items)?;
        let batch_last = batch.last_seq();
        let events = batch
            .items
            .iter()
            .filter(|i| matches!(i, StreamItem::Event { .. }))
            .count();
        let resp = raft.client_write(batch).await.map_err(|e| Error::Write {
            last_seq: batch_last,
            message: e.to_string(),
        })?;
        if let Some(why) = resp.data.refused {
            return Err(Error::Refused(why));
        }
        if resp.data.epoch != epoch || resp.data.last_seq != batch_last {
            // Cannot happen when the batch continued the state (checked above); if it does,
            // positions disagree: start over from the state.
            return Err(Error::Refused(format!(
                "the state is at {}:{} after a batch up to {epoch}:{batch_last}",
                resp.data.epoch, resp.data.last_seq
            )));
        }
        after = batch_last;
        tracing::debug!(
            revision = resp.data.revision,
            last_seq = after,
            events,
            "batch committed"
        );
        if let Err(e) = session.ack(after).await {
            // Not fatal: the next ack covers it, and positions never rely on acks.
            tracing::warn!(error = %e, last_seq = after, "ack failed");
        }
    }
}
