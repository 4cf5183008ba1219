//! Translation of one Gateway: its listeners, the HTTPRoutes attached to it and their
//! backends → Envoy resources, listener status and route parent status.

use crate::envoy::{self, EndpointAddr};
use crate::httproute::{check_route, dropped_indices, PrecedenceKey};
use crate::index::Index;
use crate::listener::{check_listener, mark_conflicts, port_of, supported_kinds, ListenerState};
use crate::GatewayXds;
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use flotilla_model::gateway::{Condition, Gateway, HttpRoute, Listener, ParentReference};
use flotilla_model::{ResourceKey, GATEWAY_GROUP};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The controller name Flotilla answers to: Envoy Gateway's, so that GatewayClasses written
/// for Envoy Gateway move over unchanged.
pub const CONTROLLER_NAME: &str = "gateway.envoyproxy.io/gatewayclass-controller";

/// Everything translating one gateway produces.
pub(crate) struct GatewayResult {
    pub xds: GatewayXds,
    pub status: Value,
    /// Route parent statuses this gateway is responsible for, by route.
    pub route_parents: BTreeMap<ResourceKey, Vec<(usize, Value)>>,
}

pub(crate) fn translate_gateway(ix: &Index, gw_key: &ResourceKey, gw: &Gateway) -> GatewayResult {
    let gen = gw.metadata.generation;
    let mut listeners: Vec<ListenerState> = gw
        .spec
        .listeners
        .iter()
        .map(|l| check_listener(l, gen))
        .collect();
    mark_conflicts(&mut listeners, gen);

    let bind_ip = gw
        .spec
        .addresses
        .iter()
        .find(|a| a.type_.as_deref().is_none_or(|t| t == "IPAddress"))
        .map(|a| a.value.clone())
        .unwrap_or_else(|| "0.0.0.0".to_string());

    // port -> domain -> routes (with precedence keys)
    let mut vhosts: BTreeMap<u32, BTreeMap<String, Vec<(PrecedenceKey, Route)>>> = BTreeMap::new();
    for l in listeners.iter().filter(|l| l.valid) {
        vhosts.entry(port_of(l.spec)).or_default();
    }
    let mut clusters: BTreeMap<String, Vec<EndpointAddr>> = BTreeMap::new();
    let mut route_parents: BTreeMap<ResourceKey, Vec<(usize, Value)>> = BTreeMap::new();

    let mut routes: Vec<(&ResourceKey, &HttpRoute)> = ix
        .routes_of_gateway(gw_key)
        .filter_map(|k| ix.http_route(k).map(|r| (k, r)))
        .collect();
    // Precedence among routes: oldest first, then namespace/name (Gateway API spec).
    routes.sort_by(|a, b| {
        created(&a.1.metadata)
            .cmp(&created(&b.1.metadata))
            .then_with(|| a.0.cmp(b.0))
    });

    for (rank, (route_key, route)) in routes.iter().enumerate() {
        let checked = check_route(ix, route_key, route, &mut clusters);
        let rgen = route.metadata.generation;
        for (pi, pref) in route.spec.parent_refs.iter().enumerate() {
            if !refers_to(pref, &route_key.namespace, gw_key) {
                continue;
            }
            let (accepted, attach_to) = attach(
                ix,
                &listeners,
                pref,
                &gw_key.namespace,
                route_key,
                route,
                rgen,
            );
            let mut conds = vec![accepted.clone()];
            if accepted.status == "True" {
                for (li, hostnames) in &attach_to {
                    listeners[*li].attached += 1;
                    let port = port_of(listeners[*li].spec);
                    let domains = vhosts.entry(port).or_default();
                    for host in hostnames {
                        let entries = domains.entry(host.clone()).or_default();
                        for (ri, rule) in &checked.rules {
                            for (mi, m) in rule.matches.iter().enumerate() {
                                let spec_match = route.spec.rules[*ri].matches.get(mi);
                                entries.push((
                                    PrecedenceKey::new(spec_match, rank, *ri, mi),
                                    Route {
                                        name: format!(
                                            "httproute/{}/{}/rule/{ri}/match/{mi}",
                                            route_key.namespace, route_key.name
                                        ),
                                        r#match: Some(m.clone()),
                                        action: Some(rule.action.clone()),
                                        ..Default::default()
                                    },
                                ));
                            }
                        }
                    }
                }
                if !checked.dropped.is_empty() {
                    conds.push(Condition::new(
                        "PartiallyInvalid",
                        true,
                        "UnsupportedValue",
                        format!(
                            "Dropped Rule(s) {}: {}",
                            dropped_indices(&checked),
                            checked.dropped.join("\n")
                        ),
                        rgen,
                    ));
                }
            }
            conds.push(match checked.unresolved.first() {
                None => Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "Resolved all the Object references for the Route",
                    rgen,
                ),
                Some((reason, _)) => Condition::new(
                    "ResolvedRefs",
                    false,
                    reason,
                    checked
                        .unresolved
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    rgen,
                ),
            });
            route_parents
                .entry((*route_key).clone())
                .or_default()
                .push((
                    pi,
                    json!({
                        "parentRef": pref,
                        "controllerName": CONTROLLER_NAME,
                        "conditions": conds,
                    }),
                ));
        }
    }

    let mut resources = Vec::new();
    for (port, domains) in vhosts {
        let name = format!("http-{port}");
        let virtual_hosts = domains
            .into_iter()
            .map(|(domain, mut entries)| {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut domains = vec![domain.clone()];
                if domain != "*" {
                    domains.push(format!("{domain}:*"));
                }
                VirtualHost {
                    name: format!("{name}/{domain}"),
                    domains,
                    routes: entries.into_iter().map(|(_, r)| r).collect(),
                    ..Default::default()
                }
            })
            .collect();
        let rc = RouteConfiguration {
            name: name.clone(),
            virtual_hosts,
            ..Default::default()
        };
        resources.push(envoy::route_configuration(&rc));
        resources.push(envoy::http_listener(&name, &bind_ip, port, &name));
    }
    for (name, endpoints) in &clusters {
        resources.push(envoy::eds_cluster(name));
        resources.push(envoy::load_assignment(name, endpoints));
    }
    resources.sort_by(|a, b| (&a.type_url, &a.name).cmp(&(&b.type_url, &b.name)));

    let status = json!({
        "listeners": listeners.iter().map(|l| json!({
            "name": l.spec.name,
            "supportedKinds": supported_kinds(l.spec),
            "attachedRoutes": l.attached,
            "conditions": l.conditions,
        })).collect::<Vec<_>>(),
    });
    GatewayResult {
        xds: GatewayXds {
            gateway: gw_key.gateway_id(),
            resources,
        },
        status,
        route_parents,
    }
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    // RFC 3339 timestamps in UTC order lexically; absent timestamps sort first.
    meta.creation_timestamp.as_ref().map(|t| t.0.to_string())
}

