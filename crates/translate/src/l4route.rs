//! TLSRoute, TCPRoute and UDPRoute: attachment to listeners, backends, route parent status,
//! and the Envoy filter chains (tcp_proxy by SNI or as the default chain) and udp_proxy
//! listener filters they become.

use crate::envoy::network_filter;
use crate::envoy::{any, EndpointAddr};
use crate::hostnames::intersect_hostnames;
use crate::index::Index;
use crate::ir::cluster::{BackendId, ClusterKey, ClusterSettings};
use crate::listener::xds::{Chain, L4Chains};
use crate::listener::{parent_candidates, refers_to, ListenerState, SetInfo};
use crate::values::Age;
use crate::CONTROLLER_NAME;
use envoy_types::pb::envoy::config::listener::v3::{listener_filter, ListenerFilter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::envoy::extensions::filters::udp::udp_proxy::v3::{
    udp_proxy_config, Route as UdpRoute, UdpProxyConfig,
};
use envoy_types::pb::xds::core::v3::TypedExtensionConfig;
use envoy_types::pb::xds::r#type::matcher::v3::{matcher, Matcher};
use flotilla_model::gateway::{Condition, HttpBackendRef};
use flotilla_model::routes::L4RouteSpec;
use flotilla_model::{Kind, Object, ResourceKey, EG_GROUP, GATEWAY_GROUP};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A route of one of the layer-4 kinds.
struct L4Route<'a> {
    key: &'a ResourceKey,
    kind: Kind,
    meta: &'a ObjectMeta,
    spec: &'a L4RouteSpec,
}

fn l4_route<'a>(ix: &'a Index, k: &ResourceKey) -> Option<(Kind, &'a ObjectMeta, &'a L4RouteSpec)> {
    match ix.resources.get(k).map(|r| &r.object) {
        Some(Object::TLSRoute(r)) => Some((Kind::TLSRoute, &r.metadata, &r.spec)),
        Some(Object::TCPRoute(r)) => Some((Kind::TCPRoute, &r.metadata, &r.spec)),
        Some(Object::UDPRoute(r)) => Some((Kind::UDPRoute, &r.metadata, &r.spec)),
        _ => None,
    }
}

