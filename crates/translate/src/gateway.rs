//! Translation of one Gateway: its listeners, the HTTPRoutes attached to it and their
//! backends → Envoy resources, listener status and route parent status.

use crate::envoy;
use crate::hostnames::{covers, intersect_hostnames};
use crate::httproute::{check_route, OverlapTracker, PrecedenceKey};
use crate::index::Index;
use crate::ir::cluster::{Backends, ClusterKey, ClusterSettings, HealthCheckKind};
use crate::listener::{self, port_of, ListenerState, SetInfo};
use crate::policy::attachments::Policies;
use crate::policy::backend::BackendPolicy;
use crate::policy::ratelimit as policy_rl;
use crate::ratelimit;
use crate::status::set_condition;
use crate::values::Age;
use crate::GatewayXds;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, Route, RouteConfiguration, VirtualHost,
};
use flotilla_model::gateway::HttpBackendRef;
use flotilla_model::gateway::{Condition, Gateway, HttpRoute, ParentReference};
use flotilla_model::routes::GrpcRoute;
use flotilla_model::{Kind, Object, Resource, ResourceKey};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The controller name Flotilla answers to: Envoy Gateway's, so that GatewayClasses written
/// for Envoy Gateway move over unchanged.
pub const CONTROLLER_NAME: &str = "gateway.envoyproxy.io/gatewayclass-controller";

/// Everything translating one gateway produces.
pub(crate) struct GatewayResult {
    pub xds: GatewayXds,
    pub status: Value,
    /// Route parent statuses this gateway is responsible for, by route.
    pub route_parents: BTreeMap<ResourceKey, Vec<(usize, Value)>>,
    /// Status of other resources this gateway decides (its ListenerSets).
    pub other_status: Vec<(ResourceKey, Value)>,
    /// BackendTLSPolicy ancestorRefs this gateway contributes, by policy.
    pub policy_ancestors: BTreeMap<ResourceKey, Vec<Value>>,
    /// The backends its routes use, with the endpoints their ClusterLoadAssignments hold (an
    /// endpoint change can then rewrite those alone, see `Translator::refresh_endpoints`).
    pub backends: Backends,
}

