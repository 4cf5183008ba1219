//! Where events come from: the [`EventSource`] trait the leader loop drives, and the in-process
//! [`EmbeddedBus`] used by standalone mode. The NATS JetStream source is in [`crate::nats`].
//!
//! The trait uses `fn ... -> impl Future + Send` (return-position impl trait) rather than a
//! boxed-future `dyn` trait: the leader loop is generic over the source, so there is no
//! allocation per call and no `async-trait` dependency. The price is that `EventSource` is not
//! object safe; callers pick the concrete source at the top (`StoreNode::start::<S>`).

use flotilla_model::ResourceEvent;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Why the event source failed. The leader loop logs it and retries after a short backoff.
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One message read from the source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcedEvent {
    /// Stream sequence.
    pub seq: u64,
    /// `None`: the payload could not be decoded. It is logged by the source and still consumes
    /// its sequence (the batch's `last_seq` covers it) so it is never read again.
    pub event: Option<ResourceEvent>,
}

/// An ordered, durable stream of events with sequence numbers, consumed by the Raft leader.
pub trait EventSource: Send + Sync + 'static {
    /// Called when this node becomes leader, with the state machine's last applied stream
    /// sequence: the source positions itself so the next fetch starts at `after + 1`, no
    /// matter what another leader did meanwhile.
    fn begin(&self, after: u64) -> impl Future<Output = Result<()>> + Send {
        let _ = after;
        async { Ok(()) }
    }

    /// Events with stream sequence > `after`, at most `max`, waiting up to `wait` for the
    /// first. Returns as soon as at least one event is available (no fixed debounce); an
    /// empty vector means nothing arrived within `wait`.
    fn fetch(
        &self,
        after: u64,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<SourcedEvent>>> + Send;

    /// Everything up to `upto` is committed in Raft.
    fn ack(&self, upto: u64) -> impl Future<Output = Result<()>> + Send;
}

impl<S: EventSource> EventSource for std::sync::Arc<S> {
    fn begin(&self, after: u64) -> impl Future<Output = Result<()>> + Send {
        (**self).begin(after)
    }
    fn fetch(
        &self,
        after: u64,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<SourcedEvent>>> + Send {
        (**self).fetch(after, max, wait)
    }
    fn ack(&self, upto: u64) -> impl Future<Output = Result<()>> + Send {
        (**self).ack(upto)
    }
}

/// An in-process, in-memory append-only event log for standalone mode (one store node, no
/// NATS). Sequences start at 1. Acked events are dropped, so memory holds only what Raft has
/// not committed yet.
#[derive(Default)]
pub struct EmbeddedBus {
    log: Mutex<BusLog>,
    notify: Notify,
}

#[derive(Default)]
struct BusLog {
    /// Sequence of the event before `events[0]` (everything up to it was acked and dropped).
    base: u64,
    events: VecDeque<ResourceEvent>,
}

impl EmbeddedBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusLog> {
        // The critical sections cannot panic halfway; a poisoned lock still holds a valid log.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event; returns its sequence.
    pub fn publish(&self, ev: ResourceEvent) -> u64 {
        let seq = {
            let mut log = self.lock();
            log.events.push_back(ev);
            log.base + log.events.len() as u64
        };
        self.notify.notify_waiters();
        seq
    }

    /// The sequence of the last published event (0 if none).
    pub fn last_seq(&self) -> u64 {
        let log = self.lock();
        log.base + log.events.len() as u64
    }

    fn take(&self, after: u64, max: usize) -> Vec<SourcedEvent> {
        let log = self.lock();
        if after < log.base {
            // Cannot happen with the leader loop (it only acks what is committed, and always
            // fetches after its committed sequence); say so loudly if it does.
            tracing::error!(
                after,
                base = log.base,
                "fetch before the acked floor; events lost"
            );
        }
        let start = after.max(log.base);
        let skip = (start - log.base) as usize;
        log.events
            .iter()
            .enumerate()
            .skip(skip)
            .take(max)
            .map(|(i, ev)| SourcedEvent {
                seq: log.base + i as u64 + 1,
                event: Some(ev.clone()),
            })
            .collect()
    }
}

impl EventSource for EmbeddedBus {
    async fn fetch(&self, after: u64, max: usize, wait: Duration) -> Result<Vec<SourcedEvent>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish between the look and the wait
            // is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.take(after, max);
            if !got.is_empty() {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, upto: u64) -> Result<()> {
        let mut log = self.lock();
        while log.base < upto && !log.events.is_empty() {
            log.events.pop_front();
            log.base += 1;
        }
        Ok(())
    }
}
