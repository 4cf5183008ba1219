//! An in-memory [`Publisher`] that records what it is given, for tests (this crate's and the
//! binary's). It can be told to fail the next attempts, to exercise retry paths.

use crate::{Error, Publisher, Result};
use flotilla_model::ResourceEvent;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct RecordingPublisher {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Accepted events with their dedup ids, duplicates (same id) dropped like JetStream does.
    events: Vec<(ResourceEvent, String)>,
    seen: HashSet<String>,
    fail_next: usize,
    attempts: usize,
}

impl RecordingPublisher {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock is a test failure already; keep the data readable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `n` publish attempts fail with a transient error.
    pub fn fail_next(&self, n: usize) {
        self.lock().fail_next = n;
    }

    /// Accepted events, in order.
    pub fn events(&self) -> Vec<ResourceEvent> {
        self.lock().events.iter().map(|(e, _)| e.clone()).collect()
    }

    /// Accepted events with their dedup ids, in order.
    pub fn events_with_ids(&self) -> Vec<(ResourceEvent, String)> {
        self.lock().events.clone()
    }

    /// Removes and returns the accepted events.
    pub fn take(&self) -> Vec<ResourceEvent> {
        std::mem::take(&mut self.lock().events)
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    }

    /// Publish attempts so far, failed ones included.
    pub fn attempts(&self) -> usize {
        self.lock().attempts
    }

    /// Waits until at least `n` events are recorded (since the last [`Self::take`]).
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.changed.notified();
            if self.lock().events.len() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Publisher for RecordingPublisher {
    async fn publish(&self, event: ResourceEvent, dedup_id: String) -> Result<()> {
        {
            let mut inner = self.lock();
            inner.attempts += 1;
            if inner.fail_next > 0 {
                inner.fail_next -= 1;
                return Err(Error::publish("memory", true, "injected failure"));
            }
            if inner.seen.insert(dedup_id.clone()) {
                inner.events.push((event, dedup_id));
            }
        }
        self.changed.notify_waiters();
        Ok(())
    }
}