pub(crate) fn translate_gateway(
    ix: &Index,
    gw_key: &ResourceKey,
    gw: &Gateway,
    policies: &Policies,
) -> GatewayResult {
    // A Gateway with an address of a type Envoy Gateway does not support is not translated.
    if let Some(status) = listener::unsupported_address_status(gw) {
        return GatewayResult {
            xds: GatewayXds {
                gateway: gw_key.gateway_id(),
                resources: vec![],
                rate_limits: None,
            },
            status,
            route_parents: BTreeMap::new(),
            other_status: vec![],
            policy_ancestors: BTreeMap::new(),
            backends: Backends::new(),
        };
    }
    let sets: Vec<SetInfo> = listener::listener_sets(ix, gw_key, gw);
    let mut listeners: Vec<ListenerState> = listener::check_listeners(ix, gw_key, gw, &sets);
    // Each listener's ClientTrafficPolicy, read once. One that cannot be used (its status says
    // why) configures nothing, and the listener fails closed (`ctp_invalid`).
    for l in listeners.iter_mut() {
        let set = l.set.map(|si| &sets[si].key);
        let Some(r) = policies.client(ix, gw_key, set, &l.spec.name) else {
            continue;
        };
        l.ctp = match &r.object {
            Object::Extension(_, o) => crate::policy::client::parse(&o.spec)
                .ok()
                .and_then(|mut s| {
                    s.tls.client_ca =
                        crate::policy::client::resolve_client_ca(ix, &r.key, &o.spec).ok()?;
                    crate::policy::client::for_listener(s, l.spec.hostname.as_deref())
                })
                .map(std::sync::Arc::new),
            _ => None,
        };
        l.ctp_invalid = l.ctp.is_none();
    }

    let bind_ip = gw
        .spec
        .addresses
        .iter()
        .find(|a| {
            a.type_.as_deref().is_none_or(|t| t == "IPAddress")
                && a.value.parse::<std::net::IpAddr>().is_ok()
        })
        .map(|a| a.value.clone())
        .unwrap_or_else(|| "0.0.0.0".to_string());

    // route configuration name -> domain -> routes (with precedence keys)
    let mut vhosts: BTreeMap<String, BTreeMap<String, Vec<(PrecedenceKey, Route)>>> =
        BTreeMap::new();
    for l in listeners.iter().filter(|l| l.valid && l.is_http()) {
        vhosts.entry(listener::route_config_name(l)).or_default();
    }
    // Listener isolation: the hostnames of the HTTP(S) listeners sharing each port.
    let mut port_hosts: BTreeMap<u32, Vec<(usize, String)>> = BTreeMap::new();
    for (i, l) in listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.valid && l.is_http())
    {
        if let Some(h) = listener_hostname(l) {
            port_hosts
                .entry(port_of(l.spec))
                .or_default()
                .push((i, h.to_ascii_lowercase()));
        }
    }
    let mut clusters: crate::ir::cluster::Backends = BTreeMap::new();
    let mut route_parents: BTreeMap<ResourceKey, Vec<(usize, Value)>> = BTreeMap::new();

    let route_keys: BTreeSet<&ResourceKey> = std::iter::once(gw_key)
        .chain(sets.iter().map(|s| &s.key))
        .flat_map(|k| ix.routes_of_gateway(k))
        .collect();
    // Global rate limits reach Envoy only with a rate limit service to call.
    let has_service = !ix.options.rate_limit_service.is_empty();
    // Envoy Gateway translates every HTTPRoute, then every GRPCRoute; within a kind, oldest
    // first, then namespace/name (Gateway API precedence).
    let mut routes: Vec<(u8, &ResourceKey, AnyRoute)> = route_keys
        .into_iter()
        .filter_map(|k| match ix.resources.get(k).map(|r| &r.object) {
            Some(Object::HTTPRoute(r)) => Some((0, k, AnyRoute::Http(r))),
            Some(Object::GRPCRoute(r)) => Some((1, k, AnyRoute::Grpc(r))),
            _ => None,
        })
        .collect();
    routes.sort_by(|a, b| {
        (a.0, Age::of(a.2.metadata(), a.1), a.1).cmp(&(b.0, Age::of(b.2.metadata(), b.1), b.1))
    });

    let mut overlaps = OverlapTracker::default();
    // The rate limit service's rules of this gateway's routes (its domain).
    let mut service_rules: Vec<ratelimit::ServiceRule> = Vec::new();
    // Whether a route has a local rate limit (its listeners need the filter).
    let mut has_local = false;
    let mut http2_clusters: BTreeSet<String> = BTreeSet::new();
    // BackendTrafficPolicies, translated once each; the clusters their settings ask for.
    let mut btps = BtpCache::default();
    let mut variants: BTreeSet<ClusterKey> = BTreeSet::new();
    // Parent statuses wait for the overlap check, which needs every route in place.
    let mut pending: Vec<PendingParent> = Vec::new();
    for (rank, (_, route_key, route)) in routes.iter().enumerate() {
        let checked = match route {
            AnyRoute::Http(r) => check_route(ix, route_key, r, rank, &mut clusters),
            AnyRoute::Grpc(r) => {
                crate::grpcroute::check_route(ix, route_key, r, rank, &mut clusters)
            }
        };
        http2_clusters.extend(checked.http2_clusters.iter().cloned());
        let rgen = route.metadata().generation;
        let kind = route.kind();
        for (pi, pref) in route.parent_refs().iter().enumerate() {
            if !listener::refers_to(&sets, pref, &route_key.namespace, gw_key) {
                continue;
            }
            let (accepted, attach_to) = attach(
                ix,
                &listeners,
                &sets,
                pref,
                gw_key,
                route_key,
                kind,
                route.hostnames(),
                rgen,
            );
            let mut conds = vec![accepted.clone()];
            // The rules' errors land on every parent (`processHTTPRouteParentRefs`).
            checked.apply_to(&mut conds, rgen);
            let rules_rejected = conds
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "False");
            if accepted.reason == "NoMatchingListenerHostname"
                && !(kind == "GRPCRoute" && rules_rejected)
            {
                set_condition(&mut conds, accepted.clone());
            }
            // A GRPCRoute whose rules are all rejected does not attach; an HTTPRoute still
            // counts on its listeners (with no routes left to serve).
            let attaches = accepted.status == "True" && !(kind == "GRPCRoute" && rules_rejected);
            if attaches {
                for (li, hostnames) in &attach_to {
                    listeners[*li].attached += 1;
                    // Envoy Gateway counts a route on a listener that is not programmed, but
                    // serves it only through programmed ones.
                    if !listeners[*li].valid {
                        continue;
                    }
                    let port = port_of(listeners[*li].spec);
                    let listener_port = u32::try_from(listeners[*li].spec.port).unwrap_or(0);
                    let domains = vhosts
                        .entry(listener::route_config_name(&listeners[*li]))
                        .or_default();
                    let own = listener_hostname(&listeners[*li]);
                    let others = port_hosts.get(&port).map(Vec::as_slice).unwrap_or_default();
                    let set = listeners[*li].set.map(|i| &sets[i].key);
                    let lname = listeners[*li].spec.name.as_str();
                    // The BackendTrafficPolicy of each rule as served by this listener.
                    let rule_policies: Vec<Option<Btp>> = checked
                        .entries
                        .iter()
                        .map(|e| {
                            let rule = e.rule_name.as_deref();
                            let p = policies.backend(ix, route_key, rule, gw_key, set, lname)?;
                            let parent = policies
                                .backend_merge_parent(ix, p, route_key, rule, gw_key, set, lname);
                            btps.get(ix, p, parent)
                        })
                        .collect();
                    // The rate limit of each rule's BackendTrafficPolicy through this listener.
                    let rule_names: BTreeMap<usize, Option<&str>> = checked
                        .entries
                        .iter()
                        .map(|e| (e.rule, e.rule_name.as_deref()))
                        .collect();
                    let limits: BTreeMap<usize, policy_rl::RateLimit> = rule_names
                        .into_iter()
                        .filter_map(|(rule, name)| {
                            let rl = rate_limit_of(
                                ix,
                                policies,
                                route_key,
                                name,
                                gw_key,
                                &sets,
                                &listeners[*li],
                            )?;
                            Some((rule, rl))
                        })
                        .collect();
                    for host in hostnames {
                        let isolated = isolated_by_other_listener(*li, own, others, host);
                        let mut entries = Vec::new();
                        let mut rules = Vec::new();
                        for (e, policy) in checked.entries.iter().zip(&rule_policies) {
                            let mut r = e.route.clone();
                            match policy {
                                Some(Btp::Valid(p)) => {
                                    apply_backend_policy(&mut r, p, host, &clusters, &mut variants)
                                }
                                // Envoy Gateway answers the routes of an invalid policy with
                                // 500 (its status says why).
                                Some(Btp::Invalid) => {
                                    r.action = Some(crate::httproute::direct(500, None))
                                }
                                None => {}
                            }
                            // A listener whose ClientTrafficPolicy cannot be used answers 500
                            // whatever its routes' policies say.
                            if listeners[*li].ctp_invalid {
                                crate::policy::client::xds::fail_closed(&mut r);
                            }
                            if let (Some(scheme), Some(route::Action::Redirect(ra))) =
                                (&e.redirect_scheme, r.action.as_mut())
                            {
                                ra.port_redirect = match scheme.as_deref() {
                                    Some("http") => 80,
                                    Some("https") => 443,
                                    _ => listener_port,
                                };
                            }
                            if let Some(rl) =
                                limits.get(&e.rule).filter(|_| ratelimit::forwards(&r))
                            {
                                if let Some(local) = &rl.local {
                                    ratelimit::apply_local(&mut r, local);
                                    has_local = true;
                                }
                                match &rl.global {
                                    Some(g) if !g.is_empty() && has_service => {
                                        let key = ratelimit::route_descriptor(
                                            &listeners[*li].full_name(),
                                            &r.name,
                                            host,
                                        );
                                        rules.extend(ratelimit::apply_global(&mut r, g, &key));
                                    }
                                    _ => {}
                                }
                            }
                            overlaps.record(*li, host, kind, route_key, &r);
                            entries.push((e.key.clone(), r));
                        }
                        if !isolated {
                            domains.entry(host.clone()).or_default().extend(entries);
                            service_rules.extend(rules);
                        }
                    }
                }
            }
            let attached_to = attach_to.iter().map(|(li, _)| *li).collect();
            pending.push(PendingParent {
                route: route_key,
                index: pi,
                pref,
                conds,
                kind,
                listeners: attached_to,
            });
        }
    }
    for PendingParent {
        route: route_key,
        index: pi,
        pref,
        mut conds,
        kind,
        listeners: attached_to,
    } in pending
    {
        if let Some(msg) = overlaps.conflicts(&attached_to, kind, route_key) {
            let gen = conds.first().and_then(|c| c.observed_generation);
            set_condition(
                &mut conds,
                Condition::new("RouteRulesOverlap", true, "RouteRulesOverlap", msg, gen),
            );
        }
        route_parents.entry(route_key.clone()).or_default().push((
            pi,
            json!({
                "parentRef": pref,
                "controllerName": CONTROLLER_NAME,
                "conditions": conds,
            }),
        ));
    }

    // TCP, UDP and TLS routes take the cluster settings of their BackendTrafficPolicy.
    let mut l4_policy =
        |route: &ResourceKey, rule: Option<&str>, set: Option<&ResourceKey>, listener: &str| {
            let p = policies.backend(ix, route, rule, gw_key, set, listener)?;
            let parent = policies.backend_merge_parent(ix, p, route, rule, gw_key, set, listener);
            match btps.get(ix, p, parent)? {
                Btp::Valid(b) => b.cluster.clone(),
                Btp::Invalid => None,
            }
        };
    let mut l4 = crate::l4route::translate_l4_routes(
        ix,
        gw_key,
        &mut listeners,
        &sets,
        &mut clusters,
        &mut route_parents,
        &mut l4_policy,
        &mut variants,
    );

    // A listener hostname that a less specific domain (of another listener's routes) covers
    // gets its own virtual host, empty when no route serves it: its requests never fall
    // through to the other listener's routes. On an HTTPS listener's own route configuration,
    // the hosts that belong to the port's other listeners are answered 421 (misdirected).
    let mut misdirected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, l) in listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.valid && l.is_http())
    {
        let name = listener::route_config_name(l);
        let Some(domains) = vhosts.get_mut(&name) else {
            continue;
        };
        let hosts = port_hosts
            .get(&port_of(l.spec))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if l.protocol() != "HTTPS" {
            for (_, h) in hosts {
                if !domains.contains_key(h)
                    && domains
                        .keys()
                        .any(|d| d != h && covers(Some(d.as_str()), h))
                {
                    domains.insert(h.clone(), Vec::new());
                }
            }
            continue;
        }
        let own = listener_hostname(l).map(str::to_ascii_lowercase);
        let wrong = misdirected.entry(name).or_default();
        if let Some(own) = &own {
            // Its own hosts without a route: 404, not the 421 of the catch-all below.
            domains.entry(own.clone()).or_default();
            wrong.insert("*".into());
        }
        for (j, h) in hosts {
            if *j != i && Some(h) != own.as_ref() && !domains.contains_key(h) {
                wrong.insert(h.clone());
            }
        }
    }

    // Route configurations of listeners that also serve HTTP/3 announce it (alt-svc).
    let http3_ports: BTreeMap<String, u32> = (0..listeners.len())
        .filter(|&i| listener::xds::serves_http3(&listeners, i))
        .map(|i| {
            let l = &listeners[i];
            (listener::route_config_name(l), port_of(l.spec))
        })
        .collect();
    let mut resources = Vec::new();
    for (name, domains) in vhosts {
        let vhost = |domain: &str, routes: Vec<Route>| {
            let mut domains = vec![domain.to_string()];
            if domain != "*" {
                domains.push(format!("{domain}:*"));
            }
            VirtualHost {
                name: format!("{name}/{domain}"),
                domains,
                routes,
                ..Default::default()
            }
        };
        let mut by_domain: BTreeMap<String, VirtualHost> = domains
            .into_iter()
            .map(|(domain, mut entries)| {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let routes = entries.into_iter().map(|(_, r)| r).collect();
                (domain.clone(), vhost(&domain, routes))
            })
            .collect();
        for domain in misdirected.remove(&name).unwrap_or_default() {
            if let std::collections::btree_map::Entry::Vacant(e) = by_domain.entry(domain) {
                let v = vhost(e.key(), vec![misdirected_route()]);
                e.insert(v);
            }
        }
        let virtual_hosts: Vec<VirtualHost> = by_domain.into_values().collect();
        let rc = RouteConfiguration {
            response_headers_to_add: http3_ports
                .get(&name)
                .map(|p| crate::policy::client::xds::alt_svc_header(*p))
                .into_iter()
                .collect(),
            name: name.clone(),
            max_direct_response_body_size_bytes: crate::httproute::direct_body_limit(
                &virtual_hosts,
            ),
            virtual_hosts,
            ..Default::default()
        };
        resources.push(envoy::route_configuration(rc));
    }
    // A route seen through two parent refs is placed twice: its rules once.
    service_rules.sort();
    service_rules.dedup();
    let rate_limits = (!service_rules.is_empty()).then(|| ratelimit::RateLimitDomain {
        domain: gw_key.gateway_id(),
        rules: service_rules,
    });
    if rate_limits.is_some() {
        resources.push(ratelimit::service_cluster(&ix.options));
    }
    resources.extend(listener::xds::envoy_listeners(
        &listeners,
        &bind_ip,
        &mut l4,
        ratelimit::HcmRateLimits {
            local: has_local,
            domain: rate_limits.as_ref().map(|d| d.domain.as_str()),
            fail_closed: ix.options.rate_limit_fail_closed,
        },
    ));
    resources.append(&mut l4.resources);
    // The SDS servers the listeners' certificates come from.
    let sds_urls: BTreeSet<&str> = listeners
        .iter()
        .filter(|l| l.valid)
        .flat_map(|l| l.sds.iter().map(|r| r.url.as_str()))
        .collect();
    resources.extend(sds_urls.into_iter().map(crate::tls::sds_cluster));
    let base_keys = clusters
        .values()
        .map(|(id, _)| ClusterKey::new(id.clone(), None));
    for key in base_keys.chain(variants) {
        let name = key.backend.name();
        let Some((_, endpoints)) = clusters.get(&name) else {
            continue;
        };
        let http2 = http2_clusters.contains(&name);
        resources.extend(crate::backend::cluster_resources(
            ix,
            &gw_key.cluster,
            &key,
            endpoints,
            http2,
        ));
    }
    resources.sort_by(|a, b| (&a.type_url, &a.name).cmp(&(&b.type_url, &b.name)));
    // Shared resources (an SDS server's cluster) are built by each user: keep one.
    resources.dedup_by(|a, b| a.type_url == b.type_url && a.name == b.name);

    let other_status = listener::listener_set_statuses(&sets, &listeners);
    let status = listener::gateway_status(ix, gw_key, gw, &listeners, &sets, &other_status);
    GatewayResult {
        xds: GatewayXds {
            gateway: gw_key.gateway_id(),
            resources,
            rate_limits,
        },
        status,
        route_parents,
        other_status,
        policy_ancestors: gateway_tls_ancestors(ix, gw_key, &sets),
        backends: clusters,
    }
}

