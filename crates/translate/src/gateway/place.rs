//! One HTTPRoute or GRPCRoute placed on one gateway: everything it contributes (virtual host
//! entries, clusters, rate limit rules, listener counts, overlap buckets, parent conditions),
//! computed from the route, what it references and the gateway's listeners alone. A gateway
//! keeps each route's [`Placed`] and computes it again only when the route or something it
//! reads changed (see `GatewayMemo`).

use super::{attach, isolated_by_other_listener, listener_hostname, rate_limit_of, Btp, BtpCache};
use crate::httproute::{check_route, OverlapTracker, PrecedenceKey};
use crate::index::Index;
use crate::ir::cluster::{Backends, ClusterKey};
use crate::listener::{self, port_of, ListenerState, SetInfo};
use crate::policy::attachments::Policies;
use crate::policy::ratelimit as policy_rl;
use crate::ratelimit;
use crate::status::set_condition;
use crate::values::RouteOrder;
use crate::CONTROLLER_NAME;
use envoy_types::pb::envoy::config::route::v3::route;
use flotilla_model::gateway::{Condition, HttpRoute, ParentReference};
use flotilla_model::routes::GrpcRoute;
use flotilla_model::ResourceKey;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What one gateway's translation reads besides a route: its listeners and the policies.
pub(crate) struct GatewayScope<'a, 'b> {
    pub ix: &'a Index,
    pub gw_key: &'a ResourceKey,
    pub listeners: &'b [ListenerState<'a>],
    pub sets: &'b [SetInfo<'a>],
    /// The hostnames of the HTTP(S) listeners sharing each port (listener isolation).
    pub port_hosts: &'b BTreeMap<u32, Vec<(usize, String)>>,
    pub policies: &'a Policies,
    /// Global rate limits reach Envoy only with a rate limit service to call.
    pub has_service: bool,
}

/// A route kind that attaches to HTTP listeners.
#[derive(Clone, Copy)]
pub(crate) enum AnyRoute<'a> {
    Http(&'a HttpRoute),
    Grpc(&'a GrpcRoute),
}

impl AnyRoute<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            AnyRoute::Http(_) => "HTTPRoute",
            AnyRoute::Grpc(_) => "GRPCRoute",
        }
    }
    /// Envoy Gateway translates every HTTPRoute, then every GRPCRoute.
    pub fn rank(&self) -> u8 {
        match self {
            AnyRoute::Http(_) => 0,
            AnyRoute::Grpc(_) => 1,
        }
    }
    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            AnyRoute::Http(r) => &r.metadata,
            AnyRoute::Grpc(r) => &r.metadata,
        }
    }
    pub fn parent_refs(&self) -> &[ParentReference] {
        match self {
            AnyRoute::Http(r) => &r.spec.parent_refs,
            AnyRoute::Grpc(r) => &r.spec.parent_refs,
        }
    }
    pub fn hostnames(&self) -> &[String] {
        match self {
            AnyRoute::Http(r) => &r.spec.hostnames,
            AnyRoute::Grpc(r) => &r.spec.hostnames,
        }
    }
}

/// One Envoy route of a placed route, encoded, in the virtual host of `domain` in route
/// configuration `config`.
pub(crate) struct PlacedEntry {
    pub config: Arc<str>,
    pub domain: Arc<str>,
    pub key: PrecedenceKey,
    pub body: Arc<[u8]>,
    /// The length of its direct response body (0 without one).
    pub direct_body: usize,
}

/// One parentRef of a placed route: its status entry (`parentRef`, `controllerName`,
/// `conditions`) before the overlap check, which needs every route, and the listeners it
/// attached to. Built here, where routes are placed in parallel; the overlap check edits a
/// copy only for a route that overlaps another.
pub(crate) struct PlacedParent {
    pub index: usize,
    pub words: Arc<Value>,
    pub listeners: Vec<usize>,
}

/// Everything one route contributes to a gateway.
pub(crate) struct Placed {
    pub kind: &'static str,
    pub parents: Vec<PlacedParent>,
    /// The listeners it counts on, once per attachment (programmed or not).
    pub attached: Vec<usize>,
    /// The virtual hosts it is served in (one may hold none of its entries: a route whose
    /// rules were all dropped still makes its host's virtual host).
    pub domains: Vec<(Arc<str>, Arc<str>)>,
    pub entries: Vec<PlacedEntry>,
    /// Its (listener, match key) overlap buckets.
    pub overlaps: Vec<crate::httproute::overlap::Bucket>,
    pub service_rules: Vec<ratelimit::ServiceRule>,
    /// It has a local rate limit (its listeners need the filter).
    pub local: bool,
    /// The backends it resolved, with their endpoints (until the memo has taken them: it keeps
    /// each backend's once, and a kept placement only which backends it names).
    pub backends: Backends,
    /// Clusters that must speak HTTP/2 upstream.
    pub http2: BTreeSet<String>,
    /// The cluster variants its BackendTrafficPolicies ask for.
    pub variants: BTreeSet<ClusterKey>,
}

