//! BackendTrafficPolicy attachment (Envoy Gateway's `ProcessBackendTrafficPolicies`): a
//! policy targets Gateways (or one listener with `sectionName`) and routes (HTTPRoute,
//! GRPCRoute, TCPRoute, UDPRoute, TLSRoute; or one rule with `sectionName`) of its namespace.
//! The most specific target wins: route rule > route > gateway listener > gateway. Within a
//! level the oldest policy wins and later ones are `Conflicted`; a policy displaced by more
//! specific ones is `Overridden` there; a route policy with `mergeType` is `Merged` into the
//! closest parent policy, which then says so.

use super::status::{AncestorRef, PolicyStatus};
use super::{is_kind, policies_in, FieldErrors, Target, ROUTE_KINDS};
use crate::index::Index;
use crate::listener::listener_sets;
use flotilla_model::gateway::{Gateway, ParentReference};
use flotilla_model::{Kind, Object, ResourceKey, GATEWAY_GROUP};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Which BackendTrafficPolicy applies where, for one cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BtpAttachment {
    /// (route, rule name) -> the policy attached to that rule.
    rules: BTreeMap<(ResourceKey, String), ResourceKey>,
    /// route -> the policy attached to the whole route.
    routes: BTreeMap<ResourceKey, ResourceKey>,
    /// (Gateway or ListenerSet, listener name) -> the policy attached to that listener.
    listeners: BTreeMap<(ResourceKey, String), ResourceKey>,
    /// Gateway or ListenerSet -> the policy attached to all of it.
    owners: BTreeMap<ResourceKey, ResourceKey>,
}

impl BtpAttachment {
    /// The policy that configures rule `rule` (its name, if it has one) of `route` as served
    /// by listener `listener` of gateway `gw` (of its ListenerSet `set`, if the listener is
    /// one's): the most specific attached policy. Envoy Gateway's `LookupBTPRoutingType`
    /// order: rule, route, ListenerSet listener, ListenerSet, Gateway listener (for the
    /// Gateway's own listeners only: the two are siblings), Gateway.
    pub fn for_route_rule(
        &self,
        route: &ResourceKey,
        rule: Option<&str>,
        gw: &ResourceKey,
        set: Option<&ResourceKey>,
        listener: &str,
    ) -> Option<&ResourceKey> {
        let in_listener = |owner: &ResourceKey| {
            self.listeners
                .get(&(owner.clone(), listener.to_string()))
                .or_else(|| match owner.kind {
                    Kind::ListenerSet => self.owners.get(owner),
                    _ => None,
                })
        };
        rule.and_then(|r| self.rules.get(&(route.clone(), r.to_string())))
            .or_else(|| self.routes.get(route))
            .or_else(|| in_listener(set.unwrap_or(gw)))
            .or_else(|| self.owners.get(gw))
    }
}

impl BtpAttachment {
    /// Whether `policy` is attached to rule `rule` of `route` or to the whole route (not to a
    /// gateway or listener).
    pub fn is_route_level(
        &self,
        policy: &ResourceKey,
        route: &ResourceKey,
        rule: Option<&str>,
    ) -> bool {
        rule.and_then(|r| self.rules.get(&(route.clone(), r.to_string())))
            .or_else(|| self.routes.get(route))
            == Some(policy)
    }

    /// The policy a route policy with `mergeType` merges into on listener `listener` of `gw`:
    /// the listener's, else the Gateway's (Envoy Gateway merges into the closest one).
    pub fn merge_parent(
        &self,
        gw: &ResourceKey,
        set: Option<&ResourceKey>,
        listener: &str,
    ) -> Option<&ResourceKey> {
        let owner = set.unwrap_or(gw);
        self.listeners
            .get(&(owner.clone(), listener.to_string()))
            .or_else(|| set.and_then(|s| self.owners.get(s)))
            .or_else(|| self.owners.get(gw))
    }
}