/// Attaches the gateway's TLS/TCP/UDP routes, records their parent status and resolves their
/// backends into `clusters`; returns the Envoy chains per listener.
#[allow(clippy::too_many_arguments)]
pub(crate) fn translate_l4_routes(
    ix: &Index,
    gw_key: &ResourceKey,
    listeners: &mut [ListenerState],
    sets: &[SetInfo],
    clusters: &mut crate::ir::cluster::Backends,
    route_parents: &mut BTreeMap<ResourceKey, Vec<(usize, Value)>>,
    policy: &mut L4Policy<'_>,
    variants: &mut BTreeSet<ClusterKey>,
) -> L4Chains {
    let l4 = |k: &&ResourceKey| {
        matches!(
            k.kind,
            flotilla_model::Kind::TLSRoute
                | flotilla_model::Kind::TCPRoute
                | flotilla_model::Kind::UDPRoute
        )
    };
    let mut keys: BTreeSet<&ResourceKey> = ix.routes_of_gateway(gw_key).filter(l4).collect();
    for s in sets {
        keys.extend(ix.routes_of_gateway(&s.key).filter(l4));
    }
    let mut routes: Vec<L4Route> = keys
        .into_iter()
        .filter_map(|k| {
            l4_route(ix, k).map(|(kind, meta, spec)| L4Route {
                key: k,
                kind,
                meta,
                spec,
            })
        })
        .collect();
    // Envoy Gateway translates every TLSRoute, then every TCPRoute, then every UDPRoute (the
    // order of `Kind`); within a kind, oldest first, then namespace/name.
    routes.sort_by(|a, b| {
        (a.kind, Age::of(a.meta, a.key), a.key).cmp(&(b.kind, Age::of(b.meta, b.key), b.key))
    });

    let mut out = L4Chains::default();
    for r in &routes {
        let gen = r.meta.generation;
        let kind = r.kind.as_str();
        // Backends are resolved once per route; every parent reports the same result.
        let (backends, mut unresolved, dynamic) = resolve_rules(ix, r, clusters);
        for (pi, pref) in r.spec.parent_refs.iter().enumerate() {
            if !refers_to(sets, pref, &r.key.namespace, gw_key) {
                continue;
            }
            let candidates = parent_candidates(listeners, sets, pref, &r.key.namespace, gw_key)
                .unwrap_or_default();
            let mut conds: Vec<Condition> = Vec::new();
            let allowed: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| listeners[i].allows(ix, kind, r.key))
                .collect();
            let mut attach: Vec<(usize, Vec<String>)> = Vec::new();
            if candidates.is_empty() {
                conds.push(Condition::new(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    "No listeners match this parent ref",
                    gen,
                ));
            } else if allowed.is_empty() {
                conds.push(Condition::new(
                    "Accepted",
                    false,
                    "NotAllowedByListeners",
                    "No listeners included by this parent ref allowed this attachment.",
                    gen,
                ));
            } else {
                for &i in &allowed {
                    let hosts = if r.kind == Kind::TLSRoute {
                        intersect_hostnames(
                            listeners[i].spec.hostname.as_deref(),
                            &r.spec.hostnames,
                        )
                    } else {
                        vec!["*".to_string()]
                    };
                    if !hosts.is_empty() {
                        attach.push((i, hosts));
                    }
                }
                if attach.is_empty() {
                    conds.push(Condition::new("Accepted", false, "NoMatchingListenerHostname",
                        format!("There were no hostname intersections between the {kind} and this parent ref's Listener(s)."), gen));
                } else if r.kind != Kind::TLSRoute && r.spec.rules.len() != 1 {
                    conds.push(Condition::new(
                        "Accepted",
                        false,
                        "InvalidRule",
                        "One and only one rule is supported",
                        gen,
                    ));
                    attach.clear();
                } else {
                    conds.push(Condition::new(
                        "Accepted",
                        true,
                        "Accepted",
                        "Route is accepted",
                        gen,
                    ));
                }
            }
            // A DynamicResolver backend resolves the upstream from the SNI name, so only a
            // TLS passthrough listener can use it.
            if dynamic.is_some()
                && attach.iter().any(|(i, _)| {
                    listeners[*i].protocol() != "TLS" || listeners[*i].tls_mode() != "Passthrough"
                })
                && unresolved.is_empty()
            {
                unresolved.push((
                    "UnsupportedValue",
                    "Dynamic resolver backend is only supported with TLS passthrough listeners"
                        .into(),
                ));
            }
            if conds[0].reason != "InvalidRule" {
                conds.push(match unresolved.first() {
                    None => Condition::new(
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "Resolved all the Object references for the Route",
                        gen,
                    ),
                    Some((reason, msg)) => {
                        Condition::new("ResolvedRefs", false, reason, msg.clone(), gen)
                    }
                });
            }
            for (i, hosts) in attach {
                listeners[i].attached += 1;
                let dynamic = dynamic.as_ref().filter(|_| unresolved.is_empty());
                if !listeners[i].valid || (backends.is_empty() && dynamic.is_none()) {
                    continue;
                }
                // The cluster settings of the route's BackendTrafficPolicy on this listener.
                let rule = match r.spec.rules.as_slice() {
                    [one] => one.name.as_deref(),
                    _ => None,
                };
                let set = listeners[i].set.map(|s| &sets[s].key);
                let settings = policy(r.key, rule, set, &listeners[i].spec.name).map(|s| {
                    Arc::new(if r.kind == Kind::UDPRoute {
                        s.for_udp()
                    } else {
                        s.for_tcp()
                    })
                });
                let backends: Vec<(String, u32)> = match settings.filter(|s| !s.is_empty()) {
                    None => backends.clone(),
                    Some(s) => backends
                        .iter()
                        .map(|(name, w)| match clusters.get(name) {
                            Some((id, _)) => {
                                let key = ClusterKey::new(id.clone(), Some(s.clone()));
                                let name = key.name();
                                variants.insert(key);
                                (name, *w)
                            }
                            None => (name.clone(), *w),
                        })
                        .collect(),
                };
                program(&mut out, &listeners[i], i, r, hosts, &backends, dynamic);
            }
            route_parents.entry(r.key.clone()).or_default().push((
                pi,
                json!({"parentRef": pref, "controllerName": CONTROLLER_NAME, "conditions": conds}),
            ));
        }
    }
    out
}

/// The cluster settings of the BackendTrafficPolicy of (route, rule name) as served by a
/// listener (of a ListenerSet, if given), by name.
pub(crate) type L4Policy<'a> = dyn FnMut(&ResourceKey, Option<&str>, Option<&ResourceKey>, &str) -> Option<Arc<ClusterSettings>>
    + 'a;

