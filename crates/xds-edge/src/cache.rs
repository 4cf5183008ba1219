//! The edge's cache: per gateway, the xDS resource set last received from the store, and the
//! store revision it came from.
//!
//! Each gateway is published through its own `tokio::sync::watch` channel, updated with
//! `send_if_modified`, so an ADS stream wakes only when *its* gateway's resources changed (a
//! new revision that leaves a gateway's bytes identical wakes nobody). A gateway that does not
//! exist (yet) still gets a channel, whose value is `None` ("absent"), so a proxy may connect
//! before its gateway is created.
//!
//! The cache is a synchronous structure behind a mutex that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use flotilla_proto::watch::{GatewayResources, WatchResponse};
use tokio::sync::watch;

use crate::stats::StatsInner;

/// One encoded xDS resource, shared by every stream that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Res {
    /// Content hash of `body`, as computed by the store.
    pub version: Arc<str>,
    /// The encoded Envoy resource message (not wrapped in `Any`).
    pub body: Bytes,
}

/// `type_url -> name -> resource`.
pub type ResourceMap = BTreeMap<Arc<str>, BTreeMap<Arc<str>, Arc<Res>>>;

/// The current resource set of one gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayState {
    /// Store revision this state was last confirmed at.
    pub revision: u64,
    /// `type_url -> name -> resource`.
    pub resources: ResourceMap,
}

impl GatewayState {
    /// The resources of one type, if any.
    pub fn of_type(&self, type_url: &str) -> Option<&BTreeMap<Arc<str>, Arc<Res>>> {
        self.resources.get(type_url)
    }

    /// Same names and versions (bodies are identified by their version).
    fn same_resources(&self, other: &ResourceMap) -> bool {
        self.resources.len() == other.len()
            && self
                .resources
                .iter()
                .zip(other.iter())
                .all(|((ta, a), (tb, b))| {
                    ta == tb
                        && a.len() == b.len()
                        && a.iter()
                            .zip(b.iter())
                            .all(|((na, ra), (nb, rb))| na == nb && ra.version == rb.version)
                })
    }
}

/// What a gateway's channel carries: `None` while the gateway is absent.
pub type GatewaySnapshot = Option<Arc<GatewayState>>;

#[derive(Debug, Default)]
struct Inner {
    revision: u64,
    synced: bool,
    gateways: HashMap<String, watch::Sender<GatewaySnapshot>>,
}

/// Per-gateway xDS state, fed by the store watch, read by ADS streams.
#[derive(Debug)]
pub struct Cache {
    inner: Mutex<Inner>,
    synced: watch::Sender<bool>,
    stats: Arc<StatsInner>,
}

/// Outcome of [`Cache::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The response was applied; the cache is now at its revision.
    Applied,
    /// The response was older than (or as old as) the cache and was ignored.
    Stale,
}

