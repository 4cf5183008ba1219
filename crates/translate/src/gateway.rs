//! Translation of one Gateway: its listeners, the HTTPRoutes attached to it and their
//! backends → Envoy resources, listener status and route parent status.

use crate::envoy::{self, EndpointAddr};
use crate::index::Index;
use crate::GatewayXds;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route, route_action, route_match, weighted_cluster,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::UInt32Value;
use flotilla_model::gateway::{
    Condition, Gateway, HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRule, Listener,
    ParentReference,
};
use flotilla_model::{Kind, ResourceKey, GATEWAY_GROUP};
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

struct ListenerState<'a> {
    spec: &'a Listener,
    valid: bool,
    conditions: Vec<Condition>,
    attached: u32,
}

/// A route after per-route validation, independent of the parent it attaches to.
struct CheckedRoute {
    /// Rules that survived validation, with their index in the spec.
    rules: Vec<(usize, CheckedRule)>,
    dropped: Vec<String>,
    unresolved: Vec<(&'static str, String)>,
}

struct CheckedRule {
    matches: Vec<RouteMatch>,
    action: route::Action,
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

fn port_of(l: &Listener) -> u32 {
    u32::try_from(l.port).unwrap_or(0)
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    // RFC 3339 timestamps in UTC order lexically; absent timestamps sort first.
    meta.creation_timestamp.as_ref().map(|t| t.0.to_string())
}

fn dropped_indices(c: &CheckedRoute) -> String {
    let idx: Vec<String> = c
        .dropped
        .iter()
        .filter_map(|m| {
            m.strip_prefix("Failed to process route rule ")
                .and_then(|s| s.split(':').next())
                .map(str::to_string)
        })
        .collect();
    format!("[{}]", idx.join(", "))
}

fn supported_kinds(l: &Listener) -> Value {
    match l.protocol.as_str() {
        "HTTP" | "HTTPS" => json!([
            {"group": GATEWAY_GROUP, "kind": "HTTPRoute"},
            {"group": GATEWAY_GROUP, "kind": "GRPCRoute"},
        ]),
        "TLS" => json!([{"group": GATEWAY_GROUP, "kind": "TLSRoute"}]),
        "TCP" => json!([{"group": GATEWAY_GROUP, "kind": "TCPRoute"}]),
        "UDP" => json!([{"group": GATEWAY_GROUP, "kind": "UDPRoute"}]),
        _ => json!([]),
    }
}

fn check_listener(l: &Listener, gen: Option<i64>) -> ListenerState<'_> {
    let mut conditions = Vec::new();
    let valid = match l.protocol.as_str() {
        "HTTP" if (1..=65535).contains(&l.port) => {
            conditions.push(Condition::new(
                "Programmed",
                true,
                "Programmed",
                "Sending translated listener configuration to the data plane",
                gen,
            ));
            conditions.push(Condition::new(
                "Accepted",
                true,
                "Accepted",
                "Listener has been successfully translated",
                gen,
            ));
            conditions.push(Condition::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Listener references have been resolved",
                gen,
            ));
            true
        }
        "HTTP" => {
            conditions.push(Condition::new(
                "Accepted",
                false,
                "UnsupportedValue",
                format!("Port {} is invalid, must be between 1 and 65535.", l.port),
                gen,
            ));
            conditions.push(programmed_invalid(gen));
            false
        }
        p @ ("HTTPS" | "TLS" | "TCP" | "UDP") => {
            conditions.push(Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!("Protocol {p} is not supported by Flotilla yet; only HTTP listeners are translated."),
                gen,
            ));
            conditions.push(programmed_invalid(gen));
            false
        }
        p => {
            conditions.push(Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!("Protocol {p} is unsupported, must be HTTP, HTTPS, TCP or UDP."),
                gen,
            ));
            conditions.push(programmed_invalid(gen));
            false
        }
    };
    ListenerState {
        spec: l,
        valid,
        conditions,
        attached: 0,
    }
}