/// A BackendTrafficPolicy as translated: valid, or invalid (its status says why; it configures
/// nothing).
#[derive(Clone)]
enum Btp {
    Valid(Arc<BackendPolicy>),
    Invalid,
}

/// BackendTrafficPolicies translated once per gateway, by policy and the parent policy it
/// merges into (if any).
#[derive(Default)]
struct BtpCache(BTreeMap<(ResourceKey, Option<ResourceKey>), Btp>);

impl BtpCache {
    fn get(&mut self, ix: &Index, p: &Resource, parent: Option<&Resource>) -> Option<Btp> {
        let spec_of = |r: &Resource| match &r.object {
            Object::Extension(_, o) => Some(o.spec.clone()),
            _ => None,
        };
        let slot = (p.key.clone(), parent.map(|r| r.key.clone()));
        if let Some(b) = self.0.get(&slot) {
            return Some(b.clone());
        }
        let mut spec = spec_of(p)?;
        let mut key = &p.key;
        if let Some((pk, base)) = parent.and_then(|r| Some((&r.key, spec_of(r)?))) {
            // Envoy Gateway's mergeBackendTrafficPolicy: the route policy patches its parent's
            // (and the result reads references from the parent's namespace).
            let mut merged = base;
            crate::policy::btp::merge_patch(&mut merged, &spec);
            spec = merged;
            key = pk;
        }
        let b = match crate::policy::btp::translate(ix, key, &spec) {
            Some(b) => Btp::Valid(Arc::new(b)),
            None => Btp::Invalid,
        };
        self.0.insert(slot, b.clone());
        Some(b)
    }
}

