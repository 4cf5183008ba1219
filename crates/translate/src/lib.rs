//! Pure translation: the folded resource set of every cluster → per-gateway Envoy xDS
//! resources and status conditions. No IO, no clocks, no randomness: every store replica
//! computes the same bytes at the same revision.
//!
//! [`Translator`] owns the resource index. Events are folded with [`Translator::apply`], which
//! records (through the dependency index) which gateways they can affect; [`Translator::recompute`]
//! retranslates only those and reports what changed.

mod affects;
mod backend;
mod backendtls;
mod envoy;
mod filters;
mod gateway;
mod grpcroute;
mod hostnames;
mod httproute;
mod index;
mod ir;
mod l4route;
mod listener;
mod options;
mod par;
mod policy;
mod ratelimit;
mod refgrant;
mod runtime;
mod session;
mod status;
mod tls;
mod traffic;
mod values;

pub use envoy::{type_url, XdsResource};
pub use gateway::CONTROLLER_NAME;
pub use options::TranslateOptions;
pub use ratelimit::{DescriptorEntry, RateLimitDomain, RateLimitRules, ServiceLimit, ServiceRule};

use flotilla_model::gateway::Condition;
use flotilla_model::{parse_object, EventBody, Kind, Object, Resource, ResourceEvent, ResourceKey};
use gateway::translate_gateway;
use index::Index;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Every xDS resource of one gateway, sorted by (type_url, name).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GatewayXds {
    /// `cluster/namespace/name`.
    pub gateway: String,
    pub resources: Vec<Arc<XdsResource>>,
    /// The rate limit service's rules of this gateway's global rate limits (its domain), if it
    /// has any. Not an xDS resource: see [`TranslatorView::rate_limit_rules`].
    pub rate_limits: Option<RateLimitDomain>,
}

impl GatewayXds {
    /// The same resources at the same versions (content hashes), and the same rate limit
    /// rules: compares a few bytes per resource instead of every body.
    pub fn same_content(&self, other: &GatewayXds) -> bool {
        self.gateway == other.gateway
            && self.rate_limits == other.rate_limits
            && self.resources.len() == other.resources.len()
            && self.resources.iter().zip(&other.resources).all(|(a, b)| {
                a.version == b.version && a.name == b.name && a.type_url == b.type_url
            })
    }
}

/// What one [`Translator::recompute`] changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Gateways whose xDS resources changed (new content in full).
    pub updated: Vec<Arc<GatewayXds>>,
    /// Gateway ids that no longer exist.
    pub removed: Vec<String>,
    /// Resources whose computed status changed.
    pub status_changed: Vec<ResourceKey>,
}

