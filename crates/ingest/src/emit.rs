//! Publishing a source's events: one at a time, in order, each with its own dedup id, retried
//! with backoff on transient failures. Shared by every source (files, Kubernetes), so they
//! all have the same dedup, retry and shutdown behaviour.

use crate::{DedupIds, Error, IngestStats, Publisher};
use flotilla_model::{EventBody, ResourceEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PUBLISH_BACKOFF_START: Duration = Duration::from_millis(100);
const PUBLISH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Publishes events one at a time, in order, retrying transient failures with backoff and
/// the same dedup id until they succeed or the source shuts down.
pub(crate) struct Emitter<P> {
    pub(crate) publisher: P,
    pub(crate) ids: Arc<DedupIds>,
    pub(crate) cluster: String,
    pub(crate) stats: Arc<IngestStats>,
    pub(crate) shutdown: CancellationToken,
}

/// Why the emitter stopped.
pub(crate) enum Stopped {
    /// The source is shutting down; the event in flight may or may not have been stored.
    Shutdown,
    /// The publisher refuses everything (see [`Error::is_fatal`]); the source stops with it.
    Fatal(Error),
}

impl<P: Publisher> Emitter<P> {
    pub(crate) async fn emit_all(&self, events: Vec<EventBody>) -> Result<(), Stopped> {
        for body in events {
            self.emit(body).await?;
        }
        Ok(())
    }

    pub(crate) async fn emit(&self, body: EventBody) -> Result<(), Stopped> {
        let resync = matches!(body, EventBody::Resync { .. });
        let event = ResourceEvent {
            cluster: self.cluster.clone(),
            source: self.ids.agent_id().to_string(),
            body,
        };
        let dedup_id = self.ids.next_id();
        let mut backoff = PUBLISH_BACKOFF_START;
        loop {
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Stopped::Shutdown),
                r = self.publisher.publish(event.clone(), dedup_id.clone()) => r,
            };
            match result {
                Ok(()) => {
                    self.stats.published(resync);
                    tracing::debug!(%dedup_id, event = describe(&event.body), "published");
                    return Ok(());
                }
                Err(e) if e.is_transient() => {
                    self.stats.publish_retry();
                    tracing::warn!(%dedup_id, event = describe(&event.body), error = %e, retry_in = ?backoff, "publish failed, retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(Stopped::Shutdown),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(PUBLISH_BACKOFF_MAX);
                }
                Err(e) if e.is_fatal() => {
                    self.stats.publish_failure();
                    tracing::error!(%dedup_id, event = describe(&event.body), error = %e, "publishing refused; the source stops");
                    return Err(Stopped::Fatal(e));
                }
                Err(e) => {
                    // Retrying cannot help (e.g. the object exceeds the server's max
                    // payload); holding every later event back behind it would be worse.
                    self.stats.publish_failure();
                    tracing::error!(%dedup_id, event = describe(&event.body), error = %e, "publish failed permanently, event dropped");
                    return Ok(());
                }
            }
        }
    }
}

pub(crate) fn describe(body: &EventBody) -> String {
    match body {
        EventBody::Upsert { key, .. } => format!("upsert {key}"),
        EventBody::Delete { key } => format!("delete {key}"),
        EventBody::Resync { keys, keep_origins } => format!(
            "resync of {} keys keeping {} files",
            keys.len(),
            keep_origins.len()
        ),
    }
}
