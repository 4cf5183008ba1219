//! The service's counters, typed in one place. Plain atomics for now: the binary that embeds
//! the service exports them (Prometheus) alongside its own.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// ShouldRateLimit calls answered (any outcome).
    pub requests: AtomicU64,
    /// Calls refused as INVALID_ARGUMENT (too many descriptors, huge keys, ...).
    pub invalid_requests: AtomicU64,
    /// Descriptors answered OVER_LIMIT.
    pub over_limit: AtomicU64,
    /// Descriptors over their limit under a shadow-mode rule (answered OK).
    pub shadow_over_limit: AtomicU64,
    /// Calls whose counting failed (Redis down or slow). The in-memory counter never fails: at
    /// its bound it evicts (`MemoryCounter::evictions`).
    pub backend_errors: AtomicU64,
    /// Calls answered OK because the backend failed and the failure mode is open.
    pub failed_open: AtomicU64,
    /// Calls answered OVER_LIMIT because the backend failed and the failure mode is closed.
    pub failed_closed: AtomicU64,
}

impl Stats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
