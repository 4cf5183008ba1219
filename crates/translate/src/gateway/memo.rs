//! What a gateway's last translation placed, kept so that the next one places only the routes
//! that changed: each route's [`Placed`], and the sums over them (virtual hosts with their
//! encodings, clusters, rate limit rules, listener counts, overlap buckets), each updated by
//! taking a route's old contribution out and putting its new one in.

use super::place::Placed;
use crate::envoy::{EncodedVirtualHost, XdsResource};
use crate::httproute::{OverlapTracker, PrecedenceKey};
use crate::ir::cluster::{BackendId, ClusterKey};
use crate::ratelimit::ServiceRule;
use envoy_types::pb::envoy::config::route::v3::VirtualHost;
use flotilla_model::ResourceKey;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One encoded Envoy route, with the length of its direct response body.
type EncodedRoute = (Arc<[u8]>, usize);

/// One virtual host: the encoded routes of every route placed in it, in precedence order.
#[derive(Default)]
pub(crate) struct Vhost {
    /// Placements that make it exist (a route served there, with or without entries).
    refs: usize,
    /// Entries by precedence; a route placed twice in one host (two listeners sharing the
    /// route configuration) has its entries twice, in the order it placed them.
    entries: BTreeMap<PrecedenceKey, Vec<EncodedRoute>>,
    encoded: Option<Arc<EncodedVirtualHost>>,
    largest_direct: usize,
}

impl Vhost {
    /// Its encoding as a virtual host of route configuration `config`, computed again only
    /// after its entries changed.
    pub fn encoded(&mut self, config: &str, domain: &str) -> (Arc<EncodedVirtualHost>, usize) {
        if let Some(e) = &self.encoded {
            return (e.clone(), self.largest_direct);
        }
        let routes = self.entries.values().flatten();
        self.largest_direct = routes.clone().map(|(_, d)| *d).max().unwrap_or(0);
        let body = crate::envoy::encode_virtual_host(
            &virtual_host(config, domain),
            routes.map(|(b, _)| &b[..]),
        );
        let e = Arc::new(EncodedVirtualHost::new(body));
        self.encoded = Some(e.clone());
        (e, self.largest_direct)
    }
}

/// The virtual host of `domain` in route configuration `config`, without routes.
pub(crate) fn virtual_host(config: &str, domain: &str) -> VirtualHost {
    let mut domains = vec![domain.to_string()];
    if domain != "*" {
        domains.push(format!("{domain}:*"));
    }
    VirtualHost {
        name: format!("{config}/{domain}"),
        domains,
        ..Default::default()
    }
}

/// One route configuration's virtual hosts (it exists while a programmed HTTP listener of the
/// gateway has it: the only listeners routes are served through).
#[derive(Default)]
pub(crate) struct Config {
    pub vhosts: BTreeMap<Arc<str>, Vhost>,
}

/// A cluster's resources, with the endpoints they were built from.
use crate::ir::cluster::Endpoints;

pub(crate) type BuiltCluster = (Endpoints, Vec<Arc<XdsResource>>);

/// A count per item: the items of a sum over routes.
type Counts<T> = BTreeMap<T, usize>;

