//! Flotilla ingest: sources of resources (files, Kubernetes) turned into
//! [`ResourceEvent`]s and published, in order and exactly once, to the event stream.
//!
//! - [`Publisher`] is where events go: [`NatsPublisher`] (JetStream, the multi-process setup)
//!   or anything else (the binary wraps the store's embedded bus for standalone mode;
//!   [`memory::RecordingPublisher`] records them for tests).
//! - [`FileSource`] watches a directory of Kubernetes YAML/JSON and publishes upserts,
//!   deletes and a resync.
//! - [`KubeSource`] watches a Kubernetes API server (every kind the translator reads) and
//!   publishes upserts, deletes and one resync per kind after each full listing.
//! - [`DedupIds`] hands out the per-event dedup ids; [`IngestStats`] counts what happened.
//! - [`client`]: how every part connects to NATS (credentials, TLS, refusals);
//!   [`natsconf`]: the nats-server configuration with one user per part and its permissions.
//! - [`kube`]: Kubernetes; [`kube::status`] writes the store's statuses back, while holding
//!   the cluster's [`kube::lease`].

pub mod client;
mod dedup;
mod emit;
mod error;
pub mod file;
pub mod kube;
pub mod memory;
pub mod nats;
pub mod natsconf;
mod stats;

pub use client::{NatsClientConfig, Refusals};
pub use dedup::DedupIds;
pub use error::{BoxError, Error, Result};
pub use file::FileSource;
pub use kube::{KubeSource, KubeSourceConfig};
pub use nats::NatsPublisher;
pub use stats::{IngestStats, StatsSnapshot};

use flotilla_model::ResourceEvent;
use std::future::Future;
use std::sync::Arc;

/// Where events go. `publish` returns once the event is durably accepted (for JetStream: the
/// PubAck arrived) or failed; callers publish one event at a time, in order.
///
/// `dedup_id` identifies the intended event, not the attempt: a caller retrying an event
/// passes the same id again, and an implementation must make a second accept of the same id
/// a no-op (JetStream's `Nats-Msg-Id` duplicate window does this). Errors say whether a
/// retry may help via [`Error::is_transient`].
///
/// The method is written as `-> impl Future + Send` (not `async fn`) so that the future is
/// known to be `Send` in generic code; an implementation may still write `async fn publish`.
pub trait Publisher: Send + Sync + 'static {
    fn publish(
        &self,
        event: ResourceEvent,
        dedup_id: String,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl<P: Publisher> Publisher for Arc<P> {
    fn publish(
        &self,
        event: ResourceEvent,
        dedup_id: String,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).publish(event, dedup_id)
    }
}

/// Longest accepted cluster name, in bytes.
pub const MAX_CLUSTER_LEN: usize = 128;

/// Checks that `cluster` can be one token of a NATS subject (`flotilla.events.<cluster>`):
/// non-empty, at most [`MAX_CLUSTER_LEN`] bytes, without '.', '*', '>' (subject syntax),
/// whitespace or control characters (the protocol splits on them), and without '/' (a
/// gateway id is `cluster/namespace/name` and must stay unambiguous).
pub fn validate_cluster(cluster: &str) -> Result<()> {
    let reason = if cluster.is_empty() {
        Some("it is empty")
    } else if cluster.len() > MAX_CLUSTER_LEN {
        Some("it is too long")
    } else if cluster.contains('.') {
        Some("it contains '.'")
    } else if cluster.contains('*') {
        Some("it contains '*'")
    } else if cluster.contains('>') {
        Some("it contains '>'")
    } else if cluster.contains('/') {
        Some("it contains '/'")
    } else if cluster.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if cluster.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidCluster {
            name: cluster.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for ok in ["east", "us-east-1", "c_1", "Ünïcode"] {
            assert!(validate_cluster(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a*", ">", "a b", "a\tb", "a/b", "a\u{1}"] {
            let e = validate_cluster(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid cluster name"), "{e}");
        }
        assert!(validate_cluster(&"x".repeat(MAX_CLUSTER_LEN + 1)).is_err());
        let e = validate_cluster("a.b").expect_err("dot");
        assert!(e.to_string().contains("contains '.'"), "{e}");
    }

    #[test]
    fn dedup_ids_are_unique_and_prefixed() {
        let ids = DedupIds::new();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        assert_eq!(a, format!("{}-0", ids.agent_id()));
        assert_eq!(b, format!("{}-1", ids.agent_id()));
        assert_ne!(DedupIds::new().agent_id(), ids.agent_id());
    }
}
