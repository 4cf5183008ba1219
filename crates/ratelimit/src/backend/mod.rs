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

/// Longest descriptor value put in a counter key as it is; a longer one is put there as its
/// SHA-256. Values carry client input (a header under a `distinct` selector): refusing long
/// ones would fail the call, and Envoy lets a request through when the call fails, so a client
/// could escape its limit with a long enough header; keeping them whole would let it choose how
/// much memory (here or in Redis) each of its counters takes.
pub const MAX_PLAIN_VALUE: usize = 128;

/// The counter key of a descriptor in a window: `domain`, entries and window start, each
/// length-prefixed so that no choice of keys and values can make two descriptors share a key
/// (`a_b` + `c` vs `a` + `b_c`, the reference service's ambiguity). A value longer than
/// [`MAX_PLAIN_VALUE`] is written `#<sha256 hex>|`, which no length-prefixed part (it starts
/// with a digit) can be mistaken for; two values share a counter only if they are equal (or
/// collide in SHA-256).
pub fn counter_key(domain: &str, entries: &[(&str, &str)], window_start: u64) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut s = String::with_capacity(
        16 + domain.len()
            + entries
                .iter()
                .map(|(k, v)| k.len() + v.len().min(MAX_PLAIN_VALUE) + 16)
                .sum::<usize>(),
    );
    s.push_str("frl:");
    let mut part = |p: &str| {
        if p.len() > MAX_PLAIN_VALUE {
            let _ = write!(s, "#{}|", hex::encode(Sha256::digest(p.as_bytes())));
        } else {
            let _ = write!(s, "{}:{p}|", p.len());
        }
    };
    part(domain);
    for (k, v) in entries {
        part(k);
        part(v);
    }
    let _ = write!(s, "{window_start}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_keyed_by_digest_short_ones_as_they_are() {
        let k = counter_key("d", &[("h", "alice")], 60);
        assert_eq!(k, "frl:1:d|1:h|5:alice|60");
        let long_a = "a".repeat(4096);
        let long_b = format!("{}b", "a".repeat(4095));
        let ka = counter_key("d", &[("h", &long_a)], 60);
        assert!(ka.len() < 100, "{ka}");
        assert_eq!(ka, counter_key("d", &[("h", &long_a)], 60), "stable");
        assert_ne!(ka, counter_key("d", &[("h", &long_b)], 60));
        assert_ne!(ka, counter_key("d", &[("h", &long_a)], 120));
        // A short value that spells a digest is not the digest.
        let spelled = &ka["frl:1:d|1:h|".len()..ka.len() - "|60".len()];
        assert_ne!(ka, counter_key("d", &[("h", spelled)], 60));
    }
}