/// Adds the Envoy configuration of route `r` on listener `i`.
fn program(
    out: &mut L4Chains,
    l: &ListenerState,
    i: usize,
    r: &L4Route,
    hosts: Vec<String>,
    backends: &[(String, u32)],
    dynamic: Option<&DynamicTarget>,
) {
    let stat = format!(
        "{}/{}/{}",
        r.kind.as_str().to_ascii_lowercase(),
        r.key.namespace,
        r.key.name
    );
    match (l.protocol(), r.kind) {
        ("UDP", Kind::UDPRoute) => {
            if out.udp.contains_key(&i) {
                return;
            }
            let cluster = backends[0].0.clone();
            let route = TypedExtensionConfig {
                name: "route".into(),
                typed_config: Some(any(
                    "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.Route",
                    &UdpRoute { cluster },
                )),
            };
            let cfg = UdpProxyConfig {
                stat_prefix: stat,
                route_specifier: Some(udp_proxy_config::RouteSpecifier::Matcher(Matcher {
                    on_no_match: Some(Box::new(matcher::OnMatch {
                        on_match: Some(matcher::on_match::OnMatch::Action(route)),
                        ..Default::default()
                    })),
                    matcher_type: None,
                })),
                ..Default::default()
            };
            out.udp.insert(
                i,
                ListenerFilter {
                    name: "envoy.filters.udp_listener.udp_proxy".into(),
                    config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                        "type.googleapis.com/envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
                        &cfg,
                    ))),
                    ..Default::default()
                },
            );
        }
        ("TCP" | "TLS", Kind::TCPRoute | Kind::TLSRoute) => {
            let tp = TcpProxy {
                stat_prefix: stat,
                cluster_specifier: Some(if backends.len() == 1 {
                    tcp_proxy::ClusterSpecifier::Cluster(backends[0].0.clone())
                } else {
                    tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
                        clusters: backends
                            .iter()
                            .map(|(name, w)| tcp_proxy::weighted_cluster::ClusterWeight {
                                name: name.clone(),
                                weight: *w,
                                ..Default::default()
                            })
                            .collect(),
                    })
                }),
                ..Default::default()
            };
            let mut filters = Vec::new();
            let mut tp = tp;
            if let Some(ctp) = &l.ctp {
                crate::policy::client::xds::apply_tcp_proxy(ctp, &mut tp);
            }
            if let Some(d) = dynamic {
                // The SNI name goes through the DNS cache the cluster shares.
                use envoy_types::pb::envoy::extensions::filters::network::sni_dynamic_forward_proxy::v3::{
                    filter_config::PortSpecifier, FilterConfig,
                };
                filters.push(network_filter(
                    "envoy.filters.network.sni_dynamic_forward_proxy",
                    "type.googleapis.com/envoy.extensions.filters.network.sni_dynamic_forward_proxy.v3.FilterConfig",
                    &FilterConfig {
                        dns_cache_config: Some(crate::backend::dfp_dns_cache(&d.name)),
                        port_specifier: Some(PortSpecifier::PortValue(d.port)),
                        ..Default::default()
                    },
                ));
                tp.cluster_specifier = Some(tcp_proxy::ClusterSpecifier::Cluster(d.name.clone()));
                out.resources
                    .push(crate::backend::dns_cache_dfp_cluster(&d.name));
            }
            filters.push(network_filter(
                "envoy.filters.network.tcp_proxy",
                "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                &tp,
            ));
            let (server_names, tls) = match l.protocol() {
                "TCP" => (vec![], None),
                _ => {
                    // A TLSRoute is chosen by its SNI names; a TCPRoute on a terminating TLS
                    // listener by the listener's hostname.
                    let names: Vec<String> = if r.kind == Kind::TLSRoute {
                        hosts.into_iter().filter(|h| h != "*").collect()
                    } else {
                        crate::hostnames::sni_names(l.spec.hostname.as_deref())
                    };
                    let tls = (l.tls_mode() != "Passthrough")
                        .then(|| std::sync::Arc::new(l.serving_certs()));
                    if tls.as_ref().is_some_and(|c| c.is_empty()) {
                        return;
                    }
                    (names, tls)
                }
            };
            out.chains.entry(i).or_default().push(Chain {
                server_names,
                tls,
                alpn: &[],
                client: None,
                ctp: None,
                filters,
            });
        }
        _ => {}
    }
}

