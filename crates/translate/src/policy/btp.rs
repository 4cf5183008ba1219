//! BackendTrafficPolicy attachment (Envoy Gateway's `ProcessBackendTrafficPolicies`): a
//! policy targets Gateways (or one listener with `sectionName`) and routes (HTTPRoute,
//! GRPCRoute, TCPRoute, UDPRoute, TLSRoute; or one rule with `sectionName`) of its namespace.
//! The most specific target wins: route rule > route > gateway listener > gateway. Within a
//! level the oldest policy wins and later ones are `Conflicted`; a policy displaced by more
//! specific ones is `Overridden` there; a route policy with `mergeType` is `Merged` into the
//! closest parent policy, which then says so.

use super::status::{AncestorRef, PolicyStatus};
use super::{invalid_duration, is_kind, policies_in, Target};
use crate::index::Index;
use flotilla_model::gateway::{Gateway, ParentReference};
use flotilla_model::{Kind, Object, ResourceKey, GATEWAY_GROUP};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The route kinds a BackendTrafficPolicy may target.
pub(crate) const ROUTE_KINDS: [Kind; 5] = [
    Kind::HTTPRoute,
    Kind::GRPCRoute,
    Kind::TCPRoute,
    Kind::UDPRoute,
    Kind::TLSRoute,
];

/// Which BackendTrafficPolicy applies where, for one cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BtpAttachment {
    /// (route, rule name) -> the policy attached to that rule.
    rules: BTreeMap<(ResourceKey, String), ResourceKey>,
    /// route -> the policy attached to the whole route.
    routes: BTreeMap<ResourceKey, ResourceKey>,
    /// (gateway, listener name) -> the policy attached to that listener.
    listeners: BTreeMap<(ResourceKey, String), ResourceKey>,
    /// gateway -> the policy attached to the whole Gateway.
    gateways: BTreeMap<ResourceKey, ResourceKey>,
}

