//! The event envelope: what an ingest agent publishes and the store folds, in order, and the
//! subject naming that ties an event to the cluster whose agent published it.

use crate::ResourceKey;
use serde::{Deserialize, Serialize};

/// Prefix of the subjects events are published on: `flotilla.events.<cluster>`. The subject is
/// what the NATS server authorizes (an agent may publish on its own cluster's subject only), so
/// the store trusts the subject's cluster, not the envelope's.
pub const EVENTS_SUBJECT_PREFIX: &str = "flotilla.events";

/// The subject the events of `cluster` are published on (the caller checks that `cluster` is
/// one subject token).
pub fn events_subject(cluster: &str) -> String {
    format!("{EVENTS_SUBJECT_PREFIX}.{cluster}")
}

/// The cluster an events subject speaks for: exactly one non-empty token after
/// [`EVENTS_SUBJECT_PREFIX`]. `None` for any other subject.
pub fn cluster_of_subject(subject: &str) -> Option<&str> {
    let cluster = subject
        .strip_prefix(EVENTS_SUBJECT_PREFIX)?
        .strip_prefix('.')?;
    (!cluster.is_empty() && !cluster.contains('.')).then_some(cluster)
}

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
        /// Where the object comes from, for the agent's later resyncs: the file that defines
        /// it (path relative to the watched directory, '/'-separated). `None` when the source
        /// has no such notion; an upsert without one clears the origin the store recorded.
        /// Kept beside the object, never written into it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    },
    /// The object is gone.
    Delete { key: ResourceKey },
    /// The full set of keys the agent currently sees in its cluster: every other key of that
    /// cluster is deleted, except objects whose origin is in `keep_origins`. Sent when an
    /// agent starts, so deletions made while it was away are not lost.
    Resync {
        keys: Vec<ResourceKey>,
        /// Origins (files) the agent could not fully read: it cannot know what they produced
        /// in its previous life, so the objects last upserted from them stay (better stale
        /// than gone) until a later resync no longer names them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keep_origins: Vec<String>,
    },
}

impl ResourceEvent {
    /// Checks the envelope is self-consistent: every key belongs to `cluster`, and origins
    /// (in upserts and in a resync's `keep_origins`) are not empty.
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
        let check_origin = |o: &String| {
            if o.is_empty() {
                Err("an origin must not be empty".to_string())
            } else {
                Ok(())
            }
        };
        match &self.body {
            EventBody::Upsert { key, origin, .. } => {
                check(key)?;
                origin.iter().try_for_each(check_origin)
            }
            EventBody::Delete { key } => check(key),
            EventBody::Resync { keys, keep_origins } => {
                keys.iter().try_for_each(check)?;
                keep_origins.iter().try_for_each(check_origin)
            }
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