/// Why an event could not be folded. The event is skipped; the rest of the batch applies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid event from {source_id} for cluster {cluster}: {message}")]
    InvalidEvent {
        source_id: String,
        cluster: String,
        message: String,
    },
    #[error("invalid object {key}: {source}")]
    InvalidObject {
        key: ResourceKey,
        #[source]
        source: Box<flotilla_model::ParseError>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Route parent statuses by route, then by the gateway that computed them.
type RouteParents = BTreeMap<ResourceKey, BTreeMap<ResourceKey, gateway::ParentWords>>;

/// Records what gateway `gw` says of route `route`'s parents (nothing: `words` is empty);
/// true when that changed.
fn set_route_words(
    route_parents: &mut RouteParents,
    route: &ResourceKey,
    gw: &ResourceKey,
    words: gateway::ParentWords,
) -> bool {
    if words.is_empty() {
        let Some(by_gw) = route_parents.get_mut(route) else {
            return false;
        };
        let changed = by_gw.remove(gw).is_some();
        if by_gw.is_empty() {
            route_parents.remove(route);
        }
        return changed;
    }
    let by_gw = route_parents.entry(route.clone()).or_default();
    if by_gw.get(gw) == Some(&words) {
        return false;
    }
    by_gw.insert(gw.clone(), words);
    true
}

/// One gateway to translate: its routes to place again (`None`: all of it) and its memo,
/// taken out of the translator while it is translated (`None`: the gateway is gone or not of
/// our class).
struct GatewayJob {
    key: ResourceKey,
    only: Option<BTreeSet<ResourceKey>>,
    memo: Option<gateway::GatewayMemo>,
}

/// Events parsed per thread at least when a world is folded at once ([`Translator::apply_all`]).
const PARSE_PER_THREAD: usize = 256;

/// An event checked and its object parsed: what folding it needs, and nothing it can refuse.
enum Prepared {
    Upsert {
        resource: Arc<Resource>,
        origin: Option<String>,
    },
    Delete(ResourceKey),
    Resync {
        cluster: String,
        keys: Vec<ResourceKey>,
        keep_origins: Vec<String>,
    },
}

/// Checks `event` and parses its object (reading nothing of any translator).
fn prepare(event: ResourceEvent) -> Result<Prepared> {
    event.validate().map_err(|message| Error::InvalidEvent {
        source_id: event.source.clone(),
        cluster: event.cluster.clone(),
        message,
    })?;
    Ok(match event.body {
        EventBody::Upsert {
            key,
            object,
            origin,
        } => {
            let resource =
                parse_object(&event.cluster, object).map_err(|e| Error::InvalidObject {
                    key: key.clone(),
                    source: Box::new(e),
                })?;
            if resource.key != key {
                return Err(Error::InvalidEvent {
                    source_id: event.source,
                    cluster: event.cluster,
                    message: format!(
                        "event key {key} does not match its object ({})",
                        resource.key
                    ),
                });
            }
            Prepared::Upsert {
                resource: Arc::new(resource),
                origin,
            }
        }
        EventBody::Delete { key } => Prepared::Delete(key),
        EventBody::Resync { keys, keep_origins } => Prepared::Resync {
            cluster: event.cluster,
            keys,
            keep_origins,
        },
    })
}

/// The resource index plus the translated output of every gateway.
#[derive(Default)]
pub struct Translator {
    index: Index,
    // The three maps readers see are persistent maps, so that [`Translator::view`] is O(1).
    gateways: imbl::OrdMap<String, Arc<GatewayXds>>,
    statuses: imbl::OrdMap<ResourceKey, Arc<serde_json::Value>>,
    /// Gateway status as Envoy Gateway's translator reports it (without the Gateway-level
    /// conditions its status updater adds; see `runtime`).
    translator_statuses: imbl::OrdMap<ResourceKey, Arc<serde_json::Value>>,
    /// Route parent statuses by route, then by the gateway that computed them.
    route_parents: RouteParents,
    /// Status of resources a gateway decides besides its routes (ListenerSets), by resource,
    /// with the gateway that decided it.
    owned_status: BTreeMap<ResourceKey, ResourceKey>,
    /// BackendTLSPolicy ancestorRefs by policy, then by the gateway that recorded them.
    policy_ancestors: BTreeMap<ResourceKey, BTreeMap<ResourceKey, Vec<serde_json::Value>>>,
    /// The policies each gateway recorded in `policy_ancestors`, so retranslating one gateway
    /// forgets its old words without scanning every policy. (The routes it words are its
    /// memo's.)
    reported: BTreeMap<ResourceKey, Vec<ResourceKey>>,
    /// What each gateway's last translation placed, route by route (see
    /// [`gateway::GatewayMemo`]): the next translation places only the routes named in
    /// `dirty_routes`.
    memos: BTreeMap<ResourceKey, gateway::GatewayMemo>,
    /// Gateways to retranslate at the next `recompute` because of routes alone, with those
    /// routes: the ones that changed, or read something that did (a Service, its endpoints, a
    /// Backend, a BackendTLSPolicy). A change outside a route's own inputs marks the gateway
    /// whole (`dirty`).
    dirty_routes: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
    /// Routes placed by gateway translations (tests check which changes place few).
    #[cfg(test)]
    placements: usize,
    /// The last policy pass of each cluster: which policies apply where, and what the pass
    /// read (a change it did not read reuses it).
    policy_passes: BTreeMap<String, Arc<(policy::attachments::Policies, policy::PolicyDeps)>>,
    /// The backends each gateway's routes use, with the endpoints of their
    /// ClusterLoadAssignments (see [`Translator::refresh_endpoints`]).
    backends: BTreeMap<ResourceKey, Arc<ir::cluster::Backends>>,
    /// Gateways an EndpointSlice change touched since the last `recompute`, with the
    /// (namespace, name) of the Services (or ServiceImports) those slices serve: their
    /// ClusterLoadAssignments are rewritten without retranslating routes or listeners, when
    /// that is all that changes.
    endpoint_dirty: BTreeMap<ResourceKey, BTreeSet<(String, String)>>,
    /// Gateway translations run (tests check which changes avoid them).
    #[cfg(test)]
    translations: usize,
    /// Gateways to retranslate at the next `recompute`.
    dirty: BTreeSet<ResourceKey>,
    /// Resources whose own status must be recomputed (classes, deleted objects).
    dirty_status: BTreeSet<ResourceKey>,
    /// Where each resource came from, as its last upsert said (see [`EventBody::Upsert`]).
    /// Beside the object, not in it: the stored object stays exactly what the source sent.
    /// [`Translator::from_resources`] starts without origins: a snapshot that should survive a
    /// resync with `keep_origins` must carry them (the store's snapshots do, from the view).
    /// A persistent map, as it is part of [`Translator::view`].
    origins: imbl::OrdMap<ResourceKey, Arc<str>>,
}

impl Translator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A translator with the given feature switches (see [`TranslateOptions`]).
    pub fn with_options(options: TranslateOptions) -> Self {
        let mut t = Self::default();
        t.index.options = options;
        t
    }

    /// Builds a translator from stored objects (a snapshot), translating everything.
    pub fn from_resources(
        resources: impl IntoIterator<Item = (ResourceKey, serde_json::Value)>,
    ) -> Result<(Self, Changes)> {
        let mut t = Self::new();
        for (key, raw) in resources {
            let r = parse_object(&key.cluster, raw).map_err(|e| Error::InvalidObject {
                key: key.clone(),
                source: Box::new(e),
            })?;
            t.upsert(Arc::new(r));
        }
        let changes = t.recompute();
        Ok((t, changes))
    }

    /// A translator holding exactly the resources and origins of `view`, all translated, with
    /// what that translation produced. This is what the view's own translator holds once its
    /// pending work is recomputed: the store uses it to get back to a known state after the
    /// translator panicked halfway through a change.
    pub fn rebuild(view: &TranslatorView) -> (Self, Changes) {
        let mut t = Self::with_options(view.options.clone());
        for r in view.resources() {
            t.upsert_shared(r.clone());
        }
        t.origins = view.origins.clone();
        let changes = t.recompute();
        (t, changes)
    }

    /// Folds one event into the index and marks the gateways it can affect. The object is
    /// copied; [`Translator::apply_owned`] folds an event the caller no longer needs without
    /// that copy.
    pub fn apply(&mut self, event: &ResourceEvent) -> Result<()> {
        self.apply_owned(event.clone())
    }

    /// [`Translator::apply`], taking the event: its object becomes the stored object as it
    /// is (a deep copy of every object was a third of folding a world).
    pub fn apply_owned(&mut self, event: ResourceEvent) -> Result<()> {
        let prepared = prepare(event)?;
        self.fold(prepared);
        Ok(())
    }

    /// Folds `events` in order, exactly as [`Translator::apply_owned`] on each in turn would,
    /// but checks and parses their objects on every core first (parsing reads nothing of the
    /// translator, and is most of folding). Returns each event's result, in order. For a
    /// world at once: a snapshot restored, a file translated.
    pub fn apply_all(&mut self, events: Vec<ResourceEvent>) -> Vec<Result<()>> {
        par::map_owned(events, PARSE_PER_THREAD, prepare)
            .into_iter()
            .map(|p| p.map(|p| self.fold(p)))
            .collect()
    }

    /// Folds one checked, parsed event into the index.
    fn fold(&mut self, event: Prepared) {
        match event {
            Prepared::Upsert { resource, origin } => {
                match origin {
                    Some(o) => self.origins.insert(resource.key.clone(), Arc::from(o)),
                    None => self.origins.remove(&resource.key),
                };
                self.upsert(resource);
            }
            Prepared::Delete(key) => self.delete(&key),
            Prepared::Resync {
                cluster,
                keys,
                keep_origins,
            } => {
                let keep: BTreeSet<&ResourceKey> = keys.iter().collect();
                let keep_origins: BTreeSet<&str> =
                    keep_origins.iter().map(String::as_str).collect();
                let gone: Vec<ResourceKey> = self
                    .index
                    .resources
                    .keys()
                    .filter(|k| k.cluster == cluster && !keep.contains(k))
                    .filter(|k| !self.origin(k).is_some_and(|o| keep_origins.contains(o)))
                    .cloned()
                    .collect();
                for k in &gone {
                    self.delete(k);
                }
            }
        }
    }

    fn upsert(&mut self, r: Arc<Resource>) {
        #[cfg(feature = "fault-injection")]
        if fault(&r.object) == Some("panic-on-apply") {
            panic!("injected fault: panic on apply of {}", r.key);
        }
        self.upsert_shared(r);
    }

    fn upsert_shared(&mut self, r: Arc<Resource>) {
        if self
            .index
            .resources
            .get(&r.key)
            .is_some_and(|old| old.raw == r.raw)
        {
            return;
        }
        let key = r.key.clone();
        if let Some(old) = self.index.insert(r.clone()) {
            self.mark_affected(&old);
        }
        self.mark_affected(&r);
        self.dirty_status.insert(key);
    }

    fn delete(&mut self, key: &ResourceKey) {
        self.origins.remove(key);
        if let Some(old) = self.index.remove(key) {
            self.mark_affected(&old);
            self.dirty_status.insert(key.clone());
        }
    }

    /// Marks the gateways `r` can affect: the dependency index's edges, and for the policy
    /// kinds, their targets (see [`policy::affected_gateways`]).
    fn mark_affected(&mut self, r: &Resource) {
        match r.key.kind {
            // A BackendTrafficPolicy that names routes alone concerns those routes (on every
            // gateway they attach to); one naming a Gateway, a ListenerSet or selecting by
            // label, and every ClientTrafficPolicy, its gateways whole.
            Kind::BackendTrafficPolicy if policy::route_targets(r).is_some() => {
                let routes: Vec<Arc<Resource>> = policy::route_targets(r)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|k| self.index.resources.get(k).cloned())
                    .collect();
                for route in routes {
                    self.mark_route(&route);
                }
            }
            Kind::ClientTrafficPolicy | Kind::BackendTrafficPolicy => {
                policy::affected_gateways(&self.index, r, &mut self.dirty)
            }
            Kind::EndpointSlice => {
                let mut gateways = BTreeSet::new();
                self.index.affected_gateways(r, &mut gateways);
                let services: Vec<(String, String)> = index::Index::slice_services(r)
                    .into_iter()
                    .map(|k| (k.namespace, k.name))
                    .collect();
                for gw in gateways {
                    self.endpoint_dirty
                        .entry(gw)
                        .or_default()
                        .extend(services.iter().cloned());
                }
            }
            // A route, and what its backends are made of, reach the gateways of the routes
            // concerned, for those routes alone.
            Kind::HTTPRoute
            | Kind::GRPCRoute
            | Kind::TLSRoute
            | Kind::TCPRoute
            | Kind::UDPRoute => self.mark_route(r),
            Kind::Service | Kind::ServiceImport | Kind::Backend => {
                self.mark_routes_of(&r.key);
                if r.key.kind == Kind::Service {
                    self.index
                        .gateways_importing(&r.key, false, &mut self.dirty);
                }
            }
            Kind::BackendTLSPolicy => {
                let Object::BackendTLSPolicy(p) = &r.object else {
                    return;
                };
                let targets: Vec<ResourceKey> = p
                    .spec
                    .target_refs
                    .iter()
                    .map(|t| {
                        ResourceKey::new(&r.key.cluster, Kind::Service, &r.key.namespace, &t.name)
                    })
                    .collect();
                for t in targets {
                    self.mark_routes_of(&t);
                }
            }
            _ => self.index.affected_gateways(r, &mut self.dirty),
        }
    }

    /// Marks route `r` (as it is, or as it was) for placement again on every gateway it names.
    fn mark_route(&mut self, r: &Resource) {
        let mut gateways = BTreeSet::new();
        self.index.affected_gateways(r, &mut gateways);
        for gw in gateways {
            self.dirty_routes
                .entry(gw)
                .or_default()
                .insert(r.key.clone());
        }
    }

    /// Marks the routes using a backend named as `svc` (Service, ServiceImport or Backend).
    fn mark_routes_of(&mut self, svc: &ResourceKey) {
        let routes: Vec<Arc<Resource>> = self
            .index
            .routes_of_service(svc)
            .filter_map(|k| self.index.resources.get(k).cloned())
            .collect();
        for route in routes {
            self.mark_route(&route);
        }
    }

    /// Rewrites the ClusterLoadAssignments of gateway `gw` whose backends serve one of
    /// `services` from the endpoints the index holds now, without retranslating anything
    /// else. False when that would not give what a retranslation gives: a backend's endpoints
    /// changed in a way translation reads (none ready, none at all, host names, which make a
    /// DNS cluster), a service its routes name but that is not among its resolved backends
    /// (its resolution failed: it must be tried again), a backend it cannot recompute alone
    /// (UDP rules' merged endpoints), or a gateway it has not translated. The caller then
    /// retranslates the gateway.
    fn refresh_endpoints(
        &mut self,
        gw: &ResourceKey,
        services: &BTreeSet<(String, String)>,
        changes: &mut Changes,
    ) -> bool {
        use ir::cluster::BackendId;
        let id = gw.gateway_id();
        let (Some(backends), Some(xds)) = (self.backends.get(gw), self.gateways.get(&id)) else {
            return false;
        };
        if backends
            .values()
            .any(|(b, _)| matches!(b, BackendId::Named(_)))
        {
            return false;
        }
        // What translation reads of a backend's endpoints besides the endpoints themselves.
        let shape = |eps: &[envoy::EndpointAddr]| {
            (
                eps.is_empty(),
                eps.iter().any(|e| e.ready),
                eps.iter().all(|e| e.ip.parse::<std::net::IpAddr>().is_ok()),
            )
        };
        let mut updated: Vec<(String, crate::ir::cluster::Endpoints)> = Vec::new();
        let mut seen: BTreeSet<&(String, String)> = BTreeSet::new();
        for (name, (backend, old)) in backends.iter() {
            let nn = match backend {
                BackendId::Service {
                    namespace, name, ..
                }
                | BackendId::ServiceImport {
                    namespace, name, ..
                } => (namespace.clone(), name.clone()),
                _ => continue,
            };
            let Some(nn) = services.get(&nn) else {
                continue;
            };
            seen.insert(nn);
            let Some(now) = backend::current_endpoints(&self.index, &gw.cluster, backend) else {
                return false;
            };
            if *now == **old {
                continue;
            }
            if shape(&now) != shape(old) || !shape(&now).2 {
                return false;
            }
            updated.push((name.clone(), crate::ir::cluster::Endpoints::from(now)));
        }
        if seen.len() < services.len() {
            return false;
        }
        if updated.is_empty() {
            return true;
        }
        let mut resources = xds.resources.clone();
        for (name, endpoints) in &updated {
            let Some(slot) = resources
                .iter_mut()
                .find(|r| r.type_url == type_url::ENDPOINT && r.name == *name)
            else {
                // Not an EDS backend after all (its cluster holds its endpoints).
                return false;
            };
            *slot = envoy::load_assignment(name, endpoints);
        }
        let mut backends = (**backends).clone();
        if let Some(memo) = self.memos.get_mut(gw) {
            memo.refresh_endpoints(&updated);
        }
        for (name, endpoints) in updated {
            if let Some(entry) = backends.get_mut(&name) {
                entry.1 = endpoints;
            }
        }
        let xds = Arc::new(GatewayXds {
            resources,
            ..(**xds).clone()
        });
        self.backends.insert(gw.clone(), Arc::new(backends));
        self.gateways.insert(id, xds.clone());
        changes.updated.push(xds);
        true
    }

    fn class_is_ours(&self, cluster: &str, class: &str) -> bool {
        let k = ResourceKey::new(cluster, Kind::GatewayClass, "", class);
        matches!(self.index.resources.get(&k).map(|r| &r.object),
            Some(Object::GatewayClass(c)) if c.spec.controller_name == CONTROLLER_NAME)
    }

    /// Retranslates every gateway marked since the last call.
    pub fn recompute(&mut self) -> Changes {
        let mut changes = Changes::default();
        let mut routes_touched: BTreeSet<ResourceKey> = BTreeSet::new();
        // (cluster, namespace) of BackendTLSPolicies whose status may have changed.
        let mut tls_ns_touched: BTreeSet<(String, String)> = BTreeSet::new();
        let dirty = std::mem::take(&mut self.dirty);
        // Endpoint-only changes first: a gateway whose ClusterLoadAssignments alone change is
        // not retranslated (the routes using the others' services are placed again).
        for (gw, services) in std::mem::take(&mut self.endpoint_dirty) {
            if !dirty.contains(&gw) && !self.refresh_endpoints(&gw, &services, &mut changes) {
                let routes: BTreeSet<ResourceKey> = services
                    .iter()
                    .flat_map(|(ns, name)| {
                        let svc = ResourceKey::new(&gw.cluster, Kind::Service, ns, name);
                        self.index
                            .routes_of_service(&svc)
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .collect();
                self.dirty_routes.entry(gw).or_default().extend(routes);
            }
        }
        let mut dirty_routes = std::mem::take(&mut self.dirty_routes);
        dirty_routes.retain(|gw, _| !dirty.contains(gw));
        // Clusters whose ClientTrafficPolicy/BackendTrafficPolicy statuses may have changed:
        // a gateway or route of theirs was retranslated, or a policy changed.
        let mut policy_clusters: BTreeSet<String> = dirty
            .iter()
            .chain(dirty_routes.keys())
            .map(|k| k.cluster.clone())
            .collect();
        policy_clusters.extend(
            self.dirty_status
                .iter()
                .filter(|k| {
                    matches!(
                        k.kind,
                        Kind::ClientTrafficPolicy | Kind::BackendTrafficPolicy
                    )
                })
                .map(|k| k.cluster.clone()),
        );
        // Of those, the clusters whose last pass read something that changed since (or that
        // have none): the pass runs again there; elsewhere its result stands.
        policy_clusters.retain(|c| match self.policy_passes.get(c) {
            None => true,
            Some(pass) => self
                .dirty_status
                .iter()
                .any(|k| k.cluster == *c && pass.1.affected_by(k)),
        });
        // Which policies apply where, per cluster, with their statuses: gateway translation
        // reads the attachments, and the statuses are set below.
        let mut policy_statuses: Vec<(ResourceKey, serde_json::Value)> = Vec::new();
        for c in &policy_clusters {
            let (pass, statuses) = self.policy_pass(c);
            self.policy_passes.insert(c.clone(), Arc::new(pass));
            policy_statuses.extend(statuses);
        }
        let mut gateways: BTreeMap<ResourceKey, Option<BTreeSet<ResourceKey>>> =
            dirty.into_iter().map(|gw| (gw, None)).collect();
        gateways.extend(dirty_routes.into_iter().map(|(gw, r)| (gw, Some(r))));
        // The gateways to translate (present and of our class), each with its memo taken out,
        // in key order.
        let mut jobs: Vec<GatewayJob> = Vec::with_capacity(gateways.len());
        for (gw_key, only) in gateways {
            let ours = match self.index.resources.get(&gw_key).map(|r| &r.object) {
                Some(Object::Gateway(g)) => {
                    self.class_is_ours(&gw_key.cluster, &g.spec.gateway_class_name)
                }
                _ => false,
            };
            // Drop what this gateway said about policies before; it is said anew below.
            let old_policies = self.reported.remove(&gw_key).unwrap_or_default();
            for policy in old_policies {
                if let Some(by_gw) = self.policy_ancestors.get_mut(&policy) {
                    by_gw.remove(&gw_key);
                    if by_gw.is_empty() {
                        self.policy_ancestors.remove(&policy);
                    }
                }
                tls_ns_touched.insert((policy.cluster.clone(), policy.namespace.clone()));
            }
            #[cfg(feature = "fault-injection")]
            if let (true, Some(r)) = (ours, self.index.resources.get(&gw_key)) {
                if fault(&r.object) == Some("panic-on-translate") {
                    panic!("injected fault: panic translating {gw_key}");
                }
            }
            let memo = ours.then(|| self.memos.remove(&gw_key).unwrap_or_default());
            jobs.push(GatewayJob {
                key: gw_key,
                only,
                memo,
            });
        }
        // Translated on every core: each gateway reads the index, its cluster's policies and
        // its own memo, nothing another gateway writes.
        let (index, passes) = (&self.index, &self.policy_passes);
        let translated = par::map_owned(jobs, 1, |job| {
            let GatewayJob { key, only, memo } = job;
            let done = memo.and_then(|mut memo| {
                let Some(Object::Gateway(gw)) = index.resources.get(&key).map(|r| &r.object) else {
                    return None;
                };
                let none = policy::attachments::Policies::default();
                let attached = passes.get(&key.cluster).map_or(&none, |p| &p.0);
                let replace = match &only {
                    Some(routes) => gateway::Replace::Routes(routes),
                    None => gateway::Replace::All,
                };
                let result = translate_gateway(index, &key, gw, attached, &mut memo, replace);
                Some((memo, result))
            });
            (key, only.is_none(), done)
        });
        // Recorded in key order, as translating one gateway after the other would.
        for (gw_key, whole, done) in translated {
            let id = gw_key.gateway_id();
            let gw = match self.index.resources.get(&gw_key).map(|r| &r.object) {
                Some(Object::Gateway(g)) => Some(g),
                _ => None,
            };
            match (gw, done) {
                (Some(gw), Some((memo, result))) => {
                    self.memos.insert(gw_key.clone(), memo);
                    tracing::debug!(gateway = %gw_key, placed = result.placed, whole, "gateway translated");
                    #[cfg(test)]
                    {
                        self.translations += 1;
                        self.placements += result.placed;
                    }
                    self.backends
                        .insert(gw_key.clone(), Arc::new(result.backends));
                    let mut reported = Vec::new();
                    for (policy, ancestors) in result.policy_ancestors {
                        tls_ns_touched.insert((policy.cluster.clone(), policy.namespace.clone()));
                        reported.push(policy.clone());
                        self.policy_ancestors
                            .entry(policy)
                            .or_default()
                            .insert(gw_key.clone(), ancestors);
                    }
                    for (route, parents) in result.route_parents {
                        if set_route_words(&mut self.route_parents, &route, &gw_key, parents) {
                            routes_touched.insert(route);
                        }
                    }
                    self.reported.insert(gw_key.clone(), reported);
                    let full = runtime::with_gateway_conditions(
                        &self.index,
                        &gw_key,
                        gw,
                        result.status.clone(),
                    );
                    self.translator_statuses
                        .insert(gw_key.clone(), Arc::new(result.status));
                    self.set_status(&gw_key, Some(full), &mut changes);
                    self.set_owned_status(&gw_key, result.other_status, &mut changes);
                    if !self
                        .gateways
                        .get(&id)
                        .is_some_and(|g| g.same_content(&result.xds))
                    {
                        let xds = Arc::new(result.xds);
                        self.gateways.insert(id, xds.clone());
                        changes.updated.push(xds);
                    }
                }
                _ => {
                    // Routes this gateway no longer words at all.
                    if let Some(memo) = self.memos.remove(&gw_key) {
                        for route in memo.routes.into_keys().chain(memo.l4_routes) {
                            if set_route_words(&mut self.route_parents, &route, &gw_key, vec![]) {
                                routes_touched.insert(route);
                            }
                        }
                    }
                    self.backends.remove(&gw_key);
                    self.translator_statuses.remove(&gw_key);
                    self.set_status(&gw_key, None, &mut changes);
                    self.set_owned_status(&gw_key, vec![], &mut changes);
                    if self.gateways.remove(&id).is_some() {
                        changes.removed.push(id);
                    }
                }
            }
        }
        let dirty_status = std::mem::take(&mut self.dirty_status);
        for key in dirty_status {
            match key.kind {
                Kind::HTTPRoute
                | Kind::GRPCRoute
                | Kind::TLSRoute
                | Kind::TCPRoute
                | Kind::UDPRoute => {
                    routes_touched.insert(key);
                }
                Kind::BackendTLSPolicy => {
                    tls_ns_touched.insert((key.cluster.clone(), key.namespace.clone()));
                    // A deleted policy loses its status; a present one is recomputed below.
                    if !self.index.resources.contains_key(&key) {
                        self.set_status(&key, None, &mut changes);
                    }
                }
                // A deleted policy loses its status; a present one is recomputed below.
                Kind::ClientTrafficPolicy | Kind::BackendTrafficPolicy
                    if !self.index.resources.contains_key(&key) =>
                {
                    self.set_status(&key, None, &mut changes);
                }
                Kind::Backend => {
                    let status = match self.index.resources.get(&key).map(|r| &r.object) {
                        Some(Object::Backend(b)) => {
                            Some(backend::backend_status(b, &self.index.options))
                        }
                        _ => None,
                    };
                    self.set_status(&key, status, &mut changes);
                }
                Kind::GatewayClass => {
                    let status = match self.index.resources.get(&key).map(|r| &r.object) {
                        Some(Object::GatewayClass(c))
                            if c.spec.controller_name == CONTROLLER_NAME =>
                        {
                            Some(serde_json::json!({"conditions": [Condition::new(
                                "Accepted", true, "Accepted", "Valid GatewayClass",
                                c.metadata.generation)]}))
                        }
                        _ => None,
                    };
                    self.set_status(&key, status, &mut changes);
                }
                _ => {}
            }
        }
        for (key, status) in policy_statuses {
            self.set_status(&key, Some(status), &mut changes);
        }
        for (cluster, ns) in tls_ns_touched {
            let ancestors = |policy: &ResourceKey| -> Vec<serde_json::Value> {
                self.policy_ancestors
                    .get(policy)
                    .into_iter()
                    .flat_map(|by_gw| by_gw.values().flatten().cloned())
                    .collect()
            };
            let statuses = policy::backendtls::namespace_statuses(
                &self.index,
                &cluster,
                &ns,
                &ancestors,
                CONTROLLER_NAME,
            );
            for (key, status) in statuses {
                self.set_status(&key, status, &mut changes);
            }
        }
        // Each route's status reads what its gateways said: built on every core.
        let (route_parents, index) = (&self.route_parents, &self.index);
        let statuses = par::map_owned(routes_touched.into_iter().collect(), 512, |route| {
            let status = route_parents.get(&route).map(|by_gw| {
                let mut parents: Vec<&(usize, Arc<serde_json::Value>)> =
                    by_gw.values().flatten().collect();
                parents.sort_by_key(|(i, _)| *i);
                // Built directly: `json!` would serialize every condition again.
                let parents = parents.into_iter().map(|(_, v)| (**v).clone()).collect();
                let mut status = serde_json::Map::new();
                status.insert("parents".into(), serde_json::Value::Array(parents));
                serde_json::Value::Object(status)
            });
            let status = status.filter(|_| index.resources.contains_key(&route));
            (route, status)
        });
        for (route, status) in statuses {
            self.set_status(&route, status, &mut changes);
        }
        changes
    }

    /// Attaches every ClientTrafficPolicy and BackendTrafficPolicy of `cluster` (their
    /// attachment depends on every policy of the kind: precedence) and computes their
    /// statuses.
    fn policy_pass(
        &self,
        cluster: &str,
    ) -> (
        (policy::attachments::Policies, policy::PolicyDeps),
        Vec<(ResourceKey, serde_json::Value)>,
    ) {
        let is_ours = |g: &flotilla_model::gateway::Gateway| {
            self.class_is_ours(cluster, &g.spec.gateway_class_name)
        };
        let gateways = policy::our_gateways(&self.index, cluster, &is_ours);
        let ctp = policy::ctp::attach(&self.index, cluster, &gateways, CONTROLLER_NAME);
        let btp = policy::btp::attach(&self.index, cluster, &gateways, CONTROLLER_NAME);
        let statuses = ctp.statuses.into_iter().chain(btp.statuses).collect();
        let policies = policy::attachments::Policies {
            ctp: ctp.attachment,
            btp: btp.attachment,
        };
        (
            (policies, policy::PolicyDeps::of(&self.index, cluster)),
            statuses,
        )
    }

    /// Replaces the statuses gateway `gw` decided for other resources with `statuses`.
    fn set_owned_status(
        &mut self,
        gw: &ResourceKey,
        statuses: Vec<(ResourceKey, serde_json::Value)>,
        changes: &mut Changes,
    ) {
        let old: Vec<ResourceKey> = self
            .owned_status
            .iter()
            .filter(|(_, g)| *g == gw)
            .map(|(k, _)| k.clone())
            .collect();
        let new: BTreeSet<ResourceKey> = statuses.iter().map(|(k, _)| k.clone()).collect();
        for k in old.into_iter().filter(|k| !new.contains(k)) {
            self.owned_status.remove(&k);
            self.set_status(&k, None, changes);
        }
        for (k, st) in statuses {
            self.owned_status.insert(k.clone(), gw.clone());
            self.set_status(&k, Some(st), changes);
        }
    }

    fn set_status(
        &mut self,
        key: &ResourceKey,
        status: Option<serde_json::Value>,
        changes: &mut Changes,
    ) {
        let changed = match status {
            Some(s) => {
                if self.statuses.get(key).is_some_and(|old| **old == s) {
                    false
                } else {
                    self.statuses.insert(key.clone(), Arc::new(s));
                    true
                }
            }
            None => self.statuses.remove(key).is_some(),
        };
        if changed {
            changes.status_changed.push(key.clone());
        }
    }

    /// Every stored resource, in key order (for snapshots and queries).
    pub fn resources(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.index.resources.values()
    }

    pub fn resource(&self, key: &ResourceKey) -> Option<&Arc<Resource>> {
        self.index.resources.get(key)
    }

    /// Where the resource came from, as its last upsert said (for a file agent: the file's
    /// path relative to its directory). A resync keeps the resources whose origin it names
    /// in `keep_origins`.
    pub fn origin(&self, key: &ResourceKey) -> Option<&str> {
        self.origins.get(key).map(|o| &**o)
    }

    /// The computed `status` of a resource (Gateway, HTTPRoute, GatewayClass), as Kubernetes
    /// would show it.
    pub fn status(&self, key: &ResourceKey) -> Option<&serde_json::Value> {
        self.statuses.get(key).map(|s| &**s)
    }

    /// The status as Envoy Gateway's translator computes it: without the GatewayClass status
    /// and the Gateway-level Accepted/Programmed that its provider writes. `flotilla translate`
    /// prints this, so its output compares with Envoy Gateway's translator tests.
    pub fn translator_status(&self, key: &ResourceKey) -> Option<&serde_json::Value> {
        match key.kind {
            Kind::GatewayClass => None,
            Kind::Gateway => self.translator_statuses.get(key).map(|s| &**s),
            _ => self.status(key),
        }
    }

    /// The translated output of every gateway, by gateway id.
    pub fn gateways(&self) -> &imbl::OrdMap<String, Arc<GatewayXds>> {
        &self.gateways
    }

    /// The rate limit service's rules: see [`rate_limit_rules`].
    pub fn rate_limit_rules(&self) -> RateLimitRules {
        rate_limit_rules(&self.gateways)
    }

    /// The switches this translator was built with.
    pub fn options(&self) -> &TranslateOptions {
        &self.index.options
    }

    /// An immutable view of what readers see (resources, statuses, gateways), O(1) to take:
    /// the maps are persistent, so the view shares everything with the translator and the
    /// translator's next change copies only what it touches. Readers (API, watch streams,
    /// snapshots) hold a view while the translator moves on, and never block it.
    pub fn view(&self) -> TranslatorView {
        TranslatorView {
            resources: self.index.resources.clone(),
            statuses: self.statuses.clone(),
            gateways: self.gateways.clone(),
            origins: self.origins.clone(),
            options: self.index.options.clone(),
        }
    }
}

/// The test hook's annotation (see the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
fn fault(o: &Object) -> Option<&str> {
    o.metadata()
        .annotations
        .as_ref()?
        .get("flotilla.io/fault")
        .map(String::as_str)
}

/// What a [`Translator`] had computed at one moment: see [`Translator::view`].
#[derive(Clone, Default)]
pub struct TranslatorView {
    resources: imbl::OrdMap<ResourceKey, Arc<Resource>>,
    statuses: imbl::OrdMap<ResourceKey, Arc<serde_json::Value>>,
    gateways: imbl::OrdMap<String, Arc<GatewayXds>>,
    origins: imbl::OrdMap<ResourceKey, Arc<str>>,
    /// The options of the translator the view is of (a rebuild keeps them).
    options: TranslateOptions,
}

impl TranslatorView {
    /// See [`Translator::origin`].
    pub fn origin(&self, key: &ResourceKey) -> Option<&str> {
        self.origins.get(key).map(|o| &**o)
    }

    /// Every stored resource, in key order.
    pub fn resources(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    /// Resources with keys from `start` on (inclusive), in key order: one page of a list.
    pub fn resources_from<'a>(
        &'a self,
        start: Option<&ResourceKey>,
    ) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
        use std::ops::Bound;
        let lower = match start {
            Some(k) => Bound::Included(k.clone()),
            None => Bound::Unbounded,
        };
        self.resources
            .range((lower, Bound::Unbounded))
            .map(|(_, r)| r)
    }

    pub fn resource(&self, key: &ResourceKey) -> Option<&Arc<Resource>> {
        self.resources.get(key)
    }

    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// See [`Translator::status`].
    pub fn status(&self, key: &ResourceKey) -> Option<&serde_json::Value> {
        self.statuses.get(key).map(|s| &**s)
    }

    /// Every computed status, by key. A persistent map: two views' maps diff cheaply
    /// (`imbl::OrdMap::diff` skips the subtrees they share), which is how the store learns
    /// which statuses changed between two revisions.
    pub fn statuses(&self) -> &imbl::OrdMap<ResourceKey, Arc<serde_json::Value>> {
        &self.statuses
    }

    /// The translated output of every gateway, by gateway id.
    pub fn gateways(&self) -> &imbl::OrdMap<String, Arc<GatewayXds>> {
        &self.gateways
    }

    /// The rate limit service's rules: see [`rate_limit_rules`].
    pub fn rate_limit_rules(&self) -> RateLimitRules {
        rate_limit_rules(&self.gateways)
    }
}

/// The rules a rate limit service needs for the global rate limits of every gateway: one
/// domain per gateway, in gateway id order. A function of the translated state, so every
/// replica (and every rate limit service given it) agrees.
pub fn rate_limit_rules(gateways: &imbl::OrdMap<String, Arc<GatewayXds>>) -> RateLimitRules {
    RateLimitRules {
        domains: gateways
            .values()
            .filter_map(|g| g.rate_limits.clone())
            .collect(),
    }
}

#[cfg(all(test, feature = "corpus"))]
mod corpus_tests;
#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
