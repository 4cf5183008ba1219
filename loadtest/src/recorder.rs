//! The recorder: per simulated proxy, every resource version it received (when, and the store
//! revision the response carried), what it holds (ACKed), and the revision invariant; per
//! change, when each affected proxy ACKed configuration containing it.
//!
//! Memory at 10k proxies: names and versions are interned [`Sym`]s, decoded resources are
//! shared through [`crate::decode::DecodeCache`], a history entry is 24 bytes.

use crate::decode::{Marker, ResType};
use crate::intern::{Interner, Sym};
use crate::stats::{summarize, Summary};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Revision violations kept verbatim for the report (the count is always exact).
const MAX_VIOLATION_EXAMPLES: usize = 20;

/// One resource version as received (`version == Sym::EMPTY`: removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub ty: ResType,
    pub name: Sym,
    pub version: Sym,
    /// Milliseconds since the recorder started.
    pub at_ms: u32,
    /// `system_version_info` of the response (the store revision; 0 when absent).
    pub revision: u64,
}

/// What one simulated proxy holds and has seen.
#[derive(Debug, Default)]
pub struct ProxyRecord {
    /// Versions the proxy holds (ACKed), per type.
    pub held: [HashMap<Sym, Sym>; 4],
    pub history: Vec<Received>,
    /// Highest revision of a response this proxy ACKed.
    pub max_acked_revision: u64,
    pub bytes: u64,
    pub responses: u64,
    pub acks: u64,
    pub nacks: u64,
    pub connects: u32,
    pub disconnects: u32,
    pub violations: u32,
}

impl ProxyRecord {
    pub fn held(&self, ty: ResType) -> &HashMap<Sym, Sym> {
        &self.held[ty as usize]
    }
    pub fn held_mut(&mut self, ty: ResType) -> &mut HashMap<Sym, Sym> {
        &mut self.held[ty as usize]
    }
}

/// A proxy was sent a revision lower than one it had already ACKed.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    pub proxy: u32,
    pub gateway: String,
    pub type_url: String,
    pub sent: u64,
    pub acked_before: u64,
    pub at_ms: u32,
}

/// What a change is for: measured churn, or a probe after a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Churn,
    Probe,
}

/// Handle of a registered change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChangeId(pub u64);

#[derive(Debug)]
struct Pending {
    id: ChangeId,
    kind: ChangeKind,
    marker: Marker,
    t0: f64,
    /// Per proxy of the gateway (local index): ACKed config containing the change.
    done: Vec<bool>,
    remaining: usize,
    last: f64,
}

/// Outcome of one change.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeOutcome {
    pub id: u64,
    pub kind: ChangeKind,
    pub gateway: String,
    pub published_ms: f64,
    /// Milliseconds from publication until every affected proxy ACKed it (`None`: not all did).
    pub converged_ms: Option<f64>,
    pub affected: usize,
    pub acked: usize,
}

#[derive(Debug, Default)]
struct GatewayTrack {
    pending: Vec<Pending>,
}