impl Cache {
    pub(crate) fn new(stats: Arc<StatsInner>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            synced: watch::Sender::new(false),
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // matters more than stopping to serve: recover the guard instead of propagating.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store revision of the cache (0 before the first response).
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// True once the first full-state response has been applied.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// A receiver that becomes `true` once the cache is synced.
    pub fn synced_rx(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Subscribes to one gateway; the channel exists even if the gateway does not.
    pub fn subscribe(&self, gateway: &str) -> watch::Receiver<GatewaySnapshot> {
        let mut inner = self.lock();
        if let Some(tx) = inner.gateways.get(gateway) {
            return tx.subscribe();
        }
        let tx = watch::Sender::new(None);
        let rx = tx.subscribe();
        inner.gateways.insert(gateway.to_owned(), tx);
        rx
    }

    /// Drops the channel of an absent gateway nobody watches any more (call after dropping
    /// the receiver), so garbage gateway names do not accumulate.
    pub fn release(&self, gateway: &str) {
        let mut inner = self.lock();
        let unused = inner
            .gateways
            .get(gateway)
            .is_some_and(|tx| tx.borrow().is_none() && tx.receiver_count() == 0);
        if unused {
            inner.gateways.remove(gateway);
        }
    }

    /// Current snapshot of one gateway (for inspection and tests).
    pub fn gateway(&self, gateway: &str) -> GatewaySnapshot {
        self.lock()
            .gateways
            .get(gateway)
            .and_then(|tx| tx.borrow().clone())
    }

    /// Applies one watch response. An edge never goes backwards: once synced, a response
    /// whose revision is not newer than the cache's is ignored (a replica may lag).
    pub fn apply(&self, resp: WatchResponse) -> Applied {
        let mut inner = self.lock();
        if inner.synced && resp.revision <= inner.revision {
            return Applied::Stale;
        }
        let revision = resp.revision;
        let mut listed = std::collections::HashSet::new();
        for gw in resp.gateways {
            let GatewayResources { gateway, resources } = gw;
            let old = inner
                .gateways
                .get(&gateway)
                .and_then(|tx| tx.borrow().clone());
            let map = build_map(old.as_deref(), resources);
            let tx = inner
                .gateways
                .entry(gateway.clone())
                .or_insert_with(|| watch::Sender::new(None));
            publish(tx, revision, map);
            if resp.full_state {
                listed.insert(gateway);
            }
        }
        for gateway in &resp.removed_gateways {
            if let Some(tx) = inner.gateways.get(gateway) {
                tx.send_if_modified(|v| v.take().is_some());
            }
        }
        if resp.full_state {
            for (name, tx) in &inner.gateways {
                if !listed.contains(name) {
                    tx.send_if_modified(|v| v.take().is_some());
                }
            }
        }
        // Removed gateways nobody watches are dropped (channels of absent gateways created by
        // `subscribe` are dropped by `release`).
        if resp.full_state || !resp.removed_gateways.is_empty() {
            inner
                .gateways
                .retain(|_, tx| tx.borrow().is_some() || tx.receiver_count() > 0);
        }
        inner.revision = revision;
        self.stats.set_revision(revision);
        if resp.full_state && !inner.synced {
            inner.synced = true;
            self.stats.set_synced(true);
            self.synced.send_replace(true);
        }
        Applied::Applied
    }
}

/// Builds a gateway's resource map, reusing the previous `Arc<Res>` (and its bytes) for
/// resources whose version did not change.
fn build_map(
    old: Option<&GatewayState>,
    resources: Vec<flotilla_proto::watch::XdsResource>,
) -> ResourceMap {
    let mut map: ResourceMap = BTreeMap::new();
    for r in resources {
        let prev = old
            .and_then(|o| o.resources.get(r.type_url.as_str()))
            .and_then(|m| m.get_key_value(r.name.as_str()));
        let (type_key, name_key, res) = match prev {
            Some((name, res)) if *res.version == *r.version => {
                let type_key = old
                    .and_then(|o| o.resources.get_key_value(r.type_url.as_str()))
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| Arc::from(r.type_url.as_str()));
                (type_key, name.clone(), res.clone())
            }
            _ => (
                Arc::from(r.type_url.as_str()),
                Arc::from(r.name.as_str()),
                Arc::new(Res {
                    version: Arc::from(r.version.as_str()),
                    body: r.body,
                }),
            ),
        };
        let by_name = match map.get_mut(&*type_key) {
            Some(m) => m,
            None => map.entry(type_key).or_default(),
        };
        by_name.insert(name_key, res);
    }
    map
}

/// Publishes a gateway's new resource set; wakes watchers only if names or versions changed.
fn publish(tx: &watch::Sender<GatewaySnapshot>, revision: u64, map: ResourceMap) {
    tx.send_if_modified(|v| match v {
        Some(state) if state.same_resources(&map) => {
            // Same content: record the newer revision silently.
            Arc::make_mut(state).revision = revision;
            false
        }
        _ => {
            *v = Some(Arc::new(GatewayState {
                revision,
                resources: map,
            }));
            true
        }
    });
}

#[cfg(test)]
mod tests;
