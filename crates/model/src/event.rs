//! The event envelope: what an ingest agent publishes and the store folds, in order.

use crate::ResourceKey;
use serde::{Deserialize, Serialize};

/// One change seen by an ingest agent. Events carry whole objects (never patches) so that the
/// fold is trivially idempotent per key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceEvent {
    /// The cluster the agent watches; every key in the body belongs to it.
    pub cluster: String,
    /// Which agent sent it (an id stable for the life of the agent process).
    pub source: String,
    pub body: EventBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EventBody {
    /// Create or replace one object. `object` is the whole Kubernetes object as JSON; it was
    /// parsed successfully by the agent (see [`crate::parse_object`]).
    Upsert {
        key: ResourceKey,
        object: serde_json::Value,
    },
    /// The object is gone.
    Delete { key: ResourceKey },
    /// The full set of keys the agent currently sees in its cluster: every other key of that
    /// cluster is deleted. Sent when an agent starts, so deletions made while it was away
    /// are not lost.
    Resync { keys: Vec<ResourceKey> },
}

impl ResourceEvent {
    /// Checks the envelope is self-consistent: every key belongs to `cluster`.
    pub fn validate(&self) -> Result<(), String> {
        let check = |k: &ResourceKey| {
            if k.cluster != self.cluster {
                Err(format!(
                    "event for cluster {:?} carries key {k} of another cluster",
                    self.cluster
                ))
            } else {
                Ok(())
            }
        };
        match &self.body {
            EventBody::Upsert { key, .. } | EventBody::Delete { key } => check(key),
            EventBody::Resync { keys } => keys.iter().try_for_each(check),
        }
    }
}
