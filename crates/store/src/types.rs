//! The openraft type configuration: what a log entry carries and what applying it returns.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// One Raft log entry's payload: a dense run of the event stream, in stream order. The log
/// *is* the event history.
///
/// Dense by construction: item `i` is the stream sequence `first_seq + i` (a [`StreamItem::Missing`]
/// run covers several), so a batch cannot skip a sequence without saying so. Events travel as
/// the opaque bytes read from the stream: the log never nests an object's structure, so
/// nothing an agent publishes can make an entry undecodable; the state machine decodes each
/// payload when it folds it, and records (identically on every replica) why one cannot be.
///
/// Each event carries the subject it was published on: the NATS server authorizes publishers
/// per subject, so the subject (not the envelope) says which cluster's agent sent it, and every
/// replica checks the two agree from the log alone. (Format change: entries written before the
/// subject was carried do not decode; such data dirs are not readable, as with earlier format
/// changes.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Which sequence space `first_seq` belongs to: the identity of the stream incarnation
    /// (a JetStream stream's creation time, an embedded bus's id). Sequences of two epochs
    /// are not comparable: a stream recreated from scratch starts again at 1.
    pub epoch: String,
    /// Stream sequence of `items[0]`.
    pub first_seq: u64,
    /// Never empty (see [`EventBatch::new`]).
    pub items: Vec<StreamItem>,
}

/// One position (or run of positions) of the event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StreamItem {
    /// One message as read from the stream.
    Event {
        /// The subject it was published on (`flotilla.events.<cluster>`, if the publisher
        /// behaved; the server only lets an agent publish on its own cluster's subject).
        subject: String,
        /// JSON of a `ResourceEvent`, if the publisher behaved.
        payload: Bytes,
    },
    /// `count` consecutive sequences that the stream no longer holds (deleted or expired
    /// before the store consumed them). The source verified they are gone; they are recorded
    /// as lost instead of being skipped silently.
    Missing(u64),
}

impl StreamItem {
    /// An event published on `subject`.
    pub fn event(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        StreamItem::Event {
            subject: subject.into(),
            payload: payload.into(),
        }
    }

    /// How many sequences the item covers.
    pub fn len(&self) -> u64 {
        match self {
            StreamItem::Event { .. } => 1,
            StreamItem::Missing(n) => *n,
        }
    }

    /// True for a zero-length `Missing` run (never built by [`EventBatch::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a batch could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("a batch needs at least one item")]
    Empty,
    #[error("stream sequence 0 does not exist (sequences start at 1)")]
    ZeroSequence,
    #[error("a missing run of zero sequences")]
    EmptyRun,
    #[error("the batch runs past the largest stream sequence (u64::MAX)")]
    Overflow,
}

impl EventBatch {
    /// Builds a batch, refusing what would break density: no items, sequence 0, empty runs, a
    /// run past the largest sequence.
    pub fn new(
        epoch: impl Into<String>,
        first_seq: u64,
        items: Vec<StreamItem>,
    ) -> Result<Self, BatchError> {
        if items.is_empty() {
            return Err(BatchError::Empty);
        }
        if first_seq == 0 {
            return Err(BatchError::ZeroSequence);
        }
        if items.iter().any(StreamItem::is_empty) {
            return Err(BatchError::EmptyRun);
        }
        let batch = Self {
            epoch: epoch.into(),
            first_seq,
            items,
        };
        if batch.checked_last_seq().is_none() {
            return Err(BatchError::Overflow);
        }
        Ok(batch)
    }

    /// The last stream sequence the batch covers; `None` past `u64::MAX` (a batch decoded from
    /// a damaged log or a broken peer: [`EventBatch::new`] refuses it).
    pub fn checked_last_seq(&self) -> Option<u64> {
        let covered = self
            .items
            .iter()
            .try_fold(0u64, |sum, item| sum.checked_add(item.len()))?;
        // In u128: a batch that ends exactly at u64::MAX has its next sequence one past it.
        let end = u128::from(self.first_seq) + u128::from(covered);
        u64::try_from(end.saturating_sub(1)).ok()
    }

    /// The last stream sequence the batch covers (`u64::MAX` for a batch that runs past it,
    /// which the fold refuses).
    pub fn last_seq(&self) -> u64 {
        self.checked_last_seq().unwrap_or(u64::MAX)
    }

    /// `(sequence, item)` pairs, the sequence of a `Missing` run being its first.
    pub fn sequenced(&self) -> impl Iterator<Item = (u64, &StreamItem)> {
        let mut next = self.first_seq;
        self.items.iter().map(move |item| {
            let seq = next;
            // Saturating: after an item that ends at u64::MAX, there is no next one to number.
            next = next.saturating_add(item.len());
            (seq, item)
        })
    }
}

/// What applying one entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// The revision after the entry.
    pub revision: u64,
    /// The state machine's epoch and last applied stream sequence in it, after the entry.
    pub epoch: String,
    pub last_seq: u64,
    /// Set when the entry's batch was refused as a whole (it did not continue the state's
    /// sequence: a gap); the leader must reposition its source.
    pub refused: Option<String>,
}

openraft::declare_raft_types!(
    /// Flotilla's Raft type configuration.
    pub TypeConfig:
        D = EventBatch,
        R = ApplyResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Node = openraft::BasicNode;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_dense_and_refuse_holes() {
        let b = EventBatch::new(
            "e",
            5,
            vec![
                StreamItem::event("flotilla.events.c", Bytes::from_static(b"a")),
                StreamItem::Missing(3),
                StreamItem::event("flotilla.events.c", Bytes::from_static(b"b")),
            ],
        )
        .expect("batch");
        assert_eq!(b.last_seq(), 9);
        let seqs: Vec<u64> = b.sequenced().map(|(s, _)| s).collect();
        assert_eq!(seqs, vec![5, 6, 9]);
        assert_eq!(EventBatch::new("e", 1, vec![]), Err(BatchError::Empty));
        assert_eq!(
            EventBatch::new("e", 0, vec![StreamItem::Missing(1)]),
            Err(BatchError::ZeroSequence)
        );
        assert_eq!(
            EventBatch::new("e", 1, vec![StreamItem::Missing(0)]),
            Err(BatchError::EmptyRun)
        );
    }
}
