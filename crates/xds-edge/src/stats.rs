//! The edge's counters: one place, plain atomics, read as an [`EdgeStats`] snapshot (the binary
//! turns it into JSON and Prometheus metrics).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

/// A snapshot of the edge's state and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EdgeStats {
    /// Store revision of the cache.
    pub revision: u64,
    /// Highest store revision carried by a response sent to a proxy.
    pub max_revision_served: u64,
    /// ADS streams currently open (delta + SotW).
    pub streams: usize,
    /// ACKs received from proxies.
    pub acks: u64,
    /// NACKs received from proxies.
    pub nacks: u64,
    /// True once the first full state from the store has been applied.
    pub synced: bool,
    /// Streams refused because the proxy did not prove it serves the gateway it named.
    pub proxies_denied: u64,
    /// Connections held by the xDS listener (handshake done).
    pub connections: u64,
    /// Connections closed before or during their handshake (TLS failures, silent peers).
    pub handshakes_failed: u64,
    /// Connections closed for reading nothing for the idle timeout.
    pub idle_closed: u64,
    /// Connections closed before their handshake finished, to make room at the limit.
    pub evicted: u64,
    /// Times the xDS listener held its connection limit and paused accepting.
    pub at_connection_limit: u64,
    /// Failed `accept` calls (e.g. out of file descriptors), each followed by a pause.
    pub accept_errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    pub(crate) denials: std::sync::Arc<flotilla_net::Denials>,
    pub(crate) listen: std::sync::Arc<flotilla_net::ListenStats>,
    revision: AtomicU64,
    max_revision_served: AtomicU64,
    streams: AtomicUsize,
    acks: AtomicU64,
    nacks: AtomicU64,
    synced: AtomicBool,
}

impl StatsInner {
    pub(crate) fn snapshot(&self) -> EdgeStats {
        let l = self.listen.snapshot();
        EdgeStats {
            revision: self.revision.load(Ordering::Relaxed),
            max_revision_served: self.max_revision_served.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
            acks: self.acks.load(Ordering::Relaxed),
            nacks: self.nacks.load(Ordering::Relaxed),
            synced: self.synced.load(Ordering::Relaxed),
            proxies_denied: self.denials.get(),
            connections: l.active,
            handshakes_failed: l.handshake_failed + l.handshake_timeouts,
            idle_closed: l.idle_closed,
            evicted: l.evicted,
            at_connection_limit: l.at_limit,
            accept_errors: l.accept_errors,
        }
    }

    pub(crate) fn set_revision(&self, rev: u64) {
        self.revision.store(rev, Ordering::Relaxed);
    }

    pub(crate) fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Relaxed);
    }

    pub(crate) fn served(&self, rev: u64) {
        self.max_revision_served.fetch_max(rev, Ordering::Relaxed);
    }

    pub(crate) fn ack(&self) {
        self.acks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn nack(&self) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a stream as open until the guard is dropped.
    pub(crate) fn stream_guard(self: &std::sync::Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }
}

pub(crate) struct StreamGuard(std::sync::Arc<StatsInner>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}