/// `patch` merged into `base` as a JSON merge patch (RFC 7386): objects merge key by key, a
/// null removes, anything else replaces. Envoy Gateway's StrategicMerge of a
/// BackendTrafficPolicy reads the same: none of its lists declares a merge strategy, so lists
/// are replaced.
pub(crate) fn merge_patch(base: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *base = patch.clone();
        return;
    };
    if !base.is_object() {
        *base = Value::Object(Default::default());
    }
    if let Value::Object(b) = base {
        for (k, v) in p {
            if v.is_null() {
                b.remove(k);
            } else {
                merge_patch(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Everything [`attach`] decides.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BtpResult {
    pub attachment: BtpAttachment,
    /// The status of every BackendTrafficPolicy of the cluster.
    pub statuses: BTreeMap<ResourceKey, Value>,
}

/// A route as a policy target: its parents and rule names.
struct RouteInfo<'a> {
    parents: &'a [ParentReference],
    rules: Vec<Option<&'a str>>,
}

fn route_info<'a>(o: &'a Object) -> Option<RouteInfo<'a>> {
    let (parents, rules): (&[ParentReference], Vec<Option<&str>>) = match o {
        Object::HTTPRoute(r) => (
            &r.spec.parent_refs,
            r.spec.rules.iter().map(|x| x.name.as_deref()).collect(),
        ),
        Object::GRPCRoute(r) => (
            &r.spec.parent_refs,
            r.spec.rules.iter().map(|x| x.name.as_deref()).collect(),
        ),
        Object::TCPRoute(r) => (
            &r.spec.parent_refs,
            r.spec.rules.iter().map(|x| x.name.as_deref()).collect(),
        ),
        Object::UDPRoute(r) => (
            &r.spec.parent_refs,
            r.spec.rules.iter().map(|x| x.name.as_deref()).collect(),
        ),
        Object::TLSRoute(r) => (
            &r.spec.parent_refs,
            r.spec.rules.iter().map(|x| x.name.as_deref()).collect(),
        ),
        _ => return None,
    };
    Some(RouteInfo { parents, rules })
}

fn route_kind(t: &Target) -> Option<Kind> {
    if t.group != GATEWAY_GROUP {
        return None;
    }
    ROUTE_KINDS.into_iter().find(|k| k.as_str() == t.kind)
}

/// Why a policy's fields cannot be translated, if that is cheap to tell: Envoy Gateway's
/// checks of durations and numbers while translating (the other fields are checked when they
/// are translated).
pub(crate) fn invalid(spec: &Value, options: &crate::TranslateOptions) -> Option<String> {
    let mut e = FieldErrors::default();
    if let Err(m) = super::ratelimit::parse(spec, "", "", options.global_rate_limit_enabled()) {
        e.add("RateLimit", m);
    }
    if let Some(v) = spec.pointer("/connection/bufferLimit") {
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        match crate::values::parse_quantity(&text) {
            Some(q) if q.fract() != 0.0 => e.add(
                "BackendConnection",
                format!("invalid BufferLimit value {text}"),
            ),
            // Envoy Gateway prints the value in Kubernetes' canonical form (`1000G` as `1T`);
            // this prints it as written.
            Some(q) if !(0.0..=4_294_967_295.0).contains(&q) => e.add(
                "BackendConnection",
                format!("BufferLimit value {text} is out of range"),
            ),
            Some(_) => {}
            None => e.add(
                "BackendConnection",
                format!("invalid BufferLimit value {text}"),
            ),
        }
    }
    e.quantity_range(
        spec,
        "RequestBuffer",
        "/requestBuffer/limit",
        "limit",
        (0.0, 4_294_967_295.0),
    );
    for (pointer, name) in [
        ("/circuitBreaker/maxConnections", "MaxConnections"),
        ("/circuitBreaker/maxPendingRequests", "MaxPendingRequests"),
        ("/circuitBreaker/maxParallelRequests", "MaxParallelRequests"),
        ("/circuitBreaker/maxParallelRetries", "MaxParallelRetries"),
        (
            "/circuitBreaker/maxRequestsPerConnection",
            "MaxRequestsPerConnection",
        ),
    ] {
        if let Some(n) = spec.pointer(pointer).and_then(Value::as_i64) {
            if u32::try_from(n).is_err() {
                e.add("CircuitBreaker", format!("invalid {name} value {n}"));
            }
        }
    }
    if let Some(n) = spec
        .pointer("/loadBalancer/consistentHash/tableSize")
        .and_then(Value::as_u64)
    {
        // Envoy's Maglev table size: a prime no larger than 5000011.
        if n > 5_000_011 || !is_prime(n) {
            e.add(
                "LoadBalancer",
                format!("ConsistentHash: invalid TableSize value {n}"),
            );
        }
    }
    let backoff = |f: &str| {
        spec.pointer(&format!("/retry/perRetry/backoff/{f}"))
            .and_then(Value::as_str)
            .and_then(|v| crate::values::parse_go_duration(v).ok())
    };
    if let Some(base) = backoff("baseInterval") {
        if base.is_zero() {
            e.add("Retry", "baseInterval cannot be set to 0s".into());
        } else if backoff("maxInterval").is_some_and(|max| max < base) {
            e.add(
                "Retry",
                "maxInterval cannot be less than baseInterval".into(),
            );
        }
    }
    e.durations(
        spec,
        "Timeout",
        &[
            ("/timeout/tcp/connectTimeout", "ConnectTimeout"),
            (
                "/timeout/http/connectionIdleTimeout",
                "ConnectionIdleTimeout",
            ),
            (
                "/timeout/http/maxConnectionDuration",
                "MaxConnectionDuration",
            ),
            ("/timeout/http/requestTimeout", "RequestTimeout"),
        ],
    );
    e.message()
}

/// Why policy `key` cannot be translated ([`invalid`], then what translating its fields finds),
/// or `None`.
pub(crate) fn check(ix: &Index, key: &ResourceKey, spec: &Value) -> Option<String> {
    invalid(spec, &ix.options).or_else(|| super::backend::translate(ix, key, spec).err()?.message())
}

/// The policy translated, or `None` when it is invalid (its status says why).
pub(crate) fn translate(
    ix: &Index,
    key: &ResourceKey,
    spec: &Value,
) -> Option<super::backend::BackendPolicy> {
    if invalid(spec, &ix.options).is_some() {
        return None;
    }
    super::backend::translate(ix, key, spec).ok()
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Attaches every BackendTrafficPolicy of `cluster` to the gateways `gateways` (those this
/// controller translates) and their routes, and computes their statuses.
pub(crate) fn attach(
    ix: &Index,
    cluster: &str,
    gateways: &[(&ResourceKey, &Gateway)],
    controller: &str,
) -> BtpResult {
    let policies = policies_in(ix, cluster, Kind::BackendTrafficPolicy);
    let gw_by_nn: BTreeMap<(&str, &str), (&ResourceKey, &Gateway)> = gateways
        .iter()
        .map(|(k, g)| ((k.namespace.as_str(), k.name.as_str()), (*k, *g)))
        .collect();
    // Attachment points: Gateways and their accepted ListenerSets, by (kind, namespace, name).
    let mut owners: BTreeMap<(Kind, String, String), Owner> = BTreeMap::new();
    for (k, g) in gateways {
        let sets: Vec<_> = listener_sets(ix, k, g)
            .into_iter()
            .filter(|s| s.allowed)
            .collect();
        for set in &sets {
            owners.insert(
                (
                    Kind::ListenerSet,
                    set.key.namespace.clone(),
                    set.key.name.clone(),
                ),
                Owner {
                    key: set.key.clone(),
                    listeners: set
                        .ls
                        .spec
                        .listeners
                        .iter()
                        .map(|l| l.name.clone())
                        .collect(),
                    sets: vec![],
                },
            );
        }
        owners.insert(
            (Kind::Gateway, k.namespace.clone(), k.name.clone()),
            Owner {
                key: (*k).clone(),
                listeners: g.spec.listeners.iter().map(|l| l.name.clone()).collect(),
                sets: sets.into_iter().map(|s| s.key).collect(),
            },
        );
    }
    let mut kinds = vec![Kind::Gateway, Kind::ListenerSet];
    kinds.extend(ROUTE_KINDS);
    let targets: Vec<Vec<Target>> = policies
        .iter()
        .map(|p| p.targets.resolve(ix, cluster, &p.key.namespace, &kinds))
        .collect();
    let mut statuses: Vec<PolicyStatus> = policies
        .iter()
        .map(|p| PolicyStatus::new(p.generation))
        .collect();
    let mut out = BtpResult::default();
    let invalid: Vec<Option<String>> = policies.iter().map(|p| check(ix, p.key, p.spec)).collect();
    // The first policy naming each Gateway / listener (before conflicts), for merges.
    let mut gw_policy: BTreeMap<(ResourceKey, Option<String>), ResourceKey> = BTreeMap::new();
    for (p, ts) in policies.iter().zip(&targets) {
        for t in ts.iter().filter(|t| is_kind(t, "Gateway")) {
            let Some((k, g)) = gw_by_nn.get(&(p.key.namespace.as_str(), t.name.as_str())) else {
                continue;
            };
            if let Some(s) = &t.section {
                if !g.spec.listeners.iter().any(|l| l.name == *s) {
                    continue;
                }
            }
            gw_policy
                .entry(((*k).clone(), t.section.clone()))
                .or_insert_with(|| p.key.clone());
        }
    }
    // Scopes displaced by more specific policies, and routes merged into a parent policy:
    // (gateway, listener or None) -> "ns/name" of routes, and gateway -> its listeners.
    let mut route_children: BTreeMap<(ResourceKey, Option<String>), BTreeSet<String>> =
        BTreeMap::new();
    let mut merged: BTreeMap<(ResourceKey, Option<String>), BTreeSet<String>> = BTreeMap::new();
    // route -> rule names with their own policy.
    let mut rule_children: BTreeMap<ResourceKey, BTreeSet<String>> = BTreeMap::new();

    // Passes 1 and 2: policies naming a route rule, then a whole route.
    for rule_pass in [true, false] {
        for (((p, ts), st), bad) in policies
            .iter()
            .zip(&targets)
            .zip(statuses.iter_mut())
            .zip(&invalid)
        {
            for t in ts {
                let Some(kind) = route_kind(t) else { continue };
                if t.section.is_some() != rule_pass {
                    continue;
                }
                let rk = ResourceKey::new(cluster, kind, &p.key.namespace, &t.name);
                let Some(info) = ix.resources.get(&rk).and_then(|r| route_info(&r.object)) else {
                    continue;
                };
                let mut ancestors = Vec::new();
                let mut parents_gw: Vec<(ResourceKey, Option<String>)> = Vec::new();
                for pr in info.parents {
                    let kind = match pr.kind.as_deref().unwrap_or("Gateway") {
                        "Gateway" => Kind::Gateway,
                        "ListenerSet" => Kind::ListenerSet,
                        _ => continue,
                    };
                    if pr.group.as_deref().unwrap_or(GATEWAY_GROUP) != GATEWAY_GROUP {
                        continue;
                    }
                    let ns = pr.namespace.as_deref().unwrap_or(&rk.namespace);
                    let Some(owner) = owners.get(&(kind, ns.to_string(), pr.name.clone())) else {
                        continue;
                    };
                    let a = AncestorRef {
                        kind: kind.as_str(),
                        namespace: ns.to_string(),
                        name: pr.name.clone(),
                        section: pr.section_name.clone(),
                    };
                    if !ancestors.contains(&a) {
                        ancestors.push(a);
                    }
                    if kind == Kind::Gateway {
                        parents_gw.push((owner.key.clone(), pr.section_name.clone()));
                    }
                    route_children
                        .entry((owner.key.clone(), pr.section_name.clone()))
                        .or_default()
                        .insert(format!("{}/{}", rk.namespace, rk.name));
                }
                let err = match &t.section {
                    Some(rule) if !info.rules.contains(&Some(rule.as_str())) => Some((
                        "TargetNotFound",
                        format!(
                            "No section name {rule} found for {} {}/{}",
                            t.kind, rk.namespace, rk.name
                        ),
                    )),
                    Some(rule) => {
                        if !claim(&mut out.attachment.rules, (rk.clone(), rule.clone()), p.key) {
                            Some(("Conflicted", format!(
                                "Unable to target RouteRule {}/{rule}, another BackendTrafficPolicy has already attached to it",
                                rk.name)))
                        } else {
                            rule_children
                                .entry(rk.clone())
                                .or_default()
                                .insert(rule.clone());
                            None
                        }
                    }
                    None => {
                        if !claim(&mut out.attachment.routes, rk.clone(), p.key) {
                            Some(("Conflicted", format!(
                                "Unable to target {} {}, another BackendTrafficPolicy has already attached to it",
                                t.kind, rk.name)))
                        } else {
                            None
                        }
                    }
                };
                if let Some((reason, msg)) = err {
                    for a in &ancestors {
                        st.reject(a, reason, &msg);
                    }
                    continue;
                }
                if let Some(msg) = bad {
                    for a in &ancestors {
                        st.reject(a, "Invalid", msg);
                    }
                } else if p.spec.get("mergeType").is_some_and(|m| !m.is_null()) {
                    merge_into_parents(ix, &rk, p.spec, &parents_gw, &gw_policy, &mut merged, st);
                }
                for a in &ancestors {
                    st.accept_if_unset(a);
                    if p.targets.deprecated_target_ref {
                        st.warn_deprecated(a, &[("spec.targetRef", "spec.targetRefs")]);
                    }
                }
                if t.section.is_none() {
                    if let Some(rules) = rule_children.get(&rk) {
                        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
                        for a in &ancestors {
                            st.set(a, "Overridden", true, "Overridden", &format!(
                                "This policy is being overridden by other backendTrafficPolicy for these route rules: [{}]",
                                rules.join(" ")));
                        }
                    }
                }
            }
        }
    }

    // Passes 3 to 6: policies naming a ListenerSet listener, a whole ListenerSet, a Gateway
    // listener, a whole Gateway.
    for (kind, listener_pass) in [
        (Kind::ListenerSet, true),
        (Kind::ListenerSet, false),
        (Kind::Gateway, true),
        (Kind::Gateway, false),
    ] {
        for (((p, ts), st), bad) in policies
            .iter()
            .zip(&targets)
            .zip(statuses.iter_mut())
            .zip(&invalid)
        {
            for t in ts.iter().filter(|t| is_kind(t, kind.as_str())) {
                if t.section.is_some() != listener_pass {
                    continue;
                }
                let ns = p.key.namespace.as_str();
                let Some(owner) = owners.get(&(kind, ns.to_string(), t.name.clone())) else {
                    continue;
                };
                let ok = owner.key.clone();
                let a = AncestorRef {
                    kind: kind.as_str(),
                    namespace: ns.to_string(),
                    name: t.name.clone(),
                    section: t.section.clone(),
                };
                let err = match &t.section {
                    Some(s) if !owner.listeners.contains(s) => Some((
                        "TargetNotFound",
                        format!(
                            "No section name {s} found for {} {ns}/{}",
                            kind.as_str(),
                            t.name
                        ),
                    )),
                    Some(s) => {
                        if !claim(
                            &mut out.attachment.listeners,
                            (ok.clone(), s.clone()),
                            p.key,
                        ) {
                            Some(("Conflicted", format!(
                                "Unable to target Listener {}/{s}, another BackendTrafficPolicy has already attached to it",
                                t.name)))
                        } else {
                            None
                        }
                    }
                    None => {
                        if !claim(&mut out.attachment.owners, ok.clone(), p.key) {
                            Some(("Conflicted", format!(
                                "Unable to target {} {}, another BackendTrafficPolicy has already attached to it",
                                kind.as_str(), t.name)))
                        } else {
                            None
                        }
                    }
                };
                if let Some((reason, msg)) = err {
                    st.reject(&a, reason, &msg);
                    continue;
                }
                if let Some(msg) = bad {
                    st.reject(&a, "Invalid", msg);
                }
                st.accept_if_unset(&a);
                if p.targets.deprecated_target_ref {
                    st.warn_deprecated(&a, &[("spec.targetRef", "spec.targetRefs")]);
                }
                // What displaces this policy: narrower policies below it, and the policies of
                // routes attached below it (less the routes merged into it).
                let mut scopes: Vec<(ResourceKey, Option<String>)> = match &t.section {
                    Some(s) => vec![(ok.clone(), Some(s.clone()))],
                    None => std::iter::once(None)
                        .chain(owner.listeners.iter().cloned().map(Some))
                        .map(|s| (ok.clone(), s))
                        .collect(),
                };
                if kind == Kind::ListenerSet && t.section.is_some() {
                    // Envoy Gateway counts the ListenerSet's section-less routes here too.
                    scopes.push((ok.clone(), None));
                }
                let mut gateway_listeners = BTreeSet::new();
                let mut sets = BTreeSet::new();
                let mut set_listeners = BTreeSet::new();
                if t.section.is_none() {
                    for l in &owner.listeners {
                        if out
                            .attachment
                            .listeners
                            .contains_key(&(ok.clone(), l.clone()))
                        {
                            let name = format!("{ns}/{}/{l}", t.name);
                            match kind {
                                Kind::ListenerSet => set_listeners.insert(name),
                                _ => gateway_listeners.insert(name),
                            };
                        }
                    }
                    for set in &owner.sets {
                        if out.attachment.owners.contains_key(set) {
                            sets.insert(format!("{}/{}", set.namespace, set.name));
                        }
                        if let Some(so) = owners.get(&(
                            Kind::ListenerSet,
                            set.namespace.clone(),
                            set.name.clone(),
                        )) {
                            for l in &so.listeners {
                                if out
                                    .attachment
                                    .listeners
                                    .contains_key(&(set.clone(), l.clone()))
                                {
                                    set_listeners
                                        .insert(format!("{}/{}/{l}", set.namespace, set.name));
                                }
                                scopes.push((set.clone(), Some(l.clone())));
                            }
                            scopes.push((set.clone(), None));
                        }
                    }
                }
                let merged_here: BTreeSet<String> = merged
                    .get(&(ok.clone(), t.section.clone()))
                    .cloned()
                    .unwrap_or_default();
                let routes: BTreeSet<String> = scopes
                    .iter()
                    .filter_map(|s| route_children.get(s))
                    .flatten()
                    .filter(|r| !merged_here.contains(*r))
                    .cloned()
                    .collect();
                if !merged_here.is_empty() {
                    st.set(&a, "Merged", true, "Merged", &format!(
                        "This policy is being merged by other backendTrafficPolicies for these routes: [{}]",
                        join(&merged_here)));
                }
                let mut parts = Vec::new();
                for (what, names) in [
                    ("gateway listeners", &gateway_listeners),
                    ("listenersets", &sets),
                    ("listenerset listeners", &set_listeners),
                    ("routes", &routes),
                ] {
                    if !names.is_empty() {
                        parts.push(format!("these {what}: [{}]", join(names)));
                    }
                }
                if !parts.is_empty() {
                    st.set(
                        &a,
                        "Overridden",
                        true,
                        "Overridden",
                        &format!(
                        "This policy is being overridden by other backendTrafficPolicies for {}",
                        parts.join(" and ")),
                    );
                }
            }
        }
    }
    for (p, mut st) in policies.iter().zip(statuses) {
        st.truncate();
        out.statuses.insert(p.key.clone(), st.to_json(controller));
    }
    out
}

/// Names joined by spaces, as Go prints a sorted `[]string` inside `[...]`.
fn join(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// An attachment point: a Gateway or one of its accepted ListenerSets.
struct Owner {
    key: ResourceKey,
    listeners: Vec<String>,
    /// For a Gateway, its ListenerSets.
    sets: Vec<ResourceKey>,
}

/// Attaches `policy` at `slot` unless an earlier policy holds it; whether it did.
fn claim<K: Ord>(map: &mut BTreeMap<K, ResourceKey>, slot: K, policy: &ResourceKey) -> bool {
    match map.entry(slot) {
        std::collections::btree_map::Entry::Occupied(_) => false,
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(policy.clone());
            true
        }
    }
}

/// A route policy with `mergeType` merges into the closest policy of each listener its route
/// attaches to (the listener's, else the Gateway's): the route policy reports `Merged` on that
/// listener, and the parent policy lists the route.
#[allow(clippy::too_many_arguments)]
fn merge_into_parents(
    ix: &Index,
    route: &ResourceKey,
    spec: &Value,
    parents: &[(ResourceKey, Option<String>)],
    gw_policy: &BTreeMap<(ResourceKey, Option<String>), ResourceKey>,
    merged: &mut BTreeMap<(ResourceKey, Option<String>), BTreeSet<String>>,
    st: &mut PolicyStatus,
) {
    for (gk, section) in parents {
        let Some(Object::Gateway(g)) = ix.resources.get(gk).map(|r| &r.object) else {
            continue;
        };
        let listeners: Vec<&str> = match section {
            Some(s) => vec![s.as_str()],
            None => g.spec.listeners.iter().map(|l| l.name.as_str()).collect(),
        };
        for l in listeners {
            let listener_scope = (gk.clone(), Some(l.to_string()));
            let gateway_scope = (gk.clone(), None);
            let (scope, parent) = match gw_policy.get(&listener_scope) {
                Some(pp) => (listener_scope, pp),
                None => match gw_policy.get(&gateway_scope) {
                    Some(pp) => (gateway_scope, pp),
                    None => continue,
                },
            };
            let a = AncestorRef::gateway(&gk.namespace, &gk.name, Some(l));
            // The merged policy must translate (Envoy Gateway checks it as the parent's, whose
            // namespace it keeps); if it does not, the route policy is invalid there and the
            // parent counts as overridden.
            if let Some(Object::Extension(_, o)) = ix.resources.get(parent).map(|r| &r.object) {
                let mut m = o.spec.clone();
                merge_patch(&mut m, spec);
                if let Some(err) = check(ix, parent, &m) {
                    st.reject(&a, "Invalid", &err);
                    continue;
                }
            }
            merged
                .entry(scope)
                .or_default()
                .insert(format!("{}/{}", route.namespace, route.name));
            st.set(
                &a,
                "Merged",
                true,
                "Merged",
                &format!("Merged with policy {}/{}", parent.namespace, parent.name),
            );
        }
    }
}