/// Adds a rule's BackendTrafficPolicy to one of its routes: the route-level settings, and its
/// clusters replaced by their variants with the policy's cluster settings (recorded in
/// `variants`).
fn apply_backend_policy(
    r: &mut Route,
    p: &BackendPolicy,
    host: &str,
    backends: &Backends,
    variants: &mut BTreeSet<ClusterKey>,
) {
    crate::traffic::apply_route(r, &p.route, p.cluster.as_deref());
    let Some(settings) = &p.cluster else {
        return;
    };
    // An HTTP health check without a hostname asks for the route's host (Envoy Gateway's
    // SetHTTPHostIfAbsent), rather than Envoy's default, the cluster name.
    let settings = &with_health_check_host(settings, host);
    let Some(route::Action::Route(ra)) = r.action.as_mut() else {
        return;
    };
    let mut variant = |name: &mut String| {
        // The invalid share's cluster (which never exists) has no backend.
        let Some((id, _)) = backends.get(name.as_str()) else {
            return;
        };
        let key = ClusterKey::new(id.clone(), Some(settings.clone()));
        *name = key.name();
        variants.insert(key);
    };
    match ra.cluster_specifier.as_mut() {
        Some(route_action::ClusterSpecifier::Cluster(name)) => variant(name),
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            w.clusters.iter_mut().for_each(|c| variant(&mut c.name))
        }
        _ => {}
    }
}

