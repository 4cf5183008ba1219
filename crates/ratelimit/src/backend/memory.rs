//! In-memory fixed-window counters for one instance. Memory is bounded: a counter lives until
//! its window ends, expired counters are swept when the map is full, and beyond `max_keys` live
//! counters new keys are refused (an [`Error::Full`], which the service answers per its
//! [`super::FailureMode`] and counts) rather than growing without bound under a flood of
//! distinct descriptor values.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Counter, Error, Hit, Result};

/// Default bound on live counters: one counter is ~100-300 bytes, so ~30-60 MB.
pub const DEFAULT_MAX_KEYS: usize = 200_000;

#[derive(Debug)]
struct Slot {
    count: u64,
    expires_at: u64,
}

/// The synchronous core: never awaits, so the lock is never held across an `.await`.
#[derive(Debug)]
pub struct MemoryCounter {
    max_keys: usize,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<String, Slot>,
    /// The earliest `expires_at` in `map` (a lower bound): a sweep before then finds nothing.
    next_expiry: u64,
}

impl MemoryCounter {
    pub fn new(max_keys: usize) -> MemoryCounter {
        MemoryCounter {
            max_keys: max_keys.max(1),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// Live counters.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves counters that are still valid numbers.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `hits`, all or nothing: if a new key does not fit, no counter changes.
    pub fn apply(&self, hits: &[Hit], now: u64) -> Result<Vec<u64>> {
        let mut s = self.lock();
        let new_keys = hits
            .iter()
            .filter(|h| s.map.get(&h.key).is_none_or(|slot| slot.expires_at <= now))
            .count();
        if s.map.len() + new_keys > self.max_keys {
            s.sweep(now);
            if s.map.len() + new_keys > self.max_keys {
                return Err(Error::Full(self.max_keys));
            }
        }
        let mut out = Vec::with_capacity(hits.len());
        for h in hits {
            let slot = s.map.entry(h.key.clone()).or_insert(Slot {
                count: 0,
                expires_at: h.expires_at,
            });
            if slot.expires_at <= now {
                // An old window's counter under a reused key (the clock went back): restart.
                *slot = Slot {
                    count: 0,
                    expires_at: h.expires_at,
                };
            }
            slot.count = slot.count.saturating_add(h.hits);
            out.push(slot.count);
            if s.next_expiry == 0 || h.expires_at < s.next_expiry {
                s.next_expiry = h.expires_at;
            }
        }
        Ok(out)
    }
}

impl Slots {
    fn sweep(&mut self, now: u64) {
        if now < self.next_expiry {
            return;
        }
        self.map.retain(|_, s| s.expires_at > now);
        self.next_expiry = self.map.values().map(|s| s.expires_at).min().unwrap_or(0);
    }
}

impl Counter for MemoryCounter {
    fn increment<'a>(&'a self, hits: &'a [Hit], now: u64) -> BoxFuture<'a, Result<Vec<u64>>> {
        Box::pin(std::future::ready(self.apply(hits, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(key: &str, hits: u64, expires_at: u64) -> Hit {
        Hit {
            key: key.into(),
            hits,
            expires_at,
        }
    }

    #[test]
    fn counts_per_key_and_restarts_after_expiry() {
        let m = MemoryCounter::new(10);
        assert_eq!(m.apply(&[hit("a", 1, 60)], 0).ok(), Some(vec![1]));
        assert_eq!(
            m.apply(&[hit("a", 2, 60), hit("b", 1, 60)], 1).ok(),
            Some(vec![3, 1])
        );
        // Same key after its window ended (only if the clock went back; keys carry the window).
        assert_eq!(m.apply(&[hit("a", 1, 120)], 60).ok(), Some(vec![1]));
    }

    #[test]
    fn memory_is_bounded_and_expired_keys_make_room() {
        let m = MemoryCounter::new(3);
        for k in ["a", "b", "c"] {
            assert!(m.apply(&[hit(k, 1, 60)], 0).is_ok());
        }
        // Full: a fourth live key is refused, and nothing is counted.
        assert!(matches!(
            m.apply(&[hit("a", 1, 60), hit("d", 1, 60)], 10),
            Err(Error::Full(3))
        ));
        assert_eq!(
            m.apply(&[hit("a", 1, 60)], 10).ok(),
            Some(vec![2]),
            "existing keys still count"
        );
        assert_eq!(m.len(), 3);
        // Once their window has ended, the old keys are swept to make room.
        assert_eq!(m.apply(&[hit("d", 1, 120)], 60).ok(), Some(vec![1]));
        assert_eq!(m.len(), 1);
    }
}
