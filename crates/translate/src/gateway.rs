//! Translation of one Gateway: its listeners, the HTTPRoutes attached to it and their
//! backends → Envoy resources, listener status and route parent status.

use crate::hostnames::{covers, intersect_hostnames};
use crate::httproute::OverlapTracker;
use crate::index::Index;
use crate::ir::cluster::{Backends, ClusterKey, ClusterSettings, HealthCheckKind};
use crate::listener::{self, port_of, ListenerState, SetInfo};
use crate::policy::attachments::Policies;
use crate::policy::backend::BackendPolicy;
use crate::policy::ratelimit as policy_rl;
use crate::ratelimit;
use crate::values::Age;
use crate::GatewayXds;
use envoy_types::pb::envoy::config::route::v3::{route, route_action, Route, RouteConfiguration};
use flotilla_model::gateway::HttpBackendRef;
use flotilla_model::gateway::{Condition, Gateway, Listener, ParentReference};
use flotilla_model::{Kind, Object, Resource, ResourceKey};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The controller name Flotilla answers to: Envoy Gateway's, so that GatewayClasses written
/// for Envoy Gateway move over unchanged.
pub const CONTROLLER_NAME: &str = "gateway.envoyproxy.io/gatewayclass-controller";

mod memo;
mod place;

pub(crate) use memo::GatewayMemo;
use place::{place_route, AnyRoute, GatewayScope};

/// What a gateway says of one route's parents: each parentRef's index and its status entry
/// (shared with the route's placement while the entry is unchanged).
pub(crate) type ParentWords = Vec<(usize, Arc<Value>)>;

/// Everything translating one gateway produces.
pub(crate) struct GatewayResult {
    pub xds: GatewayXds,
    pub status: Value,
    /// Route parent statuses this gateway is responsible for, by route: every route's after a
    /// full translation, the ones that may have changed after an incremental one (an empty
    /// list: the gateway words nothing for that route any more).
    pub route_parents: BTreeMap<ResourceKey, ParentWords>,
    /// Status of other resources this gateway decides (its ListenerSets).
    pub other_status: Vec<(ResourceKey, Value)>,
    /// BackendTLSPolicy ancestorRefs this gateway contributes, by policy.
    pub policy_ancestors: BTreeMap<ResourceKey, Vec<Value>>,
    /// The backends its routes use, with the endpoints their ClusterLoadAssignments hold (an
    /// endpoint change can then rewrite those alone, see `Translator::refresh_endpoints`).
    pub backends: Backends,
    /// Routes placed anew (the rest were kept from the memo).
    pub placed: usize,
}

/// What routes are placed on a gateway relative to each other: its listeners (with their
/// ClientTrafficPolicies and the ListenerSets they come from) and whether global rate limits
/// have a service. A memo made against another stamp is not reused.
#[derive(PartialEq)]
pub(crate) struct Stamp {
    listeners: Vec<ListenerStamp>,
    has_service: bool,
}

/// One listener as routes see it: its spec, ListenerSet, whether it is programmed, its
/// ClientTrafficPolicy (and whether that is usable) and its full name.
#[derive(PartialEq)]
struct ListenerStamp {
    spec: Listener,
    set: Option<ResourceKey>,
    valid: bool,
    ctp_invalid: bool,
    ctp: Option<crate::ir::client::ClientSettings>,
    name: String,
}

/// Which routes of a gateway to place again: all of them, or those named (a route not named
/// keeps its last placement; naming every route that changed, or whose inputs did, is the
/// caller's part, see `Translator::mark_affected`).
pub(crate) enum Replace<'a> {
    All,
    Routes(&'a BTreeSet<ResourceKey>),
}

