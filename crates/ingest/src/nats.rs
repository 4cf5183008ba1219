//! The JetStream side: the stream every agent publishes to and [`NatsPublisher`].
//!
//! Layout (shared with the store, which creates the same stream if it starts first): stream
//! [`STREAM`] with subjects `flotilla.events.>`, file storage, a 2-minute duplicate window;
//! one subject per cluster, `flotilla.events.<cluster>`; payload = JSON of
//! [`ResourceEvent`]; header `Nats-Msg-Id` = the event's dedup id.
//!
//! An agent's NATS user may publish on its own cluster's subject only (see [`crate::natsconf`]):
//! it cannot create the stream (the stores do, [`ensure_stream_if_allowed`]), and a publish the
//! server refuses fails at once with [`Error::Denied`] when the publisher watches the
//! connection's [`Refusals`].

use crate::client::Refusals;
use crate::{validate_cluster, Error, Publisher, Result};
use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::PublishMessage,
    publish::PublishAck,
    stream::{Config, StorageType, Stream},
};
use bytes::Bytes;
use flotilla_model::ResourceEvent;
use std::time::Duration;

pub const STREAM: &str = "FLOTILLA_EVENTS";
pub const SUBJECT_PREFIX: &str = flotilla_model::EVENTS_SUBJECT_PREFIX;
/// How long JetStream remembers a `Nats-Msg-Id`: a retry must land within it to be dropped
/// as a duplicate. Far longer than our retries take; short enough to keep the id set small.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Attempts per [`NatsPublisher::publish`] call before the error goes back to the caller
/// (which, for [`crate::FileSource`], retries again with the same dedup id).
pub const DEFAULT_PUBLISH_ATTEMPTS: u32 = 5;
const RETRY_BACKOFF_START: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The stream configuration both ingest and store use.
pub fn stream_config() -> Config {
    Config {
        name: STREAM.to_string(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// Creates the stream if it does not exist (an existing one is left as it is).
pub async fn ensure_stream(js: &jetstream::Context) -> Result<Stream> {
    js.get_or_create_stream(stream_config())
        .await
        .map_err(|e| Error::Stream {
            stream: STREAM.to_string(),
            source: Box::new(e),
        })
}

/// Like [`ensure_stream`], for a client whose user may not use the JetStream API (an agent):
/// when the server refuses the request, the stream is left to the stores, which create it, and
/// `None` is returned (publishes meanwhile fail with a transient "no stream" and are retried).
pub async fn ensure_stream_if_allowed(
    js: &jetstream::Context,
    refusals: &Refusals,
) -> Result<Option<Stream>> {
    let mut refused = refusals.watch();
    tokio::select! {
        r = ensure_stream(js) => r.map(Some),
        message = refused.publish_refused(|s| s.starts_with("$JS.API.")) => {
            tracing::info!(refused = %message, "this NATS user may not manage the stream; the stores create it");
            Ok(None)
        }
    }
}

/// `flotilla.events.<cluster>`, after checking the cluster name is one safe subject token.
pub fn subject_for(cluster: &str) -> Result<String> {
    validate_cluster(cluster)?;
    Ok(flotilla_model::events_subject(cluster))
}

/// Publishes to JetStream and waits for the PubAck. Transient failures (timeout, lost
/// connection, no stream yet) are retried with the same `Nats-Msg-Id`, so the stream stores
/// the event once however many attempts it took.
///
/// With [`NatsPublisher::with_refusals`], a publish the server refuses (the user may not publish
/// on the subject) fails at once with [`Error::Denied`] instead of timing out.
#[derive(Clone, Debug)]
pub struct NatsPublisher {
    js: jetstream::Context,
    attempts: u32,
    refusals: Option<Refusals>,
}

impl NatsPublisher {
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            attempts: DEFAULT_PUBLISH_ATTEMPTS,
            refusals: None,
        }
    }

    /// Watches the refusals of the connection `js` uses (from
    /// [`crate::NatsClientConfig::connect`]).
    pub fn with_refusals(mut self, refusals: Refusals) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// Attempts per `publish` call (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    async fn publish_once(
        &self,
        subject: &str,
        payload: Bytes,
        dedup_id: &str,
    ) -> Result<PublishAck> {
        let fail = |e: jetstream::context::PublishError| {
            let transient = !matches!(
                e.kind(),
                PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence
            );
            Error::publish(subject, transient, e)
        };
        // Watch before sending, so a refusal of this publish cannot be missed.
        let refused = self.refusals.as_ref().map(Refusals::watch);
        let publish = async {
            let ack = self
                .js
                .send_publish(
                    subject.to_string(),
                    PublishMessage::build()
                        .payload(payload)
                        .message_id(dedup_id),
                )
                .await
                .map_err(fail)?;
            ack.await.map_err(fail)
        };
        let Some(mut refused) = refused else {
            return publish.await;
        };
        tokio::select! {
            r = publish => r,
            message = refused.publish_refused(|s| s == subject) => Err(Error::Denied {
                subject: subject.to_string(),
                message,
            }),
        }
    }
}

impl Publisher for NatsPublisher {
    async fn publish(&self, event: ResourceEvent, dedup_id: String) -> Result<()> {
        let subject = subject_for(&event.cluster)?;
        event.validate().map_err(Error::InvalidEvent)?;
        let payload = Bytes::from(serde_json::to_vec(&event)?);
        let mut backoff = RETRY_BACKOFF_START;
        let mut attempt = 1;
        loop {
            match self
                .publish_once(&subject, payload.clone(), &dedup_id)
                .await
            {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(%dedup_id, seq = ack.sequence, "stream already had this event");
                    }
                    return Ok(());
                }
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    tracing::warn!(%dedup_id, attempt, error = %e, "publish failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