fn with_health_check_host(s: &Arc<ClusterSettings>, host: &str) -> Arc<ClusterSettings> {
    let Some(HealthCheckKind::Http { host: None, .. }) =
        s.active_health_check.as_ref().map(|h| &h.kind)
    else {
        return s.clone();
    };
    let mut with = (**s).clone();
    if let Some(HealthCheckKind::Http { host: h, .. }) =
        with.active_health_check.as_mut().map(|h| &mut h.kind)
    {
        *h = Some(host.to_string());
    }
    Arc::new(with)
}

/// The rate limit of the BackendTrafficPolicy that configures rule `rule` of `route` served
/// through listener `l`: none without one, and none when the policy is invalid (its status
/// says why; an invalid policy never reaches Envoy).
fn rate_limit_of(
    ix: &Index,
    policies: &Policies,
    route: &ResourceKey,
    rule: Option<&str>,
    gw_key: &ResourceKey,
    sets: &[SetInfo],
    l: &ListenerState,
) -> Option<policy_rl::RateLimit> {
    let set = l.set.and_then(|i| sets.get(i)).map(|s| &s.key);
    let p = policies.backend(ix, route, rule, gw_key, set, &l.spec.name)?;
    let Object::Extension(_, o) = &p.object else {
        return None;
    };
    if crate::policy::btp::invalid(&o.spec, &ix.options).is_some() {
        return None;
    }
    let enabled = ix.options.global_rate_limit_enabled();
    policy_rl::parse(&o.spec, &p.key.namespace, &p.key.name, enabled)
        .ok()
        .flatten()
}