fn count<T: Ord>(c: &mut Counts<T>, t: T, add: bool) {
    if add {
        *c.entry(t).or_default() += 1;
    } else if let std::collections::btree_map::Entry::Occupied(mut e) = c.entry(t) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

/// A backend the placed routes use: its identity, its endpoints as last resolved (or
/// refreshed), and how many routes name it.
pub(crate) struct BackendSlot {
    pub id: BackendId,
    pub endpoints: Endpoints,
    refs: usize,
}

/// What a gateway's last translation placed (see the module doc).
#[derive(Default)]
pub(crate) struct GatewayMemo {
    /// What the placements were computed against; another context places every route again.
    pub stamp: Option<super::Stamp>,
    pub routes: BTreeMap<ResourceKey, Placed>,
    pub configs: BTreeMap<Arc<str>, Config>,
    /// Route configurations whose virtual hosts changed since they were last assembled.
    pub dirty_configs: BTreeSet<Arc<str>>,
    /// The last assembled route configurations.
    pub assembled: BTreeMap<Arc<str>, Arc<XdsResource>>,
    pub overlaps: OverlapTracker,
    pub backends: BTreeMap<String, BackendSlot>,
    pub http2: Counts<String>,
    pub variants: Counts<ClusterKey>,
    pub service_rules: Counts<ServiceRule>,
    pub local: usize,
    /// Routes counted on each listener.
    pub attached: Counts<usize>,
    /// Cluster resources by cluster (and whether it speaks HTTP/2), with the endpoints they
    /// were built from.
    pub clusters: BTreeMap<(ClusterKey, bool), BuiltCluster>,
    /// TCP, UDP and TLS routes this gateway worded last time (they are translated whole each
    /// time; the ones it no longer words lose their words).
    pub l4_routes: BTreeSet<ResourceKey>,
}

impl GatewayMemo {
    /// Adds (`add`) or takes out a route's contribution to the sums.
    pub fn account(&mut self, key: &ResourceKey, p: &Placed, add: bool) {
        for (c, d) in &p.domains {
            let vh = self
                .configs
                .entry(c.clone())
                .or_default()
                .vhosts
                .entry(d.clone())
                .or_default();
            if add {
                vh.refs += 1;
            } else {
                vh.refs = vh.refs.saturating_sub(1);
            }
            self.dirty_configs.insert(c.clone());
        }
        for e in &p.entries {
            let config = self.configs.entry(e.config.clone()).or_default();
            let vh = config.vhosts.entry(e.domain.clone()).or_default();
            vh.encoded = None;
            if add {
                vh.entries
                    .entry(e.key.clone())
                    .or_default()
                    .push((e.body.clone(), e.direct_body));
            } else {
                vh.entries.remove(&e.key);
            }
            // (Its configuration is marked through the entry's domain, above.)
        }
        // Empty hosts and configurations go once nothing holds them.
        if !add {
            for (c, d) in &p.domains {
                if let Some(config) = self.configs.get_mut(c) {
                    if config.vhosts.get(d).is_some_and(|v| v.refs == 0) {
                        config.vhosts.remove(d);
                    }
                }
            }
        }
        if add {
            self.overlaps.add(p.kind, key, &p.overlaps);
        } else {
            self.overlaps.remove(p.kind, key, &p.overlaps);
        }
        for (name, (id, endpoints)) in &p.backends {
            if add {
                match self.backends.get_mut(name) {
                    Some(slot) => {
                        // The latest resolution is the current one.
                        slot.endpoints.clone_from(endpoints);
                        slot.refs += 1;
                    }
                    None => {
                        self.backends.insert(
                            name.clone(),
                            BackendSlot {
                                id: id.clone(),
                                endpoints: endpoints.clone(),
                                refs: 1,
                            },
                        );
                    }
                }
            } else if let Some(slot) = self.backends.get_mut(name) {
                slot.refs -= 1;
                if slot.refs == 0 {
                    self.backends.remove(name);
                }
            }
        }
        for h in &p.http2 {
            count(&mut self.http2, h.clone(), add);
        }
        for v in &p.variants {
            count(&mut self.variants, v.clone(), add);
        }
        for r in &p.service_rules {
            count(&mut self.service_rules, r.clone(), add);
        }
        if p.local {
            if add {
                self.local += 1;
            } else {
                self.local -= 1;
            }
        }
        for li in &p.attached {
            count(&mut self.attached, *li, add);
        }
    }

    /// Takes the endpoints an EndpointSlice change gave backends (their cluster resources are
    /// built again from them when next needed).
    pub fn refresh_endpoints(&mut self, updated: &[(String, Endpoints)]) {
        for (name, endpoints) in updated {
            if let Some(slot) = self.backends.get_mut(name) {
                slot.endpoints.clone_from(endpoints);
            }
        }
    }

    /// Forgets the cluster resources of backends `names` (what they are built from besides
    /// their endpoints may have changed).
    pub fn forget_clusters(&mut self, names: &BTreeSet<String>) {
        self.clusters
            .retain(|(k, _), _| !names.contains(&k.backend.name()));
    }
}
