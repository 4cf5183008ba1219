//! Dedup ids for JetStream's `Nats-Msg-Id`: `{agent_id}-{n}`.
//!
//! `agent_id` is a random UUID drawn once per process start, `n` counts the events this
//! process intends to publish. One id is taken per intended event and reused for every retry
//! of that event, so a retry after a lost PubAck is dropped by the stream's duplicate window
//! instead of being applied twice; two different events never share an id, not even across
//! restarts of the agent.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct DedupIds {
    agent_id: String,
    next: AtomicU64,
}

impl DedupIds {
    /// A fresh agent id (random UUID v4) with the counter at 0.
    pub fn new() -> Self {
        Self::with_agent_id(uuid::Uuid::new_v4().to_string())
    }

    /// A fixed agent id; for tests.
    pub fn with_agent_id(agent_id: impl Into<String>) -> Self {
        Self {
            agent_id: agent_id.into(),
            next: AtomicU64::new(0),
        }
    }

    /// The id of this process, also used as [`flotilla_model::ResourceEvent::source`].
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The id of the next intended event. Call once per event, not per attempt.
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.agent_id)
    }
}

impl Default for DedupIds {
    fn default() -> Self {
        Self::new()
    }
}