/// A route parent's status, kept until every route is placed (for the overlap check).
struct PendingParent<'a> {
    route: &'a ResourceKey,
    index: usize,
    pref: &'a ParentReference,
    conds: Vec<Condition>,
    kind: &'static str,
    listeners: Vec<usize>,
}

/// A route kind that attaches to HTTP listeners.
enum AnyRoute<'a> {
    Http(&'a HttpRoute),
    Grpc(&'a GrpcRoute),
}

impl AnyRoute<'_> {
    fn kind(&self) -> &'static str {
        match self {
            AnyRoute::Http(_) => "HTTPRoute",
            AnyRoute::Grpc(_) => "GRPCRoute",
        }
    }
    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            AnyRoute::Http(r) => &r.metadata,
            AnyRoute::Grpc(r) => &r.metadata,
        }
    }
    fn parent_refs(&self) -> &[ParentReference] {
        match self {
            AnyRoute::Http(r) => &r.spec.parent_refs,
            AnyRoute::Grpc(r) => &r.spec.parent_refs,
        }
    }
    fn hostnames(&self) -> &[String] {
        match self {
            AnyRoute::Http(r) => &r.spec.hostnames,
            AnyRoute::Grpc(r) => &r.spec.hostnames,
        }
    }
}

/// Decides whether a route of `kind` with `hostnames` attaches through `pref` and to which
/// listeners (with the hostnames each contributes as virtual host domains). Listeners that are
/// not programmed still take the route (and count it), as in Envoy Gateway.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attach(
    ix: &Index,
    listeners: &[ListenerState],
    sets: &[SetInfo],
    pref: &ParentReference,
    gw_key: &ResourceKey,
    route_key: &ResourceKey,
    kind: &str,
    hostnames: &[String],
    gen: Option<i64>,
) -> (Condition, Vec<(usize, Vec<String>)>) {
    let candidates: Vec<usize> =
        listener::parent_candidates(listeners, sets, pref, &route_key.namespace, gw_key)
            .unwrap_or_default();
    if candidates.is_empty() {
        return (
            Condition::new(
                "Accepted",
                false,
                "NoMatchingParent",
                "No listeners match this parent ref",
                gen,
            ),
            vec![],
        );
    }
    let allowed: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| listeners[i].allows(ix, kind, route_key))
        .collect();
    if allowed.is_empty() {
        return (
            Condition::new(
                "Accepted",
                false,
                "NotAllowedByListeners",
                "No listeners included by this parent ref allowed this attachment.",
                gen,
            ),
            vec![],
        );
    }
    let mut attach_to = Vec::new();
    for i in allowed {
        let hosts = intersect_hostnames(listeners[i].spec.hostname.as_deref(), hostnames);
        if !hosts.is_empty() {
            attach_to.push((i, hosts));
        }
    }
    if attach_to.is_empty() {
        return (
            Condition::new(
                "Accepted",
                false,
                "NoMatchingListenerHostname",
                format!("There were no hostname intersections between the {kind} and this parent ref's Listener(s)."),
                gen,
            ),
            vec![],
        );
    }
    (
        Condition::new("Accepted", true, "Accepted", "Route is accepted", gen),
        attach_to,
    )
}