impl BtpAttachment {
    /// The policy that configures rule `rule` (its name, if it has one) of `route` as served
    /// by listener `listener` of gateway `gw`: the most specific attached policy.
    // The next step (translating the policies' fields) calls this; until then only tests do.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn for_route_rule(
        &self,
        route: &ResourceKey,
        rule: Option<&str>,
        gw: &ResourceKey,
        listener: &str,
    ) -> Option<&ResourceKey> {
        rule.and_then(|r| self.rules.get(&(route.clone(), r.to_string())))
            .or_else(|| self.routes.get(route))
            .or_else(|| self.listeners.get(&(gw.clone(), listener.to_string())))
            .or_else(|| self.gateways.get(gw))
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

/// Why a policy's fields cannot be translated, if that is cheap to tell (the durations Envoy
/// Gateway parses while translating; the other fields are checked when translated).
pub(crate) fn invalid(spec: &Value) -> Option<String> {
    invalid_duration(
        spec,
        &[
            ("/timeout/tcp/connectTimeout", "ConnectTimeout", "Timeout"),
            (
                "/timeout/http/connectionIdleTimeout",
                "ConnectionIdleTimeout",
                "Timeout",
            ),
            (
                "/timeout/http/maxConnectionDuration",
                "MaxConnectionDuration",
                "Timeout",
            ),
            ("/timeout/http/requestTimeout", "RequestTimeout", "Timeout"),
        ],
    )
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
    let mut kinds = vec![Kind::Gateway];
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
    let invalid: Vec<Option<String>> = policies.iter().map(|p| invalid(p.spec)).collect();
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
                    if pr.group.as_deref().unwrap_or(GATEWAY_GROUP) != GATEWAY_GROUP
                        || pr.kind.as_deref().unwrap_or("Gateway") != "Gateway"
                    {
                        continue;
                    }
                    let ns = pr.namespace.as_deref().unwrap_or(&rk.namespace);
                    let Some((gk, _)) = gw_by_nn.get(&(ns, pr.name.as_str())) else {
                        continue;
                    };
                    let a = AncestorRef::gateway(ns, &pr.name, pr.section_name.as_deref());
                    if !ancestors.contains(&a) {
                        ancestors.push(a);
                    }
                    parents_gw.push(((*gk).clone(), pr.section_name.clone()));
                    route_children
                        .entry(((*gk).clone(), pr.section_name.clone()))
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
                    merge_into_parents(ix, &rk, &parents_gw, &gw_policy, &mut merged, st);
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

    // Passes 3 and 4: policies naming a listener, then a whole Gateway.
    for listener_pass in [true, false] {
        for (((p, ts), st), bad) in policies
            .iter()
            .zip(&targets)
            .zip(statuses.iter_mut())
            .zip(&invalid)
        {
            for t in ts.iter().filter(|t| is_kind(t, "Gateway")) {
                if t.section.is_some() != listener_pass {
                    continue;
                }
                let ns = p.key.namespace.as_str();
                let Some((gk, g)) = gw_by_nn.get(&(ns, t.name.as_str())) else {
                    continue;
                };
                let gk = (*gk).clone();
                let a = AncestorRef::gateway(ns, &t.name, t.section.as_deref());
                let err = match &t.section {
                    Some(s) if !g.spec.listeners.iter().any(|l| l.name == *s) => Some((
                        "TargetNotFound",
                        format!("No section name {s} found for Gateway {ns}/{}", t.name),
                    )),
                    Some(s) => {
                        if !claim(
                            &mut out.attachment.listeners,
                            (gk.clone(), s.clone()),
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
                        if !claim(&mut out.attachment.gateways, gk.clone(), p.key) {
                            Some(("Conflicted", format!(
                                "Unable to target Gateway {}, another BackendTrafficPolicy has already attached to it",
                                t.name)))
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
                // What displaces this policy: listener policies (for a Gateway-wide one) and
                // route policies attached below it, less the routes merged into it.
                let scopes: Vec<Option<String>> = match &t.section {
                    Some(s) => vec![Some(s.clone())],
                    None => std::iter::once(None)
                        .chain(g.spec.listeners.iter().map(|l| Some(l.name.clone())))
                        .collect(),
                };
                let merged_here: BTreeSet<String> = merged
                    .get(&(gk.clone(), t.section.clone()))
                    .cloned()
                    .unwrap_or_default();
                let routes: BTreeSet<String> = scopes
                    .iter()
                    .filter_map(|s| route_children.get(&(gk.clone(), s.clone())))
                    .flatten()
                    .filter(|r| !merged_here.contains(*r))
                    .cloned()
                    .collect();
                let listeners: Vec<String> = match &t.section {
                    Some(_) => vec![],
                    None => g
                        .spec
                        .listeners
                        .iter()
                        .filter(|l| {
                            out.attachment
                                .listeners
                                .contains_key(&(gk.clone(), l.name.clone()))
                        })
                        .map(|l| format!("{ns}/{}/{}", t.name, l.name))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                };
                if !merged_here.is_empty() {
                    let m: Vec<&str> = merged_here.iter().map(String::as_str).collect();
                    st.set(&a, "Merged", true, "Merged", &format!(
                        "This policy is being merged by other backendTrafficPolicies for these routes: [{}]",
                        m.join(" ")));
                }
                let mut parts = Vec::new();
                if !listeners.is_empty() {
                    parts.push(format!(
                        "these gateway listeners: [{}]",
                        listeners.join(" ")
                    ));
                }
                if !routes.is_empty() {
                    let r: Vec<&str> = routes.iter().map(String::as_str).collect();
                    parts.push(format!("these routes: [{}]", r.join(" ")));
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
fn merge_into_parents(
    ix: &Index,
    route: &ResourceKey,
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
            merged
                .entry(scope)
                .or_default()
                .insert(format!("{}/{}", route.namespace, route.name));
            let a = AncestorRef::gateway(&gk.namespace, &gk.name, Some(l));
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