fn programmed_invalid(gen: Option<i64>) -> Condition {
    Condition::new(
        "Programmed",
        false,
        "Invalid",
        "Listener is invalid, see other Conditions for details.",
        gen,
    )
}

/// Listeners sharing a port must have distinct hostnames; those that clash are not programmed.
fn mark_conflicts(listeners: &mut [ListenerState], gen: Option<i64>) {
    let mut seen: BTreeMap<(u32, String), Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate().filter(|(_, l)| l.valid) {
        let host = l.spec.hostname.clone().unwrap_or_default();
        seen.entry((port_of(l.spec), host)).or_default().push(i);
    }
    for ((_, _), idx) in seen.into_iter().filter(|(_, v)| v.len() > 1) {
        for i in idx {
            let l = &mut listeners[i];
            l.valid = false;
            l.conditions = vec![
                Condition::new(
                    "Conflicted",
                    true,
                    "HostnameConflict",
                    "All listeners for a given port must use a unique hostname",
                    gen,
                ),
                programmed_invalid(gen),
            ];
        }
    }
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

/// Validates the route's rules and resolves its backends (adding their clusters).
fn check_route(
    ix: &Index,
    key: &ResourceKey,
    route: &HttpRoute,
    clusters: &mut BTreeMap<String, Vec<EndpointAddr>>,
) -> CheckedRoute {
    let mut out = CheckedRoute {
        rules: vec![],
        dropped: vec![],
        unresolved: vec![],
    };
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let matches = match rule_matches(rule) {
            Ok(m) => m,
            Err(e) => {
                out.dropped
                    .push(format!("Failed to process route rule {ri}: {e}."));
                continue;
            }
        };
        let mut weighted = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            match resolve_backend(ix, key, b) {
                Ok((name, endpoints)) => {
                    clusters.insert(name.clone(), endpoints);
                    let w = b.weight.unwrap_or(1).max(0) as u32;
                    if w > 0 {
                        weighted.push((name, w));
                    }
                }
                Err((reason, msg)) => out.unresolved.push((
                    reason,
                    format!("Failed to process route rule {ri} backendRef {bi}: {msg}."),
                )),
            }
        }
        let action = match weighted.len() {
            0 => route::Action::DirectResponse(DirectResponseAction {
                status: 500,
                ..Default::default()
            }),
            1 => route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    weighted[0].0.clone(),
                )),
                ..Default::default()
            }),
            _ => route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                    WeightedCluster {
                        clusters: weighted
                            .into_iter()
                            .map(|(name, w)| weighted_cluster::ClusterWeight {
                                name,
                                weight: Some(UInt32Value { value: w }),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
        };
        out.rules.push((ri, CheckedRule { matches, action }));
    }
    out
}

fn resolve_backend(
    ix: &Index,
    route: &ResourceKey,
    b: &HttpBackendRef,
) -> Result<(String, Vec<EndpointAddr>), (&'static str, String)> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("{group}/{kind} is not a supported backend kind (Service)"),
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(&route.namespace);
    if ns != route.namespace {
        return Err((
            "RefNotPermitted",
            format!(
                "backendRef {ns}/{} is in another namespace and no ReferenceGrant permits it",
                b.name
            ),
        ));
    }
    let svc_key = ResourceKey::new(&route.cluster, Kind::Service, ns, &b.name);
    let Some(svc) = ix.service(&svc_key) else {
        return Err((
            "BackendNotFound",
            format!("service {ns}/{} not found", b.name),
        ));
    };
    let Some(port) = b.port else {
        return Err((
            "PortNotSpecified",
            "a valid port number corresponding to a port on the Service must be specified"
                .to_string(),
        ));
    };
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    let Some(sp) = ports.and_then(|ps| ps.iter().find(|p| p.port == port)) else {
        return Err((
            "BackendNotFound",
            format!("port {port} not found on service {ns}/{}", b.name),
        ));
    };
    let name = format!("{ns}/{}/{port}", b.name);
    Ok((name, ix.endpoints(&svc_key, sp)))
}