/// Places route `route_key` on the gateway of `g`.
pub(crate) fn place_route(
    g: &GatewayScope<'_, '_>,
    btps: &mut BtpCache,
    route_key: &ResourceKey,
    route: AnyRoute<'_>,
) -> Placed {
    let ix = g.ix;
    let listeners = g.listeners;
    let sets = g.sets;
    let order = Arc::new(RouteOrder::of(route.rank(), route.metadata(), route_key));
    let mut backends = Backends::new();
    let checked = match route {
        AnyRoute::Http(r) => check_route(ix, route_key, r, &order, &mut backends),
        AnyRoute::Grpc(r) => crate::grpcroute::check_route(ix, route_key, r, &order, &mut backends),
    };
    let rgen = route.metadata().generation;
    let kind = route.kind();
    let mut placed = Placed {
        kind,
        parents: Vec::new(),
        attached: Vec::new(),
        domains: Vec::new(),
        entries: Vec::new(),
        overlaps: Vec::new(),
        service_rules: Vec::new(),
        local: false,
        backends: Backends::new(),
        http2: checked.http2_clusters.clone(),
        variants: BTreeSet::new(),
    };
    placed.backends = backends;
    for (pi, pref) in route.parent_refs().iter().enumerate() {
        if !listener::refers_to(sets, pref, &route_key.namespace, g.gw_key) {
            continue;
        }
        let (accepted, attach_to) = attach(
            ix,
            listeners,
            sets,
            pref,
            g.gw_key,
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
                place_on_listener(g, btps, route_key, &checked, *li, hostnames, &mut placed);
            }
        }
        placed.parents.push(PlacedParent {
            index: pi,
            words: Arc::new(parent_words(pref, conds)),
            listeners: attach_to.iter().map(|(li, _)| *li).collect(),
        });
    }
    placed
}

/// A parent's status entry, as the route's `status.parents` lists it.
pub(crate) fn parent_words(pref: &ParentReference, conds: Vec<Condition>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(
        "parentRef".into(),
        serde_json::to_value(pref).unwrap_or(Value::Null),
    );
    m.insert("controllerName".into(), Value::from(CONTROLLER_NAME));
    m.insert(
        "conditions".into(),
        serde_json::to_value(conds).unwrap_or(Value::Null),
    );
    Value::Object(m)
}

/// The entries of `checked` served through listener `li` for `hostnames`.
fn place_on_listener(
    g: &GatewayScope<'_, '_>,
    btps: &mut BtpCache,
    route_key: &ResourceKey,
    checked: &crate::httproute::CheckedRoute,
    li: usize,
    hostnames: &[String],
    placed: &mut Placed,
) {
    let ix = g.ix;
    let l = &g.listeners[li];
    placed.attached.push(li);
    // Envoy Gateway counts a route on a listener that is not programmed, but serves it only
    // through programmed ones.
    if !l.valid {
        return;
    }
    let port = port_of(l.spec);
    let listener_port = u32::try_from(l.spec.port).unwrap_or(0);
    let config: Arc<str> = Arc::from(listener::route_config_name(l));
    let own = listener_hostname(l);
    let others = g
        .port_hosts
        .get(&port)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let set = l.set.map(|i| &g.sets[i].key);
    let lname = l.spec.name.as_str();
    // The BackendTrafficPolicy of each rule as served by this listener.
    let rule_policies: Vec<Option<Btp>> = checked
        .entries
        .iter()
        .map(|e| {
            let rule = e.rule_name.as_deref();
            let p = g
                .policies
                .backend(ix, route_key, rule, g.gw_key, set, lname)?;
            let parent = g
                .policies
                .backend_merge_parent(ix, p, route_key, rule, g.gw_key, set, lname);
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
            let rl = rate_limit_of(ix, g.policies, route_key, name, g.gw_key, g.sets, l)?;
            Some((rule, rl))
        })
        .collect();
    for host in hostnames {
        let isolated = isolated_by_other_listener(li, own, others, host);
        let domain: Arc<str> = Arc::from(host.as_str());
        let mut rules = Vec::new();
        for (e, policy) in checked.entries.iter().zip(&rule_policies) {
            let mut r = e.route.clone();
            match policy {
                Some(Btp::Valid(p)) => super::apply_backend_policy(
                    &mut r,
                    p,
                    &crate::ir::route::RouteOrigin {
                        kind: placed.kind,
                        namespace: &route_key.namespace,
                        name: &route_key.name,
                        rule: e.rule_name.as_deref(),
                    },
                    host,
                    &placed.backends,
                    &mut placed.variants,
                ),
                // Envoy Gateway answers the routes of an invalid policy with 500 (its status
                // says why).
                Some(Btp::Invalid) => r.action = Some(crate::httproute::direct(500, None)),
                None => {}
            }
            // A listener whose ClientTrafficPolicy cannot be used answers 500 whatever its
            // routes' policies say.
            if l.ctp_invalid {
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
            if let Some(rl) = limits.get(&e.rule).filter(|_| ratelimit::forwards(&r)) {
                if let Some(local) = &rl.local {
                    ratelimit::apply_local(&mut r, local);
                    placed.local = true;
                }
                match &rl.global {
                    Some(gl) if !gl.is_empty() && g.has_service => {
                        let key = ratelimit::route_descriptor(&l.full_name(), &r.name, host);
                        rules.extend(ratelimit::apply_global(&mut r, gl, &key));
                    }
                    _ => {}
                }
            }
            if let Some(k) = OverlapTracker::match_key(host, &r) {
                placed.overlaps.push((li, k));
            }
            if !isolated {
                let direct_body = crate::httproute::direct_body_len(&r);
                placed.entries.push(PlacedEntry {
                    config: config.clone(),
                    domain: domain.clone(),
                    key: e.key.clone(),
                    body: Arc::from(crate::envoy::encode_route(r)),
                    direct_body,
                });
            }
        }
        if !isolated {
            placed.domains.push((config.clone(), domain));
            placed.service_rules.extend(rules);
        }
    }
}
