//! Counters of an ingest source, read by the binary for its metrics endpoint. Plain atomics:
//! the binary decides how to export them (Prometheus, JSON), this crate only counts.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Shared counters; hand out `Arc<IngestStats>` (see [`crate::FileSource::stats`]).
#[derive(Debug, Default)]
pub struct IngestStats {
    events_published: AtomicU64,
    resyncs_published: AtomicU64,
    parse_errors: AtomicU64,
    read_errors: AtomicU64,
    publish_retries: AtomicU64,
    publish_failures: AtomicU64,
    files: AtomicU64,
    objects: AtomicU64,
    conflicting_keys: AtomicU64,
    kinds_watched: AtomicU64,
    kinds_missing: AtomicU64,
}

/// A point-in-time copy of [`IngestStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Events acknowledged by the publisher (upserts, deletes and resyncs).
    pub events_published: u64,
    /// Of which resyncs.
    pub resyncs_published: u64,
    /// Documents rejected by the parser (each one logged with file, document, kind/name, field).
    pub parse_errors: u64,
    /// Reads of a file that failed (IO errors, retried; not UTF-8; too large).
    pub read_errors: u64,
    /// Publish attempts that failed transiently and were retried.
    pub publish_retries: u64,
    /// Events dropped after a permanent publish failure (e.g. over the server's max payload).
    pub publish_failures: u64,
    /// Gauge: files currently tracked.
    pub files: u64,
    /// Gauge: distinct keys currently published.
    pub objects: u64,
    /// Gauge: keys defined by more than one file (one of them wins; each is logged).
    pub conflicting_keys: u64,
    /// Gauge (Kubernetes source): kinds being watched.
    pub kinds_watched: u64,
    /// Gauge (Kubernetes source): kinds the translator reads that the API server does not
    /// serve (CRD not installed); each is logged, and watched once its CRD appears.
    pub kinds_missing: u64,
}

impl IngestStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            events_published: self.events_published.load(Relaxed),
            resyncs_published: self.resyncs_published.load(Relaxed),
            parse_errors: self.parse_errors.load(Relaxed),
            read_errors: self.read_errors.load(Relaxed),
            publish_retries: self.publish_retries.load(Relaxed),
            publish_failures: self.publish_failures.load(Relaxed),
            files: self.files.load(Relaxed),
            objects: self.objects.load(Relaxed),
            conflicting_keys: self.conflicting_keys.load(Relaxed),
            kinds_watched: self.kinds_watched.load(Relaxed),
            kinds_missing: self.kinds_missing.load(Relaxed),
        }
    }

    pub(crate) fn published(&self, resync: bool) {
        self.events_published.fetch_add(1, Relaxed);
        if resync {
            self.resyncs_published.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn add_parse_errors(&self, n: u64) {
        self.parse_errors.fetch_add(n, Relaxed);
    }

    pub(crate) fn read_error(&self) {
        self.read_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn publish_retry(&self) {
        self.publish_retries.fetch_add(1, Relaxed);
    }

    pub(crate) fn publish_failure(&self) {
        self.publish_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_sizes(&self, files: usize, objects: usize, conflicting_keys: usize) {
        self.files.store(files as u64, Relaxed);
        self.objects.store(objects as u64, Relaxed);
        self.conflicting_keys
            .store(conflicting_keys as u64, Relaxed);
    }

    pub(crate) fn set_kinds(&self, watched: usize, missing: usize) {
        self.kinds_watched.store(watched as u64, Relaxed);
        self.kinds_missing.store(missing as u64, Relaxed);
    }

    pub(crate) fn set_objects(&self, objects: usize) {
        self.objects.store(objects as u64, Relaxed);
    }
}
