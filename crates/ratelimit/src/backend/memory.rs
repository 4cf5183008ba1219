//! In-memory fixed-window counters for one instance. Memory is bounded by `max_keys` live
//! counters, each at most a few hundred bytes whatever the client sends (long descriptor values
//! are counted under their digest, see [`super::counter_key`]).
//!
//! # At the bound
//! Expired counters are swept first; if every counter is still live, the least recently used
//! one is evicted (and counted, [`MemoryCounter::evictions`]). Refusing new keys instead would
//! hand the outcome to the failure mode: open, a client that floods distinct values (a header
//! under a `distinct` selector) would switch off every limit that needs a new counter, for
//! everyone, until its counters expire (a day, for a daily limit); closed, it would deny them.
//! Evicting the coldest counter costs at most a restart of a counter nobody used for the last
//! `max_keys` new keys; a client that is being limited keeps touching its counter, which keeps
//! it, so evicting it takes `max_keys` new descriptor values per extra window's worth of
//! requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{Counter, Hit, Result};

/// Default bound on live counters: one counter is ~200-400 bytes (key twice, LRU entry), so
/// ~50-80 MB at the bound.
pub const DEFAULT_MAX_KEYS: usize = 200_000;

#[derive(Debug)]
struct Slot {
    count: u64,
    expires_at: u64,
    /// Position in [`Slots::lru`].
    used: u64,
}

/// The synchronous core: never awaits, so the lock is never held across an `.await`.
#[derive(Debug)]
pub struct MemoryCounter {
    max_keys: usize,
    slots: Mutex<Slots>,
    evictions: AtomicU64,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<Arc<str>, Slot>,
    /// Every key by last use, oldest first.
    lru: BTreeMap<u64, Arc<str>>,
    /// The next use number.
    clock: u64,
    /// The earliest `expires_at` in `map` (a lower bound): a sweep before then finds nothing.
    next_expiry: u64,
}

impl MemoryCounter {
    pub fn new(max_keys: usize) -> MemoryCounter {
        MemoryCounter {
            max_keys: max_keys.max(1),
            slots: Mutex::new(Slots::default()),
            evictions: AtomicU64::new(0),
        }
    }

    /// Live counters.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live counters evicted to make room (the bound was hit).
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves counters that are still valid numbers.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `hits` and returns each counter after its addition. Never fails: at the bound, room
    /// is made (see the module comment).
    pub fn apply(&self, hits: &[Hit], now: u64) -> Result<Vec<u64>> {
        let mut s = self.lock();
        let mut out = Vec::with_capacity(hits.len());
        for h in hits {
            let used = s.clock;
            s.clock += 1;
            if let Some(slot) = s.map.get_mut(h.key.as_str()) {
                let old = std::mem::replace(&mut slot.used, used);
                if slot.expires_at <= now {
                    // An old window's counter under a reused key (the clock went back): restart.
                    slot.count = 0;
                    slot.expires_at = h.expires_at;
                }
                slot.count = slot.count.saturating_add(h.hits);
                out.push(slot.count);
                let expires_at = slot.expires_at;
                if let Some(k) = s.lru.remove(&old) {
                    s.lru.insert(used, k);
                }
                s.note_expiry(expires_at);
                continue;
            }
            if s.map.len() >= self.max_keys {
                s.sweep(now);
            }
            while s.map.len() >= self.max_keys {
                let Some((_, k)) = s.lru.pop_first() else {
                    break;
                };
                s.map.remove(&k);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
            let key: Arc<str> = Arc::from(h.key.as_str());
            s.lru.insert(used, key.clone());
            s.map.insert(
                key,
                Slot {
                    count: h.hits,
                    expires_at: h.expires_at,
                    used,
                },
            );
            out.push(h.hits);
            s.note_expiry(h.expires_at);
        }
        Ok(out)
    }
}

impl Slots {
    fn note_expiry(&mut self, expires_at: u64) {
        if self.next_expiry == 0 || expires_at < self.next_expiry {
            self.next_expiry = expires_at;
        }
    }

    fn sweep(&mut self, now: u64) {
        if now < self.next_expiry {
            return;
        }
        let lru = &mut self.lru;
        self.map.retain(|_, s| {
            let live = s.expires_at > now;
            if !live {
                lru.remove(&s.used);
            }
            live
        });
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

    fn count(m: &MemoryCounter, key: &str, now: u64) -> Option<u64> {
        m.apply(&[hit(key, 1, 60)], now).ok().map(|v| v[0])
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
    fn at_the_bound_expired_keys_go_first_then_the_least_recently_used() {
        let m = MemoryCounter::new(3);
        for k in ["a", "b", "c"] {
            assert_eq!(count(&m, k, 0), Some(1));
        }
        // `a` is used again: `b` is now the coldest and makes room for `d`.
        assert_eq!(count(&m, "a", 1), Some(2));
        assert_eq!(count(&m, "d", 2), Some(1));
        assert_eq!((m.len(), m.evictions()), (3, 1));
        assert_eq!(count(&m, "a", 3), Some(3), "the hot counter survives");
        assert_eq!(count(&m, "b", 4), Some(1), "the evicted one restarts");
        assert_eq!(m.evictions(), 2, "c went for b");
        // Once their window has ended, the old keys are swept rather than evicted.
        assert_eq!(m.apply(&[hit("e", 1, 120)], 60).ok(), Some(vec![1]));
        assert_eq!((m.len(), m.evictions()), (1, 2));
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_bounded_and_spares_a_hot_counter() {
        let m = MemoryCounter::new(100);
        for i in 0..10_000u64 {
            // The limited client keeps coming back between the flood's new values.
            if i % 50 == 0 {
                count(&m, "hot", 1);
            }
            count(&m, &format!("flood-{i}"), 1);
            assert!(m.len() <= 100);
        }
        assert_eq!(count(&m, "hot", 1), Some(201), "never evicted");
        let s = m.lock();
        assert_eq!(s.lru.len(), s.map.len(), "the LRU index tracks the map");
    }
}
