//! The Flotilla store: an openraft cluster whose log is the event history.
//!
//! - [`log_store`]: the Raft log on disk (redb).
//! - [`state`] / [`state_machine`]: the fold of committed event batches into the translator
//!   (owned by the state machine, run on the blocking pool), snapshots, and the publication of
//!   an immutable [`ReadState`] after every applied entry.
//! - [`codec`]: the binary encoding of log entries, Raft messages and snapshots.
//! - [`network`]: Raft over gRPC.
//! - [`source`] / [`nats`]: where events come from (JetStream, or the in-process bus).
//! - [`leader`]: the loop that moves events from the source into the log while leading.
//! - [`status`]: the computed statuses, published by the leader into a NATS KV bucket.
//! - [`watch`]: the "changes since revision R" service edges consume.
//! - [`node`]: [`StoreNode`], which wires it all.

pub mod codec;
pub mod fsutil;
pub mod identity;
pub mod leader;
pub mod log_store;
pub mod membership;
pub mod nats;
pub mod network;
pub mod node;
pub mod source;
pub mod state;
pub mod state_machine;
pub mod status;
pub mod types;
pub mod watch;

#[cfg(test)]
mod fuzz_tests;

pub use nats::NatsSource;
pub use node::{StoreConfig, StoreMetrics, StoreNode};
pub use source::{EmbeddedBus, EventSource, SourceSession, Start};
pub use state::{Counters, Delta, Position, ReadState, Rejection};
pub use types::{ApplyResponse, EventBatch, StreamItem, TypeConfig};
pub use watch::WatchService;

/// The crate's top-level error (that of [`StoreNode`]).
pub use node::Error;
/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