/// Shared by every proxy task and the driver.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    interner: Arc<Interner>,
    gateways: Vec<String>,
    /// Per proxy: gateway index and its index among that gateway's proxies.
    placement: Vec<(u32, u32)>,
    per_gateway: Vec<u32>,
    proxies: Vec<Mutex<ProxyRecord>>,
    tracks: Vec<Mutex<GatewayTrack>>,
    outcomes: Mutex<BTreeMap<ChangeId, ChangeOutcome>>,
    /// Per-proxy latency samples (ms) of churn changes.
    samples: Mutex<Vec<f32>>,
    violations: Mutex<Vec<Violation>>,
    violation_count: AtomicU64,
    next_change: AtomicU64,
    pub connected: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// `proxy_gateways[i]` is the index (into `gateways`) of proxy `i`'s gateway.
    pub fn new(gateways: Vec<String>, proxy_gateways: &[u32], interner: Arc<Interner>) -> Self {
        let mut per_gateway = vec![0u32; gateways.len()];
        let placement = proxy_gateways
            .iter()
            .map(|&g| {
                let slot = per_gateway.get_mut(g as usize).map(|n| {
                    *n += 1;
                    *n - 1
                });
                (g, slot.unwrap_or(0))
            })
            .collect();
        Self {
            start: Instant::now(),
            interner,
            tracks: gateways.iter().map(|_| Mutex::default()).collect(),
            gateways,
            placement,
            per_gateway,
            proxies: proxy_gateways.iter().map(|_| Mutex::default()).collect(),
            outcomes: Mutex::default(),
            samples: Mutex::default(),
            violations: Mutex::default(),
            violation_count: AtomicU64::new(0),
            next_change: AtomicU64::new(1),
            connected: AtomicUsize::new(0),
        }
    }

    pub fn interner(&self) -> &Arc<Interner> {
        &self.interner
    }

    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    pub fn proxy_count(&self) -> usize {
        self.proxies.len()
    }

    pub fn gateways(&self) -> &[String] {
        &self.gateways
    }

    pub fn gateway_index(&self, id: &str) -> Option<u32> {
        self.gateways.iter().position(|g| g == id).map(|i| i as u32)
    }

    pub fn gateway_of(&self, proxy: u32) -> u32 {
        self.placement.get(proxy as usize).map_or(0, |p| p.0)
    }

    /// Proxies of gateway `g`.
    pub fn proxies_of(&self, g: u32) -> usize {
        self.per_gateway.get(g as usize).copied().unwrap_or(0) as usize
    }

    pub fn proxy(&self, id: u32) -> MutexGuard<'_, ProxyRecord> {
        // Ids come from the harness itself (0..count); an out-of-range id is a harness bug.
        lock(&self.proxies[id as usize % self.proxies.len().max(1)])
    }

    /// Checks a response's revision against what the proxy ACKed before; records a violation.
    /// Call with the proxy's record locked.
    pub fn check_revision(&self, proxy: u32, rec: &mut ProxyRecord, ty: ResType, revision: u64) {
        if revision < rec.max_acked_revision {
            rec.violations += 1;
            self.violation_count.fetch_add(1, Ordering::Relaxed);
            let mut v = lock(&self.violations);
            if v.len() < MAX_VIOLATION_EXAMPLES {
                v.push(Violation {
                    proxy,
                    gateway: self
                        .gateways
                        .get(self.gateway_of(proxy) as usize)
                        .cloned()
                        .unwrap_or_default(),
                    type_url: ty.url().to_string(),
                    sent: revision,
                    acked_before: rec.max_acked_revision,
                    at_ms: self.now_ms() as u32,
                });
            }
        }
    }

    pub fn violations(&self) -> (u64, Vec<Violation>) {
        (
            self.violation_count.load(Ordering::Relaxed),
            lock(&self.violations).clone(),
        )
    }

    /// Registers a change about to be published on gateway `g`: route `marker.route` gets
    /// `marker.seq`. Call before publishing, so no ACK can precede it.
    pub fn expect_change(&self, g: u32, marker: Marker, kind: ChangeKind) -> ChangeId {
        let id = ChangeId(self.next_change.fetch_add(1, Ordering::Relaxed));
        let n = self.proxies_of(g);
        let t0 = self.now_ms();
        let pending = Pending {
            id,
            kind,
            marker,
            t0,
            done: vec![false; n],
            remaining: n,
            last: t0,
        };
        if n == 0 {
            self.finish_change(g, pending);
        } else if let Some(t) = self.tracks.get(g as usize) {
            lock(t).pending.push(pending);
        }
        id
    }

    fn finish_change(&self, g: u32, p: Pending) {
        let affected = p.done.len();
        let acked = affected - p.remaining;
        lock(&self.outcomes).insert(
            p.id,
            ChangeOutcome {
                id: p.id.0,
                kind: p.kind,
                gateway: self.gateways.get(g as usize).cloned().unwrap_or_default(),
                published_ms: p.t0,
                converged_ms: (p.remaining == 0).then_some(p.last - p.t0),
                affected,
                acked,
            },
        );
    }

    /// Proxy `proxy` now holds (ACKed) route configurations whose newest marker per route is
    /// `newest`: every pending change of its gateway that this covers is done for it.
    pub fn routes_acked(&self, proxy: u32, newest: &HashMap<u32, u64>) {
        let Some(&(g, slot)) = self.placement.get(proxy as usize) else {
            return;
        };
        let Some(track) = self.tracks.get(g as usize) else {
            return;
        };
        let now = self.now_ms();
        let mut finished = Vec::new();
        let mut lat = Vec::new();
        {
            let mut t = lock(track);
            if t.pending.is_empty() {
                return;
            }
            for p in &mut t.pending {
                let covered = newest
                    .get(&p.marker.route)
                    .is_some_and(|&s| s >= p.marker.seq);
                let Some(done) = p.done.get_mut(slot as usize) else {
                    continue;
                };
                if covered && !*done {
                    *done = true;
                    p.remaining -= 1;
                    p.last = p.last.max(now);
                    if p.kind == ChangeKind::Churn {
                        lat.push((now - p.t0) as f32);
                    }
                }
            }
            let mut i = 0;
            while i < t.pending.len() {
                if t.pending[i].remaining == 0 {
                    finished.push(t.pending.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        if !lat.is_empty() {
            lock(&self.samples).extend(lat);
        }
        for p in finished {
            self.finish_change(g, p);
        }
    }

    /// Drops the pending changes of a route that is being deleted: they can never converge
    /// and say nothing about convergence.
    pub fn forget_route(&self, g: u32, route: u32) {
        if let Some(t) = self.tracks.get(g as usize) {
            lock(t).pending.retain(|p| p.marker.route != route);
        }
    }

    /// When change `id` converged on every affected proxy (ms since start), if it has.
    pub fn converged_at(&self, id: ChangeId) -> Option<f64> {
        lock(&self.outcomes)
            .get(&id)
            .and_then(|o| o.converged_ms.map(|c| o.published_ms + c))
    }

    /// Changes still waiting for some proxy.
    pub fn pending_changes(&self) -> usize {
        self.tracks.iter().map(|t| lock(t).pending.len()).sum()
    }

    /// Closes every pending change as not converged (end of the run).
    pub fn close_pending(&self) {
        for (g, t) in self.tracks.iter().enumerate() {
            let pending = std::mem::take(&mut lock(t).pending);
            for p in pending {
                self.finish_change(g as u32, p);
            }
        }
    }

    pub fn outcomes(&self) -> Vec<ChangeOutcome> {
        lock(&self.outcomes).values().cloned().collect()
    }

    /// Per-proxy latencies (ms) of churn changes.
    pub fn proxy_samples(&self) -> Vec<f64> {
        lock(&self.samples).iter().map(|&x| f64::from(x)).collect()
    }

    /// Convergence of churn changes: (every-proxy convergence summary, per-proxy summary,
    /// changes that never converged).
    pub fn convergence(&self) -> (Summary, Summary, usize) {
        let outcomes = self.outcomes();
        let churn: Vec<&ChangeOutcome> = outcomes
            .iter()
            .filter(|o| o.kind == ChangeKind::Churn)
            .collect();
        let full: Vec<f64> = churn.iter().filter_map(|o| o.converged_ms).collect();
        let unconverged = churn.iter().filter(|o| o.converged_ms.is_none()).count();
        (
            summarize(&full),
            summarize(&self.proxy_samples()),
            unconverged,
        )
    }

    /// Total bytes received by all proxies.
    pub fn bytes_by_proxy(&self) -> Vec<u64> {
        self.proxies.iter().map(|p| lock(p).bytes).collect()
    }

    pub fn history_entries(&self) -> usize {
        self.proxies.iter().map(|p| lock(p).history.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(proxies: &[u32]) -> Recorder {
        Recorder::new(
            vec!["east/default/g0".into(), "east/default/g1".into()],
            proxies,
            Arc::new(Interner::new()),
        )
    }

    #[test]
    fn change_converges_when_every_proxy_of_its_gateway_acks() {
        let r = rec(&[0, 0, 1]);
        let id = r.expect_change(0, Marker { route: 5, seq: 2 }, ChangeKind::Churn);
        assert_eq!(r.pending_changes(), 1);
        // Older content does not count; the other gateway's proxy does not count.
        r.routes_acked(0, &HashMap::from([(5, 1)]));
        r.routes_acked(2, &HashMap::from([(5, 2)]));
        assert_eq!(r.converged_at(id), None);
        r.routes_acked(0, &HashMap::from([(5, 2)]));
        r.routes_acked(0, &HashMap::from([(5, 2)])); // twice: counted once
        assert_eq!(r.converged_at(id), None);
        // A newer version of the same route also covers the change.
        r.routes_acked(1, &HashMap::from([(5, 3), (6, 1)]));
        assert!(r.converged_at(id).is_some());
        assert_eq!(r.pending_changes(), 0);
        let (full, per_proxy, unconverged) = r.convergence();
        assert_eq!((full.count, per_proxy.count, unconverged), (1, 2, 0));
    }

    #[test]
    fn unconverged_changes_are_reported() {
        let r = rec(&[0, 0]);
        let probe = r.expect_change(0, Marker { route: 1, seq: 1 }, ChangeKind::Probe);
        r.expect_change(0, Marker { route: 2, seq: 1 }, ChangeKind::Churn);
        r.routes_acked(0, &HashMap::from([(1, 1), (2, 1)]));
        r.close_pending();
        assert_eq!(r.converged_at(probe), None);
        let outcomes = r.outcomes();
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(|o| o.acked == 1 && o.affected == 2));
        let (full, per_proxy, unconverged) = r.convergence();
        // Probes never enter the churn statistics.
        assert_eq!((full.count, per_proxy.count, unconverged), (0, 1, 1));
    }

    #[test]
    fn gateway_without_proxies_converges_at_once() {
        let r = rec(&[0]);
        let id = r.expect_change(1, Marker { route: 1, seq: 1 }, ChangeKind::Churn);
        assert_eq!(r.converged_at(id).map(|_| ()), Some(()));
    }

    #[test]
    fn revision_going_back_is_a_violation() {
        let r = rec(&[0]);
        let mut p = ProxyRecord {
            max_acked_revision: 10,
            ..Default::default()
        };
        r.check_revision(0, &mut p, ResType::Route, 10);
        r.check_revision(0, &mut p, ResType::Route, 11);
        assert_eq!(r.violations().0, 0);
        r.check_revision(0, &mut p, ResType::Cluster, 9);
        let (n, v) = r.violations();
        assert_eq!((n, p.violations), (1, 1));
        assert_eq!((v[0].sent, v[0].acked_before), (9, 10));
    }
}
