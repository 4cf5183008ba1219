//! Where events come from: the [`EventSource`] the leader loop drives, and the in-process
//! [`EmbeddedBus`] used by standalone mode. The NATS JetStream source is in [`crate::nats`].
//!
//! A leader reads through a [`SourceSession`] it opens for its term and drops the moment it
//! stops leading: a deposed leader holds nothing that can receive. A session delivers a
//! *dense* run of the stream from the position it was opened at; a source that cannot (a
//! message it knows exists was not delivered) fails with [`Error::Gap`], and the leader opens
//! a new session at its committed position.
//!
//! The traits use `fn ... -> impl Future + Send` (return-position impl trait) rather than a
//! boxed-future `dyn` trait: the leader loop is generic over the source, so there is no
//! allocation per call and no `async-trait` dependency. The price is that they are not object
//! safe; callers pick the concrete source at the top (`StoreNode::start::<S>`).

use crate::types::StreamItem;
use bytes::Bytes;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Why the event source failed. The leader loop logs it and opens a new session after a short
/// backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("ensuring stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("creating consumer {consumer} at sequence {start}: {message}")]
    Consumer {
        consumer: String,
        start: u64,
        message: String,
    },
    #[error("receiving messages: {0}")]
    Receive(String),
    #[error("acknowledging up to sequence {upto}: {message}")]
    Ack { upto: u64, message: String },
    #[error("gap in the event stream: expected sequence {expected}, received {got}")]
    Gap { expected: u64, got: u64 },
    #[error("the event stream changed while opening a session (epoch {expected:?}, now {got:?})")]
    EpochChanged { expected: String, got: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a leader opens a session with.
#[derive(Clone, Debug)]
pub struct Start {
    /// The leader's node id and Raft term: a session's identity at the source (a consumer of
    /// one term cannot take messages meant for another).
    pub node: u64,
    pub term: u64,
    /// The epoch the leader believes the source is in, and the last sequence of it that is
    /// folded: the session delivers from `after + 1`.
    pub epoch: String,
    pub after: u64,
}

/// An ordered, durable stream of events with sequence numbers, consumed by the Raft leader.
pub trait EventSource: Send + Sync + 'static {
    type Session: SourceSession;

    /// The current sequence space of the source (see [`crate::types::EventBatch::epoch`]).
    fn epoch(&self) -> impl Future<Output = Result<String>> + Send;

    /// Opens a session for one leadership term that delivers from `start.after + 1`. Fails
    /// with [`Error::EpochChanged`] when the source is no longer in `start.epoch`.
    fn open(&self, start: Start) -> impl Future<Output = Result<Self::Session>> + Send;
}

/// One leader's reading position. Dropping it stops all reception.
pub trait SourceSession: Send + 'static {
    /// The next items of the stream, each with its first sequence: the first continues where
    /// the session stands, the rest follow densely. At most `max` items; waits up to `wait`
    /// for the first and returns as soon as one is there (no fixed debounce). Empty: nothing
    /// arrived within `wait`.
    fn fetch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<(u64, StreamItem)>>> + Send;

    /// Everything up to `upto` is committed in Raft.
    fn ack(&mut self, upto: u64) -> impl Future<Output = Result<()>> + Send;
}

/// An in-process, in-memory append-only event log for standalone mode (one store node, no
/// NATS). Sequences start at 1 in an epoch of its own (a fresh id per bus): a standalone
/// restarted on its data dir meets a new sequence space, which the state folds from its start
/// instead of mistaking its first sequences for ones it already applied. Acked events are
/// dropped, so memory holds only what Raft has not committed yet.
pub struct EmbeddedBus {
    epoch: String,
    log: Mutex<BusLog>,
    notify: Notify,
}

#[derive(Default)]
struct BusLog {
    /// Sequence of the event before `events[0]` (everything up to it was acked and dropped).
    base: u64,
    /// (subject, payload) of each event.
    events: VecDeque<(String, Bytes)>,
}

impl Default for EmbeddedBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedBus {
    pub fn new() -> Self {
        Self {
            epoch: format!("bus-{}", uuid::Uuid::new_v4()),
            log: Mutex::default(),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusLog> {
        // The critical sections cannot panic halfway; a poisoned lock still holds a valid log.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an encoded event published on `subject` (`flotilla.events.<cluster>`: the bus
    /// stands in for NATS, and the caller for the server that authorizes who publishes where);
    /// returns its sequence.
    pub fn publish(&self, subject: impl Into<String>, payload: impl Into<Bytes>) -> u64 {
        let seq = {
            let mut log = self.lock();
            log.events.push_back((subject.into(), payload.into()));
            log.base + log.events.len() as u64
        };
        self.notify.notify_waiters();
        seq
    }

    /// Encodes an event as an agent publishes it (JSON, on the subject of its cluster) and
    /// appends it; returns its sequence.
    pub fn publish_event(
        &self,
        event: &flotilla_model::ResourceEvent,
    ) -> std::result::Result<u64, serde_json::Error> {
        let payload = serde_json::to_vec(event)?;
        Ok(self.publish(flotilla_model::events_subject(&event.cluster), payload))
    }

    /// The sequence of the last published event (0 if none).
    pub fn last_seq(&self) -> u64 {
        let log = self.lock();
        log.base + log.events.len() as u64
    }

    fn take(&self, after: u64, max: usize) -> Result<Vec<(u64, StreamItem)>> {
        let log = self.lock();
        if after < log.base {
            // Acked events are dropped, and a leader only acks what is committed: asking for
            // them again means the leader lost its committed position. Fail loudly.
            return Err(Error::Gap {
                expected: after + 1,
                got: log.base + 1,
            });
        }
        let skip = (after - log.base) as usize;
        Ok(log
            .events
            .iter()
            .enumerate()
            .skip(skip)
            .take(max)
            .map(|(i, (subject, payload))| {
                (
                    log.base + i as u64 + 1,
                    StreamItem::event(subject.clone(), payload.clone()),
                )
            })
            .collect())
    }

    fn ack_upto(&self, upto: u64) {
        let mut log = self.lock();
        while log.base < upto && !log.events.is_empty() {
            log.events.pop_front();
            log.base += 1;
        }
    }
}

/// A session on an [`EmbeddedBus`].
pub struct BusSession {
    bus: std::sync::Arc<EmbeddedBus>,
    position: u64,
}

impl EventSource for std::sync::Arc<EmbeddedBus> {
    type Session = BusSession;

    async fn epoch(&self) -> Result<String> {
        Ok(self.epoch.clone())
    }

    async fn open(&self, start: Start) -> Result<BusSession> {
        if start.epoch != self.epoch {
            return Err(Error::EpochChanged {
                expected: start.epoch,
                got: self.epoch.clone(),
            });
        }
        Ok(BusSession {
            bus: self.clone(),
            position: start.after,
        })
    }
}

impl SourceSession for BusSession {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<(u64, StreamItem)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish between the look and the wait
            // is not missed.
            let notified = self.bus.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.bus.take(self.position, max)?;
            if let Some((seq, _)) = got.last() {
                self.position = *seq;
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&mut self, upto: u64) -> Result<()> {
        self.bus.ack_upto(upto);
        Ok(())
    }
}