fn rule_matches(rule: &HttpRouteRule) -> Result<Vec<RouteMatch>, String> {
    if rule.matches.is_empty() {
        return Ok(vec![RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }]);
    }
    rule.matches.iter().map(route_match_of).collect()
}

fn regex(value: &str) -> Result<RegexMatcher, String> {
    // Envoy evaluates RE2. The `regex` crate accepts the same syntax (both guarantee linear
    // time and reject backreferences/lookaround), so a pattern it rejects would be NACKed.
    regex::Regex::new(value)
        .map_err(|e| format!("regex {value:?} is invalid: {}", first_line(&e.to_string())))?;
    Ok(RegexMatcher {
        regex: value.to_string(),
        engine_type: None,
    })
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

fn string_match(type_: Option<&str>, value: &str) -> Result<StringMatcher, String> {
    let pattern = match type_.unwrap_or("Exact") {
        "Exact" => string_matcher::MatchPattern::Exact(value.to_string()),
        "RegularExpression" => string_matcher::MatchPattern::SafeRegex(regex(value)?),
        other => return Err(format!("match type {other:?} is not supported")),
    };
    Ok(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

fn route_match_of(m: &HttpRouteMatch) -> Result<RouteMatch, String> {
    let path = m.path.as_ref();
    let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
    let path_specifier = match path
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix")
    {
        "Exact" => route_match::PathSpecifier::Path(value.to_string()),
        "PathPrefix" => {
            if !value.starts_with('/') {
                return Err(format!("path {value:?} must start with '/'"));
            }
            let trimmed = value.trim_end_matches('/');
            if trimmed.is_empty() {
                route_match::PathSpecifier::Prefix("/".into())
            } else {
                route_match::PathSpecifier::PathSeparatedPrefix(trimmed.to_string())
            }
        }
        "RegularExpression" => route_match::PathSpecifier::SafeRegex(regex(value)?),
        other => return Err(format!("path match type {other:?} is not supported")),
    };
    let mut headers = Vec::new();
    for h in &m.headers {
        headers.push(HeaderMatcher {
            name: h.name.to_ascii_lowercase(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_match(h.type_.as_deref(), &h.value)?,
            )),
            ..Default::default()
        });
    }
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_match(None, method)?,
            )),
            ..Default::default()
        });
    }
    let mut query_parameters = Vec::new();
    for q in &m.query_params {
        query_parameters.push(QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_match(
                    q.type_.as_deref(),
                    &q.value,
                )?),
            ),
        });
    }
    Ok(RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters,
        ..Default::default()
    })
}

/// Gateway API route precedence, as a sort key (smaller sorts first = matched first):
/// exact path over regex over prefix; longer paths first; then method, more header matches,
/// more query matches; then route age/name (rank) and rule/match order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PrecedenceKey {
    path_kind: u8,
    neg_path_len: i64,
    no_method: bool,
    neg_headers: i64,
    neg_queries: i64,
    rank: usize,
    rule: usize,
    matched: usize,
}

impl PrecedenceKey {
    fn new(m: Option<&HttpRouteMatch>, rank: usize, rule: usize, matched: usize) -> Self {
        let path = m.and_then(|m| m.path.as_ref());
        let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
        let path_kind = match path
            .and_then(|p| p.type_.as_deref())
            .unwrap_or("PathPrefix")
        {
            "Exact" => 0,
            "RegularExpression" => 1,
            _ => 2,
        };
        Self {
            path_kind,
            neg_path_len: -(value.trim_end_matches('/').len() as i64),
            no_method: m.is_none_or(|m| m.method.is_none()),
            neg_headers: -(m.map_or(0, |m| m.headers.len()) as i64),
            neg_queries: -(m.map_or(0, |m| m.query_params.len()) as i64),
            rank,
            rule,
            matched,
        }
    }
}