fn refers_to(pref: &ParentReference, route_ns: &str, gw: &ResourceKey) -> bool {
    pref.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
        && pref.kind.as_deref().unwrap_or("Gateway") == "Gateway"
        && pref.namespace.as_deref().unwrap_or(route_ns) == gw.namespace
        && pref.name == gw.name
}

/// Decides whether `route` attaches through `pref` and to which listeners (with the hostnames
/// each contributes as virtual host domains).
fn attach(
    ix: &Index,
    listeners: &[ListenerState],
    pref: &ParentReference,
    gw_ns: &str,
    route_key: &ResourceKey,
    route: &HttpRoute,
    gen: Option<i64>,
) -> (Condition, Vec<(usize, Vec<String>)>) {
    let candidates: Vec<usize> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| pref.section_name.as_ref().is_none_or(|s| *s == l.spec.name))
        .filter(|(_, l)| pref.port.is_none_or(|p| p == l.spec.port))
        .map(|(i, _)| i)
        .collect();
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
        .filter(|&i| listeners[i].valid && allows(ix, listeners[i].spec, gw_ns, route_key))
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
        let hosts =
            intersect_hostnames(listeners[i].spec.hostname.as_deref(), &route.spec.hostnames);
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
                "There were no hostname intersections between the HTTPRoute and this parent ref's Listener(s).",
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

fn allows(ix: &Index, l: &Listener, gw_ns: &str, route_key: &ResourceKey) -> bool {
    let ar = l.allowed_routes.as_ref();
    if let Some(kinds) = ar.and_then(|a| a.kinds.as_ref()) {
        if !kinds.is_empty()
            && !kinds.iter().any(|k| {
                k.kind == "HTTPRoute"
                    && k.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
            })
        {
            return false;
        }
    }
    let ns = ar.and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => route_key.namespace == gw_ns,
        "Selector" => ns
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|sel| ix.namespace_matches(&route_key.cluster, &route_key.namespace, sel)),
        _ => false,
    }
}

/// Gateway API hostname intersection: a listener hostname (possibly `*.wildcard`) and the
/// route's hostnames. Returns the domains to serve; `*` when neither restricts.
pub(crate) fn intersect_hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = match (listener, route.is_empty()) {
        (None, true) => ["*".to_string()].into(),
        (Some(l), true) => [l.to_string()].into(),
        (None, false) => route.iter().cloned().collect(),
        (Some(l), false) => route
            .iter()
            .filter_map(|r| host_intersection(l, r))
            .collect(),
    };
    set.into_iter().collect()
}

fn host_intersection(a: &str, b: &str) -> Option<String> {
    if a == b {
        return Some(a.to_string());
    }
    let wild_match = |wild: &str, host: &str| {
        wild.strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
    };
    if wild_match(a, b) {
        return Some(b.to_string());
    }
    if wild_match(b, a) {
        return Some(a.to_string());
    }
    None
}