/// Resolves the backends of every rule: the clusters with their weights (zero weights
/// dropped), and the first problems found, as (reason, message).
/// Also gives the route's DynamicResolver Backend, if that is its backend (it has no endpoints:
/// the upstream is the TLS server name the client asked for).
#[allow(clippy::type_complexity)]
fn resolve_rules(
    ix: &Index,
    r: &L4Route,
    clusters: &mut crate::ir::cluster::Backends,
) -> (
    Vec<(String, u32)>,
    Vec<(&'static str, String)>,
    Option<DynamicTarget>,
) {
    let mut backends = Vec::new();
    let mut unresolved = Vec::new();
    let mut dynamic = None;
    let refs = r
        .spec
        .rules
        .iter()
        .map(|x| x.backend_refs.len())
        .sum::<usize>();
    let udp = r.kind == Kind::UDPRoute;
    // udp_proxy routes to one cluster: a UDP rule's backends are merged into a cluster of
    // the route's own.
    let udp_cluster = format!("udproute/{}/{}", r.key.namespace, r.key.name);
    let mut udp_eps: Vec<EndpointAddr> = Vec::new();
    for rule in &r.spec.rules {
        for b in &rule.backend_refs {
            if r.kind == Kind::TLSRoute && is_dynamic_resolver(ix, r.key, b) {
                if refs > 1 {
                    unresolved.push((
                        "InvalidBackendRef",
                        "dynamic resolver is not supported for multiple backendRefs".into(),
                    ));
                } else {
                    let ns = b.namespace.as_deref().unwrap_or(&r.key.namespace);
                    dynamic = Some(DynamicTarget {
                        name: format!("tlsroute-dfp/{ns}/{}", b.name),
                        port: b
                            .port
                            .and_then(|p| u32::try_from(p).ok())
                            .filter(|p| *p > 0)
                            .unwrap_or(443),
                    });
                }
                continue;
            }
            match resolve_service(ix, r, b, udp) {
                Ok((id, eps)) => {
                    let name = id.name();
                    let w = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
                    if w == 0 {
                        continue;
                    }
                    if udp {
                        udp_eps.extend(eps.iter().cloned());
                    } else {
                        clusters.insert(name.clone(), (id, eps));
                        backends.push((name, w));
                    }
                }
                Err(e) => unresolved.push(e),
            }
        }
    }
    if udp && !udp_eps.is_empty() {
        udp_eps.sort();
        udp_eps.dedup();
        clusters.insert(
            udp_cluster.clone(),
            (BackendId::Named(udp_cluster.clone()), udp_eps.into()),
        );
        backends.push((udp_cluster, 1));
    }
    (backends, unresolved, dynamic)
}

/// A TLSRoute's DynamicResolver Backend: the SNI name is resolved through DNS and the
/// connection passed through to `port` there.
#[derive(Clone, Debug)]
struct DynamicTarget {
    /// The cluster, and the DNS cache it shares with the listener's SNI filter.
    name: String,
    port: u32,
}

fn is_dynamic_resolver(ix: &Index, route: &ResourceKey, b: &HttpBackendRef) -> bool {
    if b.kind.as_deref() != Some("Backend") || b.group.as_deref() != Some(EG_GROUP) {
        return false;
    }
    let ns = b.namespace.as_deref().unwrap_or(&route.namespace);
    let key = ResourceKey::new(&route.cluster, Kind::Backend, ns, &b.name);
    matches!(ix.resources.get(&key).map(|r| &r.object),
        Some(Object::Backend(be)) if be.spec.type_.as_deref() == Some("DynamicResolver"))
}

fn resolve_service(
    ix: &Index,
    r: &L4Route,
    b: &HttpBackendRef,
    udp: bool,
) -> crate::index::Resolution {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        // Other backend kinds (Backend, ServiceImport) resolve as for HTTPRoutes.
        return crate::backend::resolve_backend(ix, r.key, b);
    }
    let ns = b
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&r.key.namespace);
    if !ix.reference_allowed(
        &r.key.cluster,
        GATEWAY_GROUP,
        r.kind.as_str(),
        &r.key.namespace,
        "",
        "Service",
        ns,
        &b.name,
    ) {
        return Err((
            "RefNotPermitted",
            format!(
                "Backend ref to Service {ns}/{} not permitted by any ReferenceGrant.",
                b.name
            ),
        ));
    }
    let Some(port) = b.port else {
        return Err((
            "PortNotSpecified",
            "A valid port number corresponding to a port on the Service must be specified".into(),
        ));
    };
    let svc_key = ResourceKey::new(&r.key.cluster, Kind::Service, ns, &b.name);
    let Some(svc) = ix.service(&svc_key) else {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} not found", b.name),
        ));
    };
    let proto = if udp { "UDP" } else { "TCP" };
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    let Some(sp) = ports.and_then(|ps| {
        ps.iter()
            .find(|p| p.port == port && p.protocol.as_deref().unwrap_or("TCP") == proto)
    }) else {
        return Err((
            "PortNotFound",
            format!("{proto} Port {port} not found on Service {ns}/{}", b.name),
        ));
    };
    let name = if udp {
        BackendId::Named(format!("{ns}/{}/{port}/udp", b.name))
    } else {
        BackendId::Service {
            namespace: ns.to_string(),
            name: b.name.clone(),
            port,
        }
    };
    Ok((name, ix.endpoints(&svc_key, sp).into()))
}