/// 421 Misdirected Request: the host belongs to another listener than the one whose TLS
/// server name the connection was made for (RFC 9110 §15.5.20).
fn misdirected_route() -> Route {
    use envoy_types::pb::envoy::config::route::v3::{
        route_match, DirectResponseAction, RouteMatch,
    };
    Route {
        name: "misdirected".into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 421,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A listener's hostname, `None` when it matches every host (none, or `*`).
fn listener_hostname<'a>(l: &ListenerState<'a>) -> Option<&'a str> {
    l.spec
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty() && *h != "*")
}

/// Listener isolation (GatewayHTTPListenerIsolation): a request goes to the most specific
/// listener its host matches, so a domain of listener `li` (hostname `own`) that a more
/// specific listener on the same port covers whole is not served through `li`.
fn isolated_by_other_listener(
    li: usize,
    own: Option<&str>,
    others: &[(usize, String)],
    domain: &str,
) -> bool {
    others.iter().any(|(lj, h)| {
        *lj != li
            && !own.is_some_and(|o| o.eq_ignore_ascii_case(h))
            && covers(own, h)
            && covers(Some(h), domain)
    })
}

/// The BackendTLSPolicy ancestors one gateway contributes: for every route attached to it (or
/// to one of its ListenerSets), in Envoy Gateway's route order, each parentRef naming this
/// gateway becomes an ancestor of the policies its backends use.
pub(crate) fn gateway_tls_ancestors(
    ix: &Index,
    gw_key: &ResourceKey,
    sets: &[SetInfo],
) -> BTreeMap<ResourceKey, Vec<Value>> {
    let mut out: BTreeMap<ResourceKey, Vec<Value>> = BTreeMap::new();
    // Most clusters have no BackendTLSPolicy at all: nothing to walk then.
    let first = ResourceKey::new(&gw_key.cluster, Kind::BackendTLSPolicy, "", "");
    if !ix
        .resources
        .range(first..)
        .next()
        .is_some_and(|(k, _)| k.cluster == gw_key.cluster && k.kind == Kind::BackendTLSPolicy)
    {
        return out;
    }
    let mut keys: Vec<&ResourceKey> = std::iter::once(gw_key)
        .chain(sets.iter().map(|s| &s.key))
        .flat_map(|k| ix.routes_of_gateway(k))
        .collect();
    keys.sort();
    keys.dedup();
    // Envoy Gateway meets the routes kind by kind (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute,
    // UDPRoute: the order of `Kind`), each kind oldest first, then namespace/name.
    let mut routes: Vec<(Kind, Age, &ResourceKey, &Object)> = keys
        .into_iter()
        .filter_map(|k| {
            let r = ix.resources.get(k)?;
            Some((k.kind, Age::of(r.object.metadata(), k), k, &r.object))
        })
        .collect();
    routes.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    for (_, _, k, obj) in routes {
        let Some((parents, refs)) = route_refs(obj) else {
            continue;
        };
        let policies = crate::backend::tls_policies_of(ix, k, refs);
        if policies.is_empty() {
            continue;
        }
        for pref in parents {
            if !listener::refers_to(sets, pref, &k.namespace, gw_key) {
                continue;
            }
            let v = serde_json::to_value(pref).unwrap_or(Value::Null);
            for p in &policies {
                let list = out.entry(p.clone()).or_default();
                if !list.contains(&v) {
                    list.push(v.clone());
                }
            }
        }
    }
    out
}

/// A route's parentRefs and the backendRefs of all its rules.
fn route_refs(obj: &Object) -> Option<(&[ParentReference], Vec<&HttpBackendRef>)> {
    Some(match obj {
        Object::HTTPRoute(h) => (
            &h.spec.parent_refs,
            h.spec.rules.iter().flat_map(|r| &r.backend_refs).collect(),
        ),
        Object::GRPCRoute(g) => (
            &g.spec.parent_refs,
            g.spec.rules.iter().flat_map(|r| &r.backend_refs).collect(),
        ),
        Object::TLSRoute(flotilla_model::routes::TlsRoute { spec, .. })
        | Object::TCPRoute(flotilla_model::routes::TcpRoute { spec, .. })
        | Object::UDPRoute(flotilla_model::routes::UdpRoute { spec, .. }) => (
            &spec.parent_refs,
            spec.rules.iter().flat_map(|r| &r.backend_refs).collect(),
        ),
        _ => return None,
    })
}
