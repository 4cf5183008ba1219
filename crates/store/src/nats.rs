//! [`NatsSource`]: the NATS JetStream event source driven by the Raft leader.
//!
//! Each leadership term reads through its own durable pull consumer, named after the node and
//! the term (`flotilla-store-n{node}-t{term}`), created at the sequence after what the
//! replicated state has folded. A consumer belongs to one session: a deposed leader's pull
//! stream can never take messages meant for the new leader, and it is dropped (with its
//! session) the moment the leader loop sees leadership go. The new leader deletes the
//! consumers of earlier terms; an abandoned one is also removed by the server after
//! [`CONSUMER_IDLE`].
//!
//! The consumer's server-side position is never trusted, and what it delivers is checked: the
//! stream's sequences are dense, so a session hands the leader a run that continues exactly
//! where it stands. A sequence the server skipped is looked up in the stream: if the stream no
//! longer holds it (expired or deleted), the session reports it as missing (the state records
//! the loss); if it does, the delivery was wrong and the session fails with a gap, so the
//! leader opens a new one from its committed position.
//!
//! Acks only tell the server how far the store has committed (consumer lag in monitoring);
//! with the stream's `Limits` retention they delete nothing.
//!
//! The epoch of the stream (the sequence space) is its name and creation time: a stream
//! deleted and created again restarts its sequences at 1, and the state must not mistake them
//! for sequences it folded before.

use crate::source::{Error, EventSource, Result, SourceSession, Start};
use crate::types::StreamItem;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, consumer, stream};
use futures::{FutureExt, StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Subjects of the event stream (one subject per cluster under this prefix).
pub const SUBJECTS: &str = "flotilla.events.>";
/// Prefix of the store's consumer names.
pub const CONSUMER_PREFIX: &str = "flotilla-store";
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
/// The server deletes a consumer nobody pulls from for this long: the consumers of leaders
/// that died without cleaning up.
pub const CONSUMER_IDLE: Duration = Duration::from_secs(60);
/// How many skipped sequences a session looks up one by one before giving up on proving them
/// gone (and failing with a gap instead).
const MAX_GAP_LOOKUPS: u64 = 1024;

/// The JetStream event source.
pub struct NatsSource {
    js: jetstream::Context,
    stream_name: String,
}

/// The consumer name of one leadership term.
pub fn consumer_name(node: u64, term: u64) -> String {
    format!("{CONSUMER_PREFIX}-n{node}-t{term}")
}

fn epoch_of(info: &stream::Info) -> String {
    format!(
        "{}@{}",
        info.config.name,
        info.created.unix_timestamp_nanos()
    )
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
        let s = Self { js, stream_name };
        s.stream().await?;
        Ok(s)
    }

    async fn stream(&self) -> Result<stream::Stream> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream_name.clone(),
                subjects: vec![SUBJECTS.to_string()],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Stream {
                stream: self.stream_name.clone(),
                message: e.to_string(),
            })
    }
}

impl EventSource for NatsSource {
    type Session = NatsSession;

    async fn epoch(&self) -> Result<String> {
        Ok(epoch_of(self.stream().await?.cached_info()))
    }

    async fn open(&self, start: Start) -> Result<NatsSession> {
        let stream = self.stream().await?;
        let epoch = epoch_of(stream.cached_info());
        if epoch != start.epoch {
            return Err(Error::EpochChanged {
                expected: start.epoch,
                got: epoch,
            });
        }
        let name = consumer_name(start.node, start.term);
        let first = start.after + 1;
        let cerr = |message: String| Error::Consumer {
            consumer: name.clone(),
            start: first,
            message,
        };
        // Earlier terms' consumers (and this term's, if the session is being reopened) go:
        // nothing may keep pulling from the stream on behalf of a leader that is not us now.
        let names: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(|e| cerr(format!("listing consumers: {e}")))?;
        for old in names.iter().filter(|n| n.starts_with(CONSUMER_PREFIX)) {
            if let Err(e) = stream.delete_consumer(old).await {
                // Another leader may have deleted it first.
                tracing::debug!(consumer = %old, error = %e, "delete consumer");
            }
        }
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.clone()),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: first,
                },
                ack_policy: consumer::AckPolicy::All,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                inactive_threshold: CONSUMER_IDLE,
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
        tracing::info!(consumer = %name, start = first, %epoch, "event session opened");
        Ok(NatsSession {
            stream,
            messages: Some(messages),
            position: start.after,
            pending: BTreeMap::new(),
        })
    }
}

/// One leadership term's consumer. Dropping it drops the pull stream.
pub struct NatsSession {
    stream: stream::Stream,
    /// `None` once broken: every later fetch fails so the leader opens a new session.
    messages: Option<consumer::pull::Stream>,
    /// Last sequence handed out.
    position: u64,
    /// Ackers of the last message of each fetched batch, by sequence. With `AckPolicy::All`
    /// acking one acks everything before it.
    pending: BTreeMap<u64, jetstream::message::Acker>,
}

impl NatsSession {
    /// The sequences `(position, seq)` were not delivered: proves they are gone from the
    /// stream (then they are a `Missing` run) or fails with a gap.
    async fn account_for_skip(&self, seq: u64) -> Result<StreamItem> {
        let expected = self.position + 1;
        let gap = Error::Gap { expected, got: seq };
        let first_held = self
            .stream
            .get_info()
            .await
            .map_err(|e| Error::Receive(format!("stream info: {e}")))?
            .state
            .first_sequence;
        if seq > first_held {
            // Some of the skipped sequences may still be held: look each up.
            let from = expected.max(first_held);
            if seq - from > MAX_GAP_LOOKUPS {
                return Err(gap);
            }
            for s in from..seq {
                match self.stream.get_raw_message(s).await {
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
                    Ok(_) => return Err(gap),
                    Err(e) => return Err(Error::Receive(format!("looking up sequence {s}: {e}"))),
                }
            }
        }
        Ok(StreamItem::Missing(seq - expected))
    }
}

impl SourceSession for NatsSession {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<(u64, StreamItem)>> {
        let Some(messages) = self.messages.as_mut() else {
            return Err(Error::Receive(
                "the session's message stream is broken".into(),
            ));
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
        if let Some(reason) = &broken {
            tracing::warn!(reason, position = self.position, "event session broken");
            self.messages = None;
        }
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
            // Redeliveries of what this session already handed out.
            if seq <= self.position {
                continue;
            }
            if seq > self.position + 1 {
                let missing = self.account_for_skip(seq).await?;
                out.push((self.position + 1, missing));
            }
            self.position = seq;
            let (msg, acker) = m.split();
            out.push((
                seq,
                StreamItem::Event {
                    subject: msg.subject.to_string(),
                    payload: msg.payload,
                },
            ));
            last_acker = Some((seq, acker));
        }
        if let Some((seq, acker)) = last_acker {
            self.pending.insert(seq, acker);
        }
        if out.is_empty() {
            if let Some(reason) = broken {
                return Err(Error::Receive(reason));
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, upto: u64) -> Result<()> {
        let Some((&seq, _)) = self.pending.range(..=upto).next_back() else {
            return Ok(());
        };
        let rest = self.pending.split_off(&(seq + 1));
        let acked = std::mem::replace(&mut self.pending, rest);
        if let Some(acker) = acked.get(&seq) {
            acker.double_ack().await.map_err(|e| Error::Ack {
                upto,
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}
