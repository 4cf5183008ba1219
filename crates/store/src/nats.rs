//! [`NatsSource`]: the NATS JetStream event source driven by the Raft leader.
//!
//! One durable pull consumer (`flotilla-store`, `AckPolicy::All`) reads the whole stream. The
//! consumer's server-side position is never trusted: whenever a node starts leading (or its
//! local position does not match the sequence the leader asks for) it deletes and recreates
//! the consumer with `DeliverPolicy::ByStartSequence { last_seq + 1 }`, where `last_seq` comes
//! from the replicated state machine. So nothing already applied is redelivered and nothing
//! unapplied is skipped, whatever an earlier leader acked or failed to ack.
//!
//! Acks therefore only tell the server how far the store has committed (consumer lag in
//! monitoring); with the stream's default `Limits` retention they delete nothing. A late ack
//! from a deposed leader is harmless for the same reason.
//!
//! Messages are read from one long-lived pull `Stream` per leadership term: it keeps pull
//! requests outstanding, so a fetch returns as soon as the first message is buffered and then
//! drains whatever else is already buffered, up to `max`. (A fresh bounded pull request per
//! fetch would either wait for the full batch or, if dropped early, lose in-flight
//! deliveries.)

use crate::source::{Error, EventSource, Result, SourcedEvent};
use async_nats::jetstream::{self, consumer, stream};
use flotilla_model::ResourceEvent;
use futures::{FutureExt, StreamExt};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// Subjects of the event stream (one subject per cluster under this prefix).
pub const SUBJECTS: &str = "flotilla.events.>";
/// Name of the store's durable consumer.
pub const CONSUMER: &str = "flotilla-store";
/// Publisher dedup window of the stream (same as the ingest side).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Messages buffered client-side by the pull stream. Twice the leader's batch so the next
/// batch is usually already local when the previous one commits.
const PULL_BUFFER: usize = 2048;
/// Upper bound on delivered-but-unacked messages. The leader acks after every commit, so this
/// only has to exceed what can be in flight (one buffered pull plus one batch in Raft).
const MAX_ACK_PENDING: i64 = 16 * 1024;
/// Redelivery timer. Redeliveries are skipped by sequence anyway; a long timer just avoids
/// useless traffic while a commit is slow.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Idle heartbeat of the pull stream: detects a dead consumer (deleted by another leader,
/// server restart) within a few seconds.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The JetStream event source.
pub struct NatsSource {
    js: jetstream::Context,
    stream_name: String,
    inner: Mutex<Cursor>,
}

/// Where this node's consumer stands. Behind an async mutex: fetch and ack are called by the
/// single leader loop, so it is never contended; it is held across awaits by design.
#[derive(Default)]
struct Cursor {
    messages: Option<consumer::pull::Stream>,
    /// Last sequence handed out by `fetch` (or the start position after `begin`).
    position: Option<u64>,
    /// Ackers of the last message of each fetched batch, by sequence. With `AckPolicy::All`
    /// acking one acks everything before it.
    pending: BTreeMap<u64, jetstream::message::Acker>,
}

impl NatsSource {
    /// Connects to `url` and ensures the stream exists.
    pub async fn connect(url: &str, stream_name: impl Into<String>) -> Result<Self> {
        let client = async_nats::connect(url).await.map_err(|e| Error::Connect {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        Self::new(client, stream_name).await
    }

    /// Uses an existing client; creates the stream if missing with the same configuration the
    /// ingest side uses, so either may start first.
    pub async fn new(client: async_nats::Client, stream_name: impl Into<String>) -> Result<Self> {
        let stream_name = stream_name.into();
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![SUBJECTS.to_string()],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Stream {
            stream: stream_name.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            js,
            stream_name,
            inner: Mutex::new(Cursor::default()),
        })
    }

    /// Deletes and recreates the consumer so that it delivers from `after + 1`.
    async fn reposition(&self, cur: &mut Cursor, after: u64) -> Result<()> {
        cur.messages = None;
        cur.position = None;
        cur.pending.clear();
        let start = after + 1;
        let cerr = |message: String| Error::Consumer {
            consumer: CONSUMER.to_string(),
            start,
            message,
        };
        let stream = self
            .js
            .get_stream(&self.stream_name)
            .await
            .map_err(|e| cerr(e.to_string()))?;
        // Not found is fine: first start, or another node already deleted it.
        if let Err(e) = stream.delete_consumer(CONSUMER).await {
            tracing::debug!(error = %e, "delete consumer");
        }
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(CONSUMER.to_string()),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ack_policy: consumer::AckPolicy::All,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            })
            .await
            .map_err(|e| cerr(e.to_string()))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BUFFER)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| cerr(e.to_string()))?;
        cur.messages = Some(messages);
        cur.position = Some(after);
        tracing::info!(start, "consumer positioned");
        Ok(())
    }
}

