//! The openraft type configuration: what a log entry carries and what applying it returns.

use flotilla_model::ResourceEvent;
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// One Raft log entry's payload: a batch of events read from the event stream, in stream
/// order. The log *is* the event history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The highest stream sequence this batch consumes. It can be larger than the last event's
    /// sequence: undecodable messages consume their sequence without an event.
    pub last_seq: u64,
    /// `(stream sequence, event)`, ascending by sequence.
    pub events: Vec<(u64, ResourceEvent)>,
}

/// What applying one entry produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// The revision (log index) of the entry.
    pub revision: u64,
    /// The state machine's last applied stream sequence after the entry.
    pub last_seq: u64,
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
