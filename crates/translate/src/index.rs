//! The resource index: every object of every cluster, plus the reverse maps that answer
//! "which gateways can this object affect" without scanning everything.

use crate::envoy::EndpointAddr;
use flotilla_model::gateway::HttpRoute;
use flotilla_model::{Kind, Object, Resource, ResourceKey, GATEWAY_GROUP};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Default)]
pub(crate) struct Index {
    pub resources: BTreeMap<ResourceKey, Arc<Resource>>,
    /// Gateway key -> HTTPRoutes whose parentRefs name it.
    routes_by_gateway: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
    /// Service key -> HTTPRoutes whose backendRefs name it.
    routes_by_service: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
    /// Service key -> its EndpointSlices.
    slices_by_service: BTreeMap<ResourceKey, BTreeSet<ResourceKey>>,
}

impl Index {
    /// Inserts or replaces an object; returns the previous one.
    pub fn insert(&mut self, r: Arc<Resource>) -> Option<Arc<Resource>> {
        let old = self.resources.insert(r.key.clone(), r.clone());
        if let Some(old) = &old {
            self.unlink(old);
        }
        self.link(&r);
        old
    }

    pub fn remove(&mut self, key: &ResourceKey) -> Option<Arc<Resource>> {
        let old = self.resources.remove(key)?;
        self.unlink(&old);
        Some(old)
    }

    fn edges(r: &Resource) -> Vec<(Edge, ResourceKey)> {
        let k = &r.key;
        match &r.object {
            Object::HTTPRoute(route) => {
                let mut out = Vec::new();
                for p in &route.spec.parent_refs {
                    if p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                        && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                    {
                        let ns = p.namespace.as_deref().unwrap_or(&k.namespace);
                        out.push((
                            Edge::RouteGateway,
                            ResourceKey::new(&k.cluster, Kind::Gateway, ns, &p.name),
                        ));
                    }
                }
                for rule in &route.spec.rules {
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
            Object::EndpointSlice(s) => s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(|svc| {
                    vec![(
                        Edge::SliceService,
                        ResourceKey::new(&k.cluster, Kind::Service, &k.namespace, svc),
                    )]
                })
                .unwrap_or_default(),
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
    }

    fn unlink(&mut self, r: &Resource) {
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

    /// Gateways an object (in its current or previous form) can affect.
    pub fn affected_gateways(&self, r: &Resource, out: &mut BTreeSet<ResourceKey>) {
        let k = &r.key;
        match &r.object {
            Object::Gateway(_) => {
                out.insert(k.clone());
            }
            Object::HTTPRoute(_) => {
                for (e, target) in Self::edges(r) {
                    if e == Edge::RouteGateway {
                        out.insert(target);
                    }
                }
            }
            Object::Service(_) => self.gateways_of_service(k, out),
            Object::EndpointSlice(_) => {
                for (_, svc) in Self::edges(r) {
                    self.gateways_of_service(&svc, out);
                }
            }
            // Classes, namespaces (label selectors), secrets and the kinds without a precise
            // dependency edge yet are rare changes with wide reach (or none): recompute every
            // gateway of the cluster. Correct, if not minimal.
            _ => {
                out.extend(self.gateways_in(&k.cluster).cloned());
            }
        }
    }

    fn gateways_of_service(&self, svc: &ResourceKey, out: &mut BTreeSet<ResourceKey>) {
        for route in self.routes_by_service.get(svc).into_iter().flatten() {
            if let Some(r) = self.resources.get(route) {
                for (e, target) in Self::edges(r) {
                    if e == Edge::RouteGateway {
                        out.insert(target);
                    }
                }
            }
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

    pub fn http_route(&self, k: &ResourceKey) -> Option<&HttpRoute> {
        match self.resources.get(k).map(|r| &r.object) {
            Some(Object::HTTPRoute(r)) => Some(r),
            _ => None,
        }
    }

    pub fn service(&self, k: &ResourceKey) -> Option<&Service> {
        match self.resources.get(k).map(|r| &r.object) {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        }
    }

    /// Endpoints of one Service port, from its EndpointSlices, in a stable order.
    pub fn endpoints(&self, svc: &ResourceKey, port: &ServicePort) -> Vec<EndpointAddr> {
        let mut out = BTreeSet::new();
        for sk in self.slices_by_service.get(svc).into_iter().flatten() {
            let Some(Object::EndpointSlice(slice)) = self.resources.get(sk).map(|r| &r.object)
            else {
                continue;
            };
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let want = port.name.as_deref().unwrap_or("");
            let Some(p) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref().unwrap_or("") == want)
                .and_then(|p| p.port)
                .and_then(|p| u32::try_from(p).ok())
            else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                for ip in &ep.addresses {
                    out.insert(EndpointAddr {
                        ip: ip.clone(),
                        port: p,
                        ready,
                    });
                }
            }
        }
        out.into_iter().collect()
    }

    pub fn namespace_matches(&self, cluster: &str, ns: &str, sel: &LabelSelector) -> bool {
        let key = ResourceKey::new(cluster, Kind::Namespace, "", ns);
        let labels = match self.resources.get(&key).map(|r| &r.object) {
            Some(Object::Namespace(n)) => n.metadata.labels.clone().unwrap_or_default(),
            _ => Default::default(),
        };
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Edge {
    RouteGateway,
    RouteService,
    SliceService,
}
