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
/// Payload bytes per log entry: a fetch of large objects is cut into several entries, so an
/// AppendEntries (at most `MAX_PAYLOAD_ENTRIES` entries) has a bound the Raft port can refuse
/// anything above. An event larger than this on its own is an entry of its own.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
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

/// The term this node leads in, if it leads (and its Raft core runs).
pub(crate) fn leading_term(m: &RaftMetrics, me: NodeId) -> Option<u64> {
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
pub(crate) async fn lost(mut metrics: watch::Receiver<RaftMetrics>, me: NodeId, term: u64) {
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
        for &(seq, ref item) in &fetched {
            if seq != next {
                return Err(Error::NotDense {
                    after: next - 1,
                    got: seq,
                });
            }
            next = seq + item.len();
        }
        // One fetch can hold up to MAX_BATCH large objects: cut it into entries of at most
        // MAX_BATCH_BYTES, each a dense run continuing the previous one.
        for run in split_by_bytes(fetched, MAX_BATCH_BYTES) {
            let Some(&(run_first, _)) = run.first() else {
                continue;
            };
            let items = run.into_iter().map(|(_, item)| item).collect();
            let batch = EventBatch::new(epoch.clone(), run_first, items)?;
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
                // Cannot happen when the batch continued the state (checked above); if it
                // does, positions disagree: start over from the state.
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
        }
        if let Err(e) = session.ack(after).await {
            // Not fatal: the next ack covers it, and positions never rely on acks.
            tracing::warn!(error = %e, last_seq = after, "ack failed");
        }
    }
}

/// Payload bytes of one stream item.
fn item_bytes(item: &StreamItem) -> usize {
    match item {
        StreamItem::Event { subject, payload } => subject.len() + payload.len(),
        StreamItem::Missing(_) => 0,
    }
}

/// Cuts a dense run into consecutive runs of at most `max_bytes` of payload each (a single
/// larger item is a run of its own), in order.
fn split_by_bytes(items: Vec<(u64, StreamItem)>, max_bytes: usize) -> Vec<Vec<(u64, StreamItem)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0usize;
    for (seq, item) in items {
        let n = item_bytes(&item);
        if !run.is_empty() && bytes + n > max_bytes {
            runs.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes += n;
        run.push((seq, item));
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(n: usize) -> StreamItem {
        StreamItem::event("flotilla.events.east", Bytes::from(vec![b'x'; n]))
    }

    #[test]
    fn runs_stay_under_the_byte_limit_and_stay_dense() {
        let items = vec![
            (1, ev(3)),
            (2, ev(3)),
            (3, StreamItem::Missing(2)),
            (5, ev(5)),
            (6, ev(12)),
            (7, ev(1)),
        ];
        // Each event also carries its 20-byte subject.
        let max = 2 * 20 + 8;
        let runs = split_by_bytes(items, max);
        let shape: Vec<Vec<u64>> = runs
            .iter()
            .map(|r| r.iter().map(|(s, _)| *s).collect())
            .collect();
        // 3+3 fit; +5 would not; the 12-byte event is alone; then the last one.
        assert_eq!(shape, vec![vec![1, 2, 3], vec![5], vec![6], vec![7]]);
        for r in &runs {
            let total: usize = r.iter().map(|(_, i)| item_bytes(i)).sum();
            assert!(total <= max || r.len() == 1, "{total}");
        }
        assert!(split_by_bytes(Vec::new(), 8).is_empty());
    }
}
