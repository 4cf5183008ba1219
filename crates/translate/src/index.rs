//! The resource index: every object of every cluster, plus the reverse maps that answer
//! "which gateways can this object affect" without scanning everything.

use crate::envoy::EndpointAddr;
use crate::ir::cluster::BackendId;
use flotilla_model::{Kind, Object, Resource, ResourceKey, GATEWAY_GROUP};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label a Multi-Cluster Services EndpointSlice names its ServiceImport with.
pub(crate) const MCS_SERVICE_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";

#[derive(Default)]
pub(crate) struct Index {
    /// A persistent map: cloning it (for a reader's snapshot) is O(1), and the writer's next
    /// change copies only the path it touches.
    pub resources: imbl::OrdMap<ResourceKey, Arc<Resource>>,
    /// Gateway key -> HTTPRoutes whose parentRefs name it.
    routes_by_gateway: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
    /// Service key -> HTTPRoutes whose backendRefs name it.
    routes_by_service: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
    /// Service key -> its EndpointSlices.
    slices_by_service: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
    /// Multi-Cluster Services: (namespace, name) -> clusters exporting that Service
    /// (ServiceExport), and -> clusters holding a ServiceImport of it.
    exports: BTreeMap<(String, String), BTreeSet<String>>,
    imports: BTreeMap<(String, String), BTreeSet<String>>,
    /// The translator's feature switches.
    pub options: crate::TranslateOptions,
    /// Backend resolutions since the index last changed.
    pub(crate) resolved: ResolveCache,
}

/// What resolving a backendRef reads of the route and the ref (see
/// `backend::resolve_backend`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ResolveKey {
    pub cluster: String,
    pub route_kind: Kind,
    pub route_namespace: String,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub port: Option<i32>,
    /// A backend of weight 0 is resolved without its endpoints' checks.
    pub weighted: bool,
}

/// A resolution: the backend and its endpoints, or why it failed.
use crate::ir::cluster::Endpoints;