/// Decodes one message; logs and returns `None` when the payload is not a valid event.
fn decode(seq: u64, subject: &str, payload: &[u8]) -> Option<ResourceEvent> {
    match serde_json::from_slice::<ResourceEvent>(payload) {
        Ok(ev) => Some(ev),
        Err(e) => {
            tracing::warn!(seq, subject, error = %e, "undecodable event payload skipped");
            None
        }
    }
}

impl EventSource for NatsSource {
    async fn begin(&self, after: u64) -> Result<()> {
        let mut cur = self.inner.lock().await;
        self.reposition(&mut cur, after).await
    }

    async fn fetch(&self, after: u64, max: usize, wait: Duration) -> Result<Vec<SourcedEvent>> {
        let mut cur = self.inner.lock().await;
        if cur.position != Some(after) || cur.messages.is_none() {
            self.reposition(&mut cur, after).await?;
        }
        let Some(messages) = cur.messages.as_mut() else {
            return Ok(Vec::new());
        };
        let mut raw = Vec::new();
        let mut broken = None;
        match tokio::time::timeout(wait, messages.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => broken = Some("message stream ended".to_string()),
            Ok(Some(Err(e))) => broken = Some(e.to_string()),
            Ok(Some(Ok(m))) => raw.push(m),
        }
        // Drain what is already buffered, without waiting.
        while broken.is_none() && !raw.is_empty() && raw.len() < max {
            match messages.next().now_or_never() {
                None => break,
                Some(None) => broken = Some("message stream ended".to_string()),
                Some(Some(Err(e))) => broken = Some(e.to_string()),
                Some(Some(Ok(m))) => raw.push(m),
            }
        }
        let mut position = after;
        let mut out = Vec::with_capacity(raw.len());
        let mut last_acker = None;
        for m in raw {
            let seq = match m.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => {
                    tracing::warn!(error = %e, "message without JetStream metadata ignored");
                    continue;
                }
            };
            // Redeliveries of what this term already handed out.
            if seq <= position {
                continue;
            }
            position = seq;
            let (msg, acker) = m.split();
            out.push(SourcedEvent {
                seq,
                event: decode(seq, msg.subject.as_str(), &msg.payload),
            });
            last_acker = Some((seq, acker));
        }
        if let Some((seq, acker)) = last_acker {
            cur.pending.insert(seq, acker);
        }
        cur.position = Some(position);
        if let Some(reason) = broken {
            // Recreate the consumer on the next fetch, at the position reached.
            tracing::warn!(reason, position, "message stream broken; will reposition");
            cur.messages = None;
            if out.is_empty() {
                return Err(Error::Receive(reason));
            }
        }
        Ok(out)
    }

    async fn ack(&self, upto: u64) -> Result<()> {
        let mut cur = self.inner.lock().await;
        let Some((&seq, _)) = cur.pending.range(..=upto).next_back() else {
            return Ok(());
        };
        let rest = cur.pending.split_off(&(seq + 1));
        let acked = std::mem::replace(&mut cur.pending, rest);
        if let Some(acker) = acked.get(&seq) {
            acker.double_ack().await.map_err(|e| Error::Ack {
                upto,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}