pub(crate) fn translate_gateway(
    ix: &Index,
    gw_key: &ResourceKey,
    gw: &Gateway,
    policies: &Policies,
    memo: &mut GatewayMemo,
    replace: Replace<'_>,
) -> GatewayResult {
    // A Gateway with an address of a type Envoy Gateway does not support is not translated.
    if let Some(status) = listener::unsupported_address_status(gw) {
        let old = std::mem::take(memo);
        return GatewayResult {
            xds: GatewayXds {
                gateway: gw_key.gateway_id(),
                resources: vec![],
                rate_limits: None,
            },
            status,
            route_parents: old
                .routes
                .into_keys()
                .chain(old.l4_routes)
                .map(|k| (k, vec![]))
                .collect(),
            other_status: vec![],
            policy_ancestors: BTreeMap::new(),
            backends: Backends::new(),
            placed: 0,
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
    let has_service = !ix.options.rate_limit_service.is_empty();
    let stamp = Stamp {
        listeners: listeners
            .iter()
            .map(|l| ListenerStamp {
                spec: l.spec.clone(),
                set: l.set.map(|i| sets[i].key.clone()),
                valid: l.valid,
                ctp_invalid: l.ctp_invalid,
                ctp: l.ctp.as_deref().cloned(),
                name: l.full_name(),
            })
            .collect(),
        has_service,
    };

    // The HTTP and gRPC routes attached to the gateway or its ListenerSets.
    let parents: Vec<&ResourceKey> = std::iter::once(gw_key)
        .chain(sets.iter().map(|s| &s.key))
        .collect();
    let http_kind = |k: &ResourceKey| matches!(k.kind, Kind::HTTPRoute | Kind::GRPCRoute);
    let attached = |k: &ResourceKey| parents.iter().any(|p| ix.route_attached(p, k));
    let route_of = |k: &ResourceKey| match ix.resources.get(k).map(|r| &r.object) {
        Some(Object::HTTPRoute(r)) => Some(AnyRoute::Http(r)),
        Some(Object::GRPCRoute(r)) => Some(AnyRoute::Grpc(r)),
        _ => None,
    };
    let mut route_parents: BTreeMap<ResourceKey, ParentWords> = BTreeMap::new();
    let mut words_due: BTreeSet<ResourceKey> = BTreeSet::new();
    let mut changed_backends: BTreeSet<String> = BTreeSet::new();
    // Every route is placed again after a full change, or when the context moved under the
    // memo; otherwise the named ones (those that came, changed or went).
    let mut to_place: Vec<&ResourceKey> = Vec::new();
    let mut to_drop: Vec<&ResourceKey> = Vec::new();
    let mut full = matches!(replace, Replace::All) || memo.stamp.as_ref() != Some(&stamp);
    if let (false, Replace::Routes(named)) = (full, &replace) {
        for k in named.iter().filter(|k| http_kind(k)) {
            match (attached(k), memo.routes.contains_key(k)) {
                (true, _) => to_place.push(k),
                (false, true) => to_drop.push(k),
                (false, false) => {}
            }
        }
        // The memo then holds exactly the attached routes, unless a change was not named (a
        // defect of the caller's marking): then every route is placed again.
        let expected = memo.routes.len() - to_drop.len()
            + to_place
                .iter()
                .filter(|k| !memo.routes.contains_key(**k))
                .count();
        let now = if parents.len() == 1 {
            ix.routes_of_gateway(gw_key)
                .filter(|k| http_kind(k))
                .count()
        } else {
            parents
                .iter()
                .flat_map(|p| ix.routes_of_gateway(p))
                .filter(|k| http_kind(k))
                .collect::<BTreeSet<_>>()
                .len()
        };
        if expected != now {
            tracing::error!(gateway = %gw_key, expected, now, "route changes were not all named; translating the gateway whole");
            full = true;
        }
    }
    if full {
        let old = std::mem::take(memo);
        // Every route this gateway worded before is worded again or loses its words.
        for k in old.routes.into_keys().chain(old.l4_routes) {
            route_parents.insert(k, vec![]);
        }
        let all: BTreeSet<&ResourceKey> = parents
            .iter()
            .flat_map(|p| ix.routes_of_gateway(p))
            .filter(|k| http_kind(k))
            .collect();
        to_place = all.into_iter().collect();
        to_drop.clear();
    }
    for k in to_drop {
        if let Some(p) = memo.routes.remove(k) {
            memo.account(k, &p, false);
            memo.overlaps.members(&p.overlaps, &mut words_due);
            changed_backends.extend(p.backends.keys().cloned());
        }
        route_parents.insert(k.clone(), vec![]);
    }
    memo.stamp = Some(stamp);
    if full {
        // Every valid HTTP listener has its route configuration, empty or not.
        for l in listeners.iter().filter(|l| l.valid && l.is_http()) {
            memo.configs
                .entry(Arc::from(listener::route_config_name(l)))
                .or_default();
        }
    }

    let scope = GatewayScope {
        ix,
        gw_key,
        listeners: &listeners,
        sets: &sets,
        port_hosts: &port_hosts,
        policies,
        has_service,
    };
    // BackendTrafficPolicies, translated once each.
    let mut btps = BtpCache::default();
    let placed_count = to_place.len();
    let placed = place_all(&scope, &mut btps, &to_place, &route_of);
    for (key, p) in to_place.into_iter().zip(placed) {
        let Some(p) = p else {
            continue;
        };
        if let Some(old) = memo.routes.remove(key) {
            memo.account(key, &old, false);
            memo.overlaps.members(&old.overlaps, &mut words_due);
            changed_backends.extend(old.backends.keys().cloned());
        }
        memo.account(key, &p, true);
        if !full {
            changed_backends.extend(p.backends.keys().cloned());
        }
        words_due.insert(key.clone());
        memo.routes.insert(key.clone(), p);
    }
    // Whose overlap buckets changed: a route sharing one with a changed route (after a full
    // translation, every route is due already).
    if !full {
        let mut due = BTreeSet::new();
        for k in &words_due {
            if let Some(p) = memo.routes.get(k) {
                memo.overlaps.members(&p.overlaps, &mut due);
            }
        }
        words_due.extend(due);
        memo.forget_clusters(&changed_backends);
    }
    // Each route's words read the memo only: written on every core.
    let held: &GatewayMemo = memo;
    let worded = crate::par::map_owned(words_due.into_iter().collect(), WORDS_PER_THREAD, |k| {
        let words = match held.routes.get(&k) {
            Some(p) => route_words(&held.overlaps, &k, p),
            None => vec![],
        };
        (k, words)
    });
    route_parents.extend(worded);
    for (li, n) in &memo.attached {
        if let Some(l) = listeners.get_mut(*li) {
            l.attached += u32::try_from(*n).unwrap_or(u32::MAX);
        }
    }

    // TCP, UDP and TLS routes (translated whole each time) take the cluster settings of
    // their BackendTrafficPolicy.
    let mut l4_parents: BTreeMap<ResourceKey, Vec<(usize, Value)>> = BTreeMap::new();
    let mut l4_clusters: Backends = BTreeMap::new();
    let mut l4_variants: BTreeSet<ClusterKey> = BTreeSet::new();
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
        &mut l4_clusters,
        &mut l4_parents,
        &mut l4_policy,
        &mut l4_variants,
    );
    let l4_routes: BTreeSet<ResourceKey> = l4_parents.keys().cloned().collect();
    for k in std::mem::replace(&mut memo.l4_routes, l4_routes) {
        route_parents.entry(k).or_default();
    }
    route_parents.extend(l4_parents.into_iter().map(|(k, words)| {
        let words = words.into_iter().map(|(i, w)| (i, Arc::new(w))).collect();
        (k, words)
    }));

    let mut resources = route_configurations(&listeners, &port_hosts, memo);
    // A route seen through two parent refs is placed twice: its rules once.
    let service_rules: Vec<ratelimit::ServiceRule> = memo.service_rules.keys().cloned().collect();
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
            local: memo.local > 0,
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

    // Clusters: the placed routes' (kept encoded while their inputs hold) and the L4 routes'.
    let mut backends: Backends = memo
        .backends
        .iter()
        .map(|(n, s)| (n.clone(), (s.id.clone(), s.endpoints.clone())))
        .collect();
    for (n, b) in l4_clusters {
        backends.entry(n).or_insert(b);
    }
    let http_keys: BTreeSet<ClusterKey> = memo
        .backends
        .values()
        .map(|s| ClusterKey::new(s.id.clone(), None))
        .chain(memo.variants.keys().cloned())
        .collect();
    let l4_keys: BTreeSet<ClusterKey> = backends
        .values()
        .map(|(id, _)| ClusterKey::new(id.clone(), None))
        .chain(l4_variants)
        .filter(|k| !http_keys.contains(k))
        .collect();
    let mut kept = BTreeMap::new();
    for key in &http_keys {
        let name = key.backend.name();
        let Some((_, endpoints)) = backends.get(&name) else {
            continue;
        };
        let http2 = memo.http2.contains_key(&name);
        let slot = (key.clone(), http2);
        let built = match memo.clusters.remove(&slot) {
            Some((eps, built)) if eps == *endpoints => built,
            _ => crate::backend::cluster_resources(ix, &gw_key.cluster, key, endpoints, http2),
        };
        resources.extend(built.iter().cloned());
        kept.insert(slot, (endpoints.clone(), built));
    }
    memo.clusters = kept;
    for key in &l4_keys {
        let name = key.backend.name();
        let Some((_, endpoints)) = backends.get(&name) else {
            continue;
        };
        let http2 = memo.http2.contains_key(&name);
        resources.extend(crate::backend::cluster_resources(
            ix,
            &gw_key.cluster,
            key,
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
        backends,
        placed: placed_count,
    }
}

/// Routes placed by one thread before a translation uses more (a thread's start costs more
/// than placing a few routes).
const ROUTES_PER_THREAD: usize = 512;

/// Places `keys` (the ones `route_of` finds), in order. Placements are independent of each
/// other, so many are spread over the machine's cores; the result is the same as one by one.
/// Routes worded per thread at least (an overlapping route's words are rewritten).
const WORDS_PER_THREAD: usize = 512;

fn place_all<'a>(
    scope: &GatewayScope<'_, '_>,
    btps: &mut BtpCache,
    keys: &[&ResourceKey],
    route_of: &(dyn Fn(&ResourceKey) -> Option<AnyRoute<'a>> + Sync),
) -> Vec<Option<place::Placed>> {
    let threads = crate::par::cores()
        .min(keys.len() / ROUTES_PER_THREAD)
        .max(1);
    if threads == 1 {
        return keys
            .iter()
            .map(|k| Some(place_route(scope, btps, k, route_of(k)?)))
            .collect();
    }
    let chunk = keys.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut btps = BtpCache::default();
                    part.iter()
                        .map(|k| Some(place_route(scope, &mut btps, k, route_of(k)?)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                // A placement that panicked panics the translation, as it would have inline.
                Err(e) => std::panic::resume_unwind(e),
            })
            .collect()
    })
}

/// A placed route's parent statuses, with the overlap check's verdict.
fn route_words(overlaps: &OverlapTracker, key: &ResourceKey, p: &place::Placed) -> ParentWords {
    p.parents
        .iter()
        .map(|parent| {
            let mut words = parent.words.clone();
            if let Some(msg) = overlaps.conflicts(&p.overlaps, &parent.listeners, p.kind, key) {
                set_overlap_condition(Arc::make_mut(&mut words), msg);
            }
            (parent.index, words)
        })
        .collect()
}

/// Sets the RouteRulesOverlap condition in a parent's status entry (replacing one of that type,
/// as `set_condition` does), observed at the generation its first condition names.
fn set_overlap_condition(words: &mut Value, msg: String) {
    let Some(conds) = words.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    let gen = conds
        .first()
        .and_then(|c| c.get("observedGeneration"))
        .and_then(Value::as_i64);
    let c = Condition::new("RouteRulesOverlap", true, "RouteRulesOverlap", msg, gen);
    let c = serde_json::to_value(c).unwrap_or(Value::Null);
    match conds
        .iter_mut()
        .find(|x| x.get("type") == Some(&Value::from("RouteRulesOverlap")))
    {
        Some(x) => *x = c,
        None => conds.push(c),
    }
}

/// The route configurations of the gateway's listeners, from the memo's virtual hosts (each
/// encoded once per change) plus the hosts the listeners add: a listener hostname that a less
/// specific domain (of another listener's routes) covers gets its own virtual host, empty when
/// no route serves it, so its requests never fall through to the other listener's routes; on an
/// HTTPS listener's own route configuration, the hosts that belong to the port's other
/// listeners are answered 421 (misdirected).
fn route_configurations(
    listeners: &[ListenerState],
    port_hosts: &BTreeMap<u32, Vec<(usize, String)>>,
    memo: &mut GatewayMemo,
) -> Vec<Arc<crate::XdsResource>> {
    // Per route configuration: the listeners' hosts, empty (`false`) or misdirected (`true`).
    let mut extra: BTreeMap<Arc<str>, BTreeMap<String, bool>> = BTreeMap::new();
    for (i, l) in listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.valid && l.is_http())
    {
        let name: Arc<str> = Arc::from(listener::route_config_name(l));
        let Some(config) = memo.configs.get(&name) else {
            continue;
        };
        let added = extra.entry(name.clone()).or_default();
        let has = |added: &BTreeMap<String, bool>, h: &str| {
            config.vhosts.contains_key(h) || added.get(h) == Some(&false)
        };
        let hosts = port_hosts
            .get(&port_of(l.spec))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if l.protocol() != "HTTPS" {
            for (_, h) in hosts {
                if !has(added, h)
                    && config
                        .vhosts
                        .keys()
                        .map(|d| &**d)
                        .chain(added.iter().filter(|(_, m)| !**m).map(|(d, _)| d.as_str()))
                        .any(|d| d != h && covers(Some(d), h))
                {
                    added.insert(h.clone(), false);
                }
            }
            continue;
        }
        let own = listener_hostname(l).map(str::to_ascii_lowercase);
        if let Some(own) = &own {
            // Its own hosts without a route: 404, not the 421 of the catch-all below.
            if !config.vhosts.contains_key(own.as_str()) {
                added.insert(own.clone(), false);
            }
            if !has(added, "*") {
                added.entry("*".into()).or_insert(true);
            }
        }
        for (j, h) in hosts {
            if *j != i && Some(h) != own.as_ref() && !has(added, h) {
                added.entry(h.clone()).or_insert(true);
            }
        }
    }
    // Route configurations of listeners that also serve HTTP/3 announce it (alt-svc).
    let http3_ports: BTreeMap<String, u32> = (0..listeners.len())
        .filter(|&i| listener::xds::serves_http3(listeners, i))
        .map(|i| {
            let l = &listeners[i];
            (listener::route_config_name(l), port_of(l.spec))
        })
        .collect();
    let live: BTreeSet<Arc<str>> = listeners
        .iter()
        .filter(|l| l.valid && l.is_http())
        .map(|l| Arc::from(listener::route_config_name(l)))
        .collect();
    memo.configs
        .retain(|name, c| !c.vhosts.is_empty() || live.contains(name));
    let dirty = std::mem::take(&mut memo.dirty_configs);
    let mut out = Vec::new();
    let mut assembled = BTreeMap::new();
    for (name, config) in memo.configs.iter_mut() {
        let added = extra.remove(name).unwrap_or_default();
        // Hosts the listeners add change with the listeners (a full translation) or with
        // the hosts present: assembled again whenever its hosts changed.
        if !dirty.contains(name) {
            if let Some(r) = memo.assembled.get(name) {
                out.push(r.clone());
                assembled.insert(name.clone(), r.clone());
                continue;
            }
        }
        let mut vhosts: BTreeMap<&str, Arc<crate::envoy::EncodedVirtualHost>> = BTreeMap::new();
        let mut largest = 0;
        for (domain, vh) in config.vhosts.iter_mut() {
            let (e, l) = vh.encoded(name, domain);
            largest = largest.max(l);
            vhosts.insert(domain, e);
        }
        for (domain, misdirected) in &added {
            if vhosts.contains_key(domain.as_str()) {
                continue;
            }
            let vh = memo::virtual_host(name, domain);
            let routes: Vec<Vec<u8>> = if *misdirected {
                vec![crate::envoy::encode_route(misdirected_route())]
            } else {
                vec![]
            };
            let body = crate::envoy::encode_virtual_host(&vh, routes.iter().map(Vec::as_slice));
            vhosts.insert(
                domain,
                Arc::new(crate::envoy::EncodedVirtualHost::new(body)),
            );
        }
        let rc = RouteConfiguration {
            response_headers_to_add: http3_ports
                .get(&**name)
                .map(|p| crate::policy::client::xds::alt_svc_header(*p))
                .into_iter()
                .collect(),
            name: name.to_string(),
            max_direct_response_body_size_bytes: crate::httproute::body_size_limit(largest),
            ..Default::default()
        };
        let parts: Vec<&crate::envoy::EncodedVirtualHost> = vhosts.values().map(|v| &**v).collect();
        let r = crate::envoy::route_configuration_from(&rc, &parts);
        out.push(r.clone());
        assembled.insert(name.clone(), r);
    }
    memo.assembled = assembled;
    out
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

/// Adds a rule's BackendTrafficPolicy to one of its routes: the route-level settings (and its
/// stat prefix, named after `origin`), and its clusters replaced by their variants with the policy's cluster settings (recorded in
/// `variants`).
fn apply_backend_policy(
    r: &mut Route,
    p: &BackendPolicy,
    origin: &crate::ir::route::RouteOrigin<'_>,
    host: &str,
    backends: &Backends,
    variants: &mut BTreeSet<ClusterKey>,
) {
    crate::traffic::apply_route(r, &p.route, p.cluster.as_deref());
    if let Some(s) = &p.route.stat_name {
        r.stat_prefix = s.render(origin);
    }
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