pub(crate) type Resolution = Result<(BackendId, Endpoints), (&'static str, String)>;

/// Backend resolutions, kept while the index does not change (it is emptied by every insert and
/// removal): a translation resolves each backend once, however many routes name it. Shared by
/// the threads placing routes.
#[derive(Default)]
pub(crate) struct ResolveCache(std::sync::Mutex<std::collections::HashMap<ResolveKey, Resolution>>);

impl ResolveCache {
    pub fn get_or_insert(
        &self,
        key: ResolveKey,
        resolve: impl FnOnce() -> Resolution,
    ) -> Resolution {
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        let r = resolve();
        self.lock().insert(key, r.clone());
        r
    }

    fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ResolveKey, Resolution>> {
        // A panic while holding the lock leaves a map of whole entries: still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Index {
    /// Inserts or replaces an object; returns the previous one.
    pub fn insert(&mut self, r: Arc<Resource>) -> Option<Arc<Resource>> {
        self.resolved.clear();
        let old = self.resources.insert(r.key.clone(), r.clone());
        if let Some(old) = &old {
            self.unlink(old);
        }
        self.link(&r);
        old
    }

    pub fn remove(&mut self, key: &ResourceKey) -> Option<Arc<Resource>> {
        self.resolved.clear();
        let old = self.resources.remove(key)?;
        self.unlink(&old);
        Some(old)
    }

    pub(crate) fn edges(r: &Resource) -> Vec<(Edge, ResourceKey)> {
        let k = &r.key;
        match &r.object {
            Object::GRPCRoute(route) => {
                let mut out = Vec::new();
                parent_edges(k, &route.spec.parent_refs, &mut out);
                for rule in &route.spec.rules {
                    let mirrors = rule
                        .filters
                        .iter()
                        .filter_map(|f| f.request_mirror.as_ref())
                        .map(|m| (&m.backend_ref.name, &m.backend_ref.namespace));
                    let backends = rule.backend_refs.iter().map(|b| (&b.name, &b.namespace));
                    for (name, ns) in backends.chain(mirrors) {
                        let ns = ns.as_deref().unwrap_or(&k.namespace);
                        out.push((
                            Edge::RouteService,
                            ResourceKey::new(&k.cluster, Kind::Service, ns, name),
                        ));
                    }
                }
                out
            }
            Object::HTTPRoute(route) => {
                let mut out = Vec::new();
                parent_edges(k, &route.spec.parent_refs, &mut out);
                for rule in &route.spec.rules {
                    for m in rule
                        .filters
                        .iter()
                        .filter_map(|f| f.request_mirror.as_ref())
                    {
                        let ns = m.backend_ref.namespace.as_deref().unwrap_or(&k.namespace);
                        out.push((
                            Edge::RouteService,
                            ResourceKey::new(&k.cluster, Kind::Service, ns, &m.backend_ref.name),
                        ));
                    }
                    for b in &rule.backend_refs {
                        let ns = b.namespace.as_deref().unwrap_or(&k.namespace);
                        out.push((
                            Edge::RouteService,
                            ResourceKey::new(&k.cluster, Kind::Service, ns, &b.name),
                        ));
                    }
                }
                out
            }
            Object::TLSRoute(flotilla_model::routes::TlsRoute { spec, .. })
            | Object::TCPRoute(flotilla_model::routes::TcpRoute { spec, .. })
            | Object::UDPRoute(flotilla_model::routes::UdpRoute { spec, .. }) => {
                let mut out = Vec::new();
                parent_edges(k, &spec.parent_refs, &mut out);
                for b in spec.rules.iter().flat_map(|r| &r.backend_refs) {
                    let ns = b.namespace.as_deref().unwrap_or(&k.namespace);
                    out.push((
                        Edge::RouteService,
                        ResourceKey::new(&k.cluster, Kind::Service, ns, &b.name),
                    ));
                }
                out
            }
            Object::EndpointSlice(s) => {
                // A slice serves a Service, or (Multi-Cluster Services) a ServiceImport.
                let labels = s.metadata.labels.as_ref();
                [
                    (SERVICE_NAME_LABEL, Kind::Service),
                    (MCS_SERVICE_NAME_LABEL, Kind::ServiceImport),
                ]
                .into_iter()
                .filter_map(|(label, kind)| {
                    let svc = labels.and_then(|l| l.get(label))?;
                    Some((
                        Edge::SliceService,
                        ResourceKey::new(&k.cluster, kind, &k.namespace, svc),
                    ))
                })
                .collect()
            }
            _ => vec![],
        }
    }

    fn map(&mut self, e: Edge) -> &mut BTreeMap<ResourceKey, BTreeSet<ResourceKey>> {
        match e {
            Edge::RouteGateway => &mut self.routes_by_gateway,
            Edge::RouteService => &mut self.routes_by_service,
            Edge::SliceService => &mut self.slices_by_service,
        }
    }

    fn link(&mut self, r: &Resource) {
        for (e, target) in Self::edges(r) {
            self.map(e).entry(target).or_default().insert(r.key.clone());
        }
        if let Some(m) = self.mcs_map(r.key.kind) {
            m.entry((r.key.namespace.clone(), r.key.name.clone()))
                .or_default()
                .insert(r.key.cluster.clone());
        }
    }

    fn mcs_map(&mut self, kind: Kind) -> Option<&mut BTreeMap<(String, String), BTreeSet<String>>> {
        match kind {
            Kind::ServiceExport => Some(&mut self.exports),
            Kind::ServiceImport => Some(&mut self.imports),
            _ => None,
        }
    }

    fn unlink(&mut self, r: &Resource) {
        if let Some(m) = self.mcs_map(r.key.kind) {
            let nn = (r.key.namespace.clone(), r.key.name.clone());
            if let Some(set) = m.get_mut(&nn) {
                set.remove(&r.key.cluster);
                if set.is_empty() {
                    m.remove(&nn);
                }
            }
        }
        for (e, target) in Self::edges(r) {
            let m = self.map(e);
            if let Some(set) = m.get_mut(&target) {
                set.remove(&r.key);
                if set.is_empty() {
                    m.remove(&target);
                }
            }
        }
    }

    /// The Services (and Multi-Cluster ServiceImports) an EndpointSlice serves, by label.
    pub fn slice_services(r: &Resource) -> Vec<ResourceKey> {
        match r.object {
            Object::EndpointSlice(_) => Self::edges(r).into_iter().map(|(_, k)| k).collect(),
            _ => vec![],
        }
    }

    /// Gateways a route (by key) attaches to, directly or through a ListenerSet.
    pub fn gateways_of_route(&self, route: &ResourceKey, out: &mut BTreeSet<ResourceKey>) {
        if let Some(r) = self.resources.get(route) {
            for (e, target) in Self::edges(r) {
                if e == Edge::RouteGateway {
                    out.extend(self.parent_gateway(target));
                }
            }
        }
    }

    /// Gateways whose routes refer to a backend (a Service, ServiceImport or Backend: route
    /// edges record every backendRef under the Service-kind key of its namespace/name).
    pub(crate) fn gateways_of_service(&self, svc: &ResourceKey, out: &mut BTreeSet<ResourceKey>) {
        let svc = &ResourceKey::new(&svc.cluster, Kind::Service, &svc.namespace, &svc.name);
        for route in self.routes_by_service.get(svc).into_iter().flatten() {
            if let Some(r) = self.resources.get(route) {
                for (e, target) in Self::edges(r) {
                    if e == Edge::RouteGateway {
                        out.extend(self.parent_gateway(target));
                    }
                }
            }
        }
    }

    /// Gateways of every cluster whose routes may use the Service `svc` exports (through a
    /// ServiceImport of its namespace/name): when `svc`'s cluster exports it, or `always` (the
    /// ServiceExport itself changed).
    pub(crate) fn gateways_importing(
        &self,
        svc: &ResourceKey,
        always: bool,
        out: &mut BTreeSet<ResourceKey>,
    ) {
        let nn = (svc.namespace.clone(), svc.name.clone());
        if !always
            && !self
                .exports
                .get(&nn)
                .is_some_and(|c| c.contains(&svc.cluster))
        {
            return;
        }
        for c in self.imports.get(&nn).into_iter().flatten() {
            let import = ResourceKey::new(c, Kind::ServiceImport, &svc.namespace, &svc.name);
            self.gateways_of_service(&import, out);
        }
    }

    /// Gateways affected by a ConfigMap that may hold a CA bundle: those of the backends whose
    /// BackendTLSPolicy or Backend `spec.tls` refers to it (same namespace).
    pub(crate) fn gateways_of_ca_holder(&self, cm: &ResourceKey, out: &mut BTreeSet<ResourceKey>) {
        let names_it = |refs: &[flotilla_model::refs::LocalObjectRef]| {
            refs.iter()
                .any(|r| r.kind == cm.kind.as_str() && r.name == cm.name)
        };
        // Every policy of the namespace that names it, attached or not (precedence does not
        // matter here: a gateway too many is retranslated, never one too few).
        let start = ResourceKey::new(&cm.cluster, Kind::BackendTLSPolicy, &cm.namespace, "");
        let policies = self.resources.range(start..).take_while(|(k, _)| {
            k.cluster == cm.cluster
                && k.kind == Kind::BackendTLSPolicy
                && k.namespace == cm.namespace
        });
        for (_, r) in policies {
            let Object::BackendTLSPolicy(p) = &r.object else {
                continue;
            };
            if names_it(&p.spec.validation.ca_certificate_refs) {
                for t in &p.spec.target_refs {
                    let target =
                        ResourceKey::new(&cm.cluster, Kind::Service, &cm.namespace, &t.name);
                    self.gateways_of_service(&target, out);
                }
            }
        }
        let start = ResourceKey::new(&cm.cluster, Kind::Backend, &cm.namespace, "");
        for (k, r) in self.resources.range(start..).take_while(|(k, _)| {
            k.cluster == cm.cluster && k.kind == Kind::Backend && k.namespace == cm.namespace
        }) {
            if let Object::Backend(b) = &r.object {
                if b.spec
                    .tls
                    .as_ref()
                    .is_some_and(|t| names_it(&t.ca_certificate_refs))
                {
                    self.gateways_of_service(k, out);
                }
            }
        }
    }

    /// The Gateway a route parent stands for: itself, or a ListenerSet's parent Gateway.
    pub fn parent_gateway(&self, parent: ResourceKey) -> Option<ResourceKey> {
        if parent.kind != Kind::ListenerSet {
            return Some(parent);
        }
        match self.resources.get(&parent).map(|r| &r.object) {
            Some(Object::ListenerSet(ls)) => {
                let p = &ls.spec.parent_ref;
                let ns = p.namespace.as_deref().unwrap_or(&parent.namespace);
                Some(ResourceKey::new(
                    &parent.cluster,
                    Kind::Gateway,
                    ns,
                    &p.name,
                ))
            }
            _ => None,
        }
    }

    pub fn gateways_in<'a>(
        &'a self,
        cluster: &'a str,
    ) -> impl Iterator<Item = &'a ResourceKey> + 'a {
        let start = ResourceKey::new(cluster, Kind::Gateway, "", "");
        self.resources
            .range(start..)
            .take_while(move |(k, _)| k.cluster == cluster && k.kind == Kind::Gateway)
            .map(|(k, _)| k)
    }

    pub fn routes_of_gateway<'a>(
        &'a self,
        gw: &ResourceKey,
    ) -> impl Iterator<Item = &'a ResourceKey> {
        self.routes_by_gateway.get(gw).into_iter().flatten()
    }

    /// Whether `route`'s parentRefs name `gw` (a Gateway or a ListenerSet).
    pub fn route_attached(&self, gw: &ResourceKey, route: &ResourceKey) -> bool {
        self.routes_by_gateway
            .get(gw)
            .is_some_and(|routes| routes.contains(route))
    }

    /// The routes whose backendRefs (or mirrors) name a backend called `svc`'s namespace/name
    /// (a Service, ServiceImport or Backend of that name).
    pub fn routes_of_service<'a>(
        &'a self,
        svc: &ResourceKey,
    ) -> impl Iterator<Item = &'a ResourceKey> {
        let svc = ResourceKey::new(&svc.cluster, Kind::Service, &svc.namespace, &svc.name);
        self.routes_by_service.get(&svc).into_iter().flatten()
    }

    pub fn service(&self, k: &ResourceKey) -> Option<&Service> {
        match self.resources.get(k).map(|r| &r.object) {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        }
    }

    /// Endpoints of one Service port, from its EndpointSlices, in a stable order.
    pub fn endpoints(&self, svc: &ResourceKey, port: &ServicePort) -> Vec<EndpointAddr> {
        let proto = port.protocol.as_deref().unwrap_or("TCP");
        self.endpoints_of(svc, port.name.as_deref().unwrap_or(""), proto)
    }

    /// Endpoints of the port named `port_name` (and of `protocol`) of a Service or
    /// ServiceImport (`backend` is its key), from its EndpointSlices, in a stable order.
    pub fn endpoints_of(
        &self,
        backend: &ResourceKey,
        port_name: &str,
        protocol: &str,
    ) -> Vec<EndpointAddr> {
        let svc = backend;
        let mut out = BTreeSet::new();
        for sk in self.slices_by_service.get(svc).into_iter().flatten() {
            let Some(Object::EndpointSlice(slice)) = self.resources.get(sk).map(|r| &r.object)
            else {
                continue;
            };
            // An unset address type reads as IP. FQDN slices give host names (served by a
            // STRICT_DNS cluster, see `backend::cluster_resources`).
            let fqdn = slice.address_type == "FQDN";
            let Some(p) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .and_then(|p| p.port)
                .and_then(|p| u32::try_from(p).ok())
            else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                // Envoy rejects an EDS endpoint whose address is not an IP.
                for ip in ep
                    .addresses
                    .iter()
                    .filter(|a| fqdn || a.parse::<std::net::IpAddr>().is_ok())
                {
                    out.insert(EndpointAddr::local(ip.clone(), p, ready));
                }
            }
        }
        out.into_iter().collect()
    }

    /// Endpoints of a ServiceImport's port for a gateway of the import's own cluster: those of
    /// its own EndpointSlices (labelled `multicluster.kubernetes.io/service-name`) and of the
    /// Service of the same namespace/name in every cluster that exports it (ServiceExport);
    /// other clusters' endpoints at priority 1, each cluster its own locality, so Envoy fails
    /// over to them when the local ones are unhealthy. One entry per address, the nearest.
    pub fn import_endpoints(
        &self,
        import: &ResourceKey,
        port_name: &str,
        protocol: &str,
    ) -> Vec<EndpointAddr> {
        let mut out = self.endpoints_of(import, port_name, protocol);
        let nn = (import.namespace.clone(), import.name.clone());
        for c in self.exports.get(&nn).into_iter().flatten() {
            let svc = ResourceKey::new(c, Kind::Service, &import.namespace, &import.name);
            let remote = *c != import.cluster;
            out.extend(
                self.endpoints_of(&svc, port_name, protocol)
                    .into_iter()
                    .map(|mut e| {
                        if remote {
                            e.priority = 1;
                            e.locality = c.clone();
                        }
                        e
                    }),
            );
        }
        out.sort_by(|a, b| (&a.ip, a.port, a.priority).cmp(&(&b.ip, b.port, b.priority)));
        out.dedup_by(|b, a| a.ip == b.ip && a.port == b.port);
        out.sort();
        out
    }

    /// Whether namespace `ns` of `cluster` exists, as Envoy Gateway decides it: a route in a
    /// namespace with no Namespace object attaches nowhere. A cluster whose source sends no
    /// Namespace objects at all (files that never declare their namespaces) has every
    /// namespace its objects name; a Kubernetes agent sends every namespace of its cluster.
    pub fn namespace_exists(&self, cluster: &str, ns: &str) -> bool {
        let first = ResourceKey::new(cluster, Kind::Namespace, "", "");
        let declares_namespaces = self
            .resources
            .range(first..)
            .next()
            .is_some_and(|(k, _)| k.cluster == cluster && k.kind == Kind::Namespace);
        !declares_namespaces
            || self
                .resources
                .contains_key(&ResourceKey::new(cluster, Kind::Namespace, "", ns))
    }

    pub fn namespace_matches(&self, cluster: &str, ns: &str, sel: &LabelSelector) -> bool {
        let key = ResourceKey::new(cluster, Kind::Namespace, "", ns);
        let mut labels = match self.resources.get(&key).map(|r| &r.object) {
            Some(Object::Namespace(n)) => n.metadata.labels.clone().unwrap_or_default(),
            _ => Default::default(),
        };
        // The API server sets this label on every namespace (Kubernetes >= 1.22); files and
        // agents that omit it must still match selectors written against it.
        labels.insert("kubernetes.io/metadata.name".to_string(), ns.to_string());
        selector_matches(sel, &labels)
    }
}

pub(crate) fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Route -> parent edges: Gateways, and ListenerSets (which stand for their Gateway).
fn parent_edges(
    k: &ResourceKey,
    parent_refs: &[flotilla_model::gateway::ParentReference],
    out: &mut Vec<(Edge, ResourceKey)>,
) {
    for p in parent_refs {
        if p.group.as_deref().unwrap_or(GATEWAY_GROUP) != GATEWAY_GROUP {
            continue;
        }
        let kind = match p.kind.as_deref().unwrap_or("Gateway") {
            "Gateway" => Kind::Gateway,
            "ListenerSet" => Kind::ListenerSet,
            _ => continue,
        };
        let ns = p.namespace.as_deref().unwrap_or(&k.namespace);
        out.push((
            Edge::RouteGateway,
            ResourceKey::new(&k.cluster, kind, ns, &p.name),
        ));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge {
    RouteGateway,
    RouteService,
    SliceService,
}
