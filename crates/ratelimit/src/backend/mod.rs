//! Counting backends: where the hits of a (domain, descriptor, window) are added up. One
//! [`Counter`] trait; [`memory::MemoryCounter`] for a single instance, [`redis::RedisCounter`]
//! for a limit shared by every instance that talks to the same Redis.

pub mod memory;
pub mod redis;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis: timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("in-memory counter full ({0} keys): refusing new keys")]
    Full(usize),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One counter to increase: `key` names the domain, the descriptor and the window start (see
/// [`counter_key`]); the counter may be forgotten after `expires_at` (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub key: String,
    pub hits: u64,
    pub expires_at: u64,
}

/// Adds hits to counters and returns each counter's value after the addition, in order.
/// `now` (unix seconds) is passed in so that time is the caller's, and tests can set it.
pub trait Counter: Send + Sync + 'static {
    fn increment<'a>(&'a self, hits: &'a [Hit], now: u64) -> BoxFuture<'a, Result<Vec<u64>>>;
}

/// What to answer when the backend fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Let the request through (the reference service's behaviour): an outage of the counter
    /// store must not become an outage of every route that has a limit.
    #[default]
    Open,
    /// Answer OVER_LIMIT for every descriptor that has a rule.
    Closed,
}

/// A counter and what to do when it fails.
#[derive(Clone)]
pub struct Backend {
    pub counter: Arc<dyn Counter>,
    pub on_failure: FailureMode,
}

impl Backend {
    pub fn new(counter: impl Counter, on_failure: FailureMode) -> Backend {
        Backend {
            counter: Arc::new(counter),
            on_failure,
        }
    }
}

/// The counter key of a descriptor in a window: `domain`, entries and window start, each
/// length-prefixed so that no choice of keys and values can make two descriptors share a key
/// (`a_b` + `c` vs `a` + `b_c`, the reference service's ambiguity).
pub fn counter_key(domain: &str, entries: &[(&str, &str)], window_start: u64) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(
        16 + domain.len()
            + entries
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>(),
    );
    s.push_str("frl:");
    let mut part = |p: &str| {
        let _ = write!(s, "{}:{p}|", p.len());
    };
    part(domain);
    for (k, v) in entries {
        part(k);
        part(v);
    }
    let _ = write!(s, "{window_start}");
    s
}
