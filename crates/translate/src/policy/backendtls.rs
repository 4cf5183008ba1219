//! BackendTLSPolicy attachment (gateway.networking.k8s.io): which policy applies to a backend
//! (a Service, a ServiceImport or an Envoy Gateway Backend, or one port of it named by
//! `sectionName`), which policies lose a target to an older one, and the ancestor status Envoy
//! Gateway writes on them. Targets are read with [`PolicyTargets`] and ordered with
//! [`policies_in_namespace`] (oldest first, as every policy kind); the status is built with
//! [`PolicyStatus`]. What an attached policy makes of the upstream TLS (CA, SNI, SANs) is
//! `crate::backendtls`'s.
//!
//! Envoy Gateway reports a BackendTLSPolicy at the parents of the routes whose backends use
//! it: gateway translation records them (`crate::gateway::gateway_tls_ancestors`), and the
//! statuses of a namespace's policies are built from those records ([`namespace_statuses`]).

use super::status::{Ancestor, PolicyStatus};
use super::{policies_in_namespace, PolicyRef, PolicyTargets, Target};
use crate::index::Index;
use flotilla_model::refs::BackendTlsPolicy;
use flotilla_model::{Kind, Object, ResourceKey};
use serde_json::Value;
use std::collections::BTreeMap;

/// The backend a backendRef names, as a BackendTLSPolicy target: group and kind as the
/// backendRef spells them, and the section (a Service/ServiceImport port's name, an Envoy
/// Gateway Backend's port number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsTarget {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub section: Option<String>,
}

impl TlsTarget {
    /// Whether a policy's target names this backend with exactly `section` (`None`: the
    /// whole backend).
    fn named_by(&self, t: &Target, section: Option<&str>) -> bool {
        t.group == self.group
            && t.kind == self.kind
            && t.name == self.name
            && t.section.as_deref() == section
    }
}

/// One BackendTLSPolicy with its precedence and targets.
pub(crate) struct TlsPolicy<'a> {
    pub key: &'a ResourceKey,
    pub policy: &'a BackendTlsPolicy,
    pub targets: PolicyTargets,
    pub generation: Option<i64>,
}

impl<'a> TlsPolicy<'a> {
    fn of(p: PolicyRef<'a>) -> Option<Self> {
        match p.object {
            Object::BackendTLSPolicy(policy) => Some(TlsPolicy {
                key: p.key,
                policy,
                targets: p.targets,
                generation: p.generation,
            }),
            _ => None,
        }
    }
}

/// The BackendTLSPolicies of one namespace in precedence order (a policy targets only
/// backends of its own namespace).
pub(crate) fn policies_of<'a>(ix: &'a Index, cluster: &str, ns: &str) -> Vec<TlsPolicy<'a>> {
    policies_in_namespace(ix, cluster, Kind::BackendTLSPolicy, ns)
        .into_iter()
        .filter_map(TlsPolicy::of)
        .collect()
}

/// The policy attached to `target`: the oldest policy naming the target's exact section,
/// else the oldest naming the whole backend (a sectioned policy is more specific, whatever
/// its age).
pub(crate) fn policy_for<'a>(
    ix: &'a Index,
    cluster: &str,
    target: &TlsTarget,
) -> Option<TlsPolicy<'a>> {
    let mut policies = policies_of(ix, cluster, &target.namespace);
    let names = |p: &TlsPolicy, section: Option<&str>| {
        p.targets.refs.iter().any(|t| target.named_by(t, section))
    };
    if let Some(section) = target.section.as_deref() {
        if let Some(i) = policies.iter().position(|p| names(p, Some(section))) {
            return Some(policies.swap_remove(i));
        }
    }
    policies.into_iter().find(|p| names(p, None))
}

/// The policies that lose a target to an older policy, with the winner (Envoy Gateway's
/// `ProcessBackendTLSPolicyStatus`, the Gateway API's conflict rule: the first policy, in
/// precedence order, to claim a group/kind/name/section target owns it; a policy is
/// Conflicted by the first of its targets that is already owned).
fn conflicts<'a>(policies: &[TlsPolicy<'a>]) -> BTreeMap<&'a ResourceKey, &'a ResourceKey> {
    let mut claimed: BTreeMap<(&str, &str, &str, &str), &ResourceKey> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for p in policies {
        for t in &p.targets.refs {
            let target = (
                t.group.as_str(),
                t.kind.as_str(),
                t.name.as_str(),
                t.section.as_deref().unwrap_or(""),
            );
            match claimed.get(&target) {
                // A policy naming one target twice does not conflict with itself.
                Some(owner) if *owner == p.key => {}
                Some(owner) => {
                    out.insert(p.key, *owner);
                    break;
                }
                None => {
                    claimed.insert(target, p.key);
                }
            }
        }
    }
    out
}

/// A BackendTLSPolicy's ancestor: the parentRef of a route whose backends use the policy,
/// as the route writes it (Envoy Gateway reports it so). Gateway translation records it as
/// the parentRef's JSON (`GatewayResult::policy_ancestors`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RouteParent(pub Value);

impl RouteParent {
    fn field(&self, f: &str) -> &str {
        self.0.get(f).and_then(Value::as_str).unwrap_or("")
    }
}

impl Ancestor for RouteParent {
    fn namespace(&self) -> &str {
        self.field("namespace")
    }

    fn name(&self) -> &str {
        self.field("name")
    }

    fn to_json(&self) -> Value {
        self.0.clone()
    }
}

/// The status of every BackendTLSPolicy of (cluster, namespace), from the ancestors gateway
/// translation recorded (`ancestors`: policy → parentRefs, in order). `None`: the policy
/// reached no ancestor (no status).
pub(crate) fn namespace_statuses(
    ix: &Index,
    cluster: &str,
    ns: &str,
    ancestors: &dyn Fn(&ResourceKey) -> Vec<Value>,
    controller: &str,
) -> Vec<(ResourceKey, Option<Value>)> {
    let policies = policies_of(ix, cluster, ns);
    let conflicted = conflicts(&policies);
    let mut out = Vec::new();
    for p in &policies {
        let mut status: PolicyStatus<RouteParent> = PolicyStatus::new(p.generation);
        let checked = ix.tls_bundle(cluster, ns, p.policy);
        for a in ancestors(p.key).into_iter().map(RouteParent) {
            match &checked {
                Ok(_) => {
                    status.set(
                        &a,
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "Resolved all the Object references.",
                    );
                    status.accept_if_unset(&a);
                }
                Err(e) => {
                    let msg = crate::status::condition_message(&e.message);
                    status.reject(&a, "NoValidCACertificate", &msg);
                    let reason = if e.invalid_kind {
                        "InvalidKind"
                    } else {
                        "InvalidCACertificateRef"
                    };
                    status.set(&a, "ResolvedRefs", false, reason, &msg);
                }
            }
        }
        // A policy that lost its target is reported where the winner is.
        if let Some(winner) = conflicted.get(p.key) {
            let msg = format!(
                "Policy conflicts with BackendTLSPolicy {}/{}.",
                winner.namespace, winner.name
            );
            for a in ancestors(winner).into_iter().map(RouteParent) {
                status.reject(&a, "Conflicted", &msg);
            }
        }
        if status.ancestors.is_empty() {
            out.push((p.key.clone(), None));
            continue;
        }
        status.truncate();
        out.push((p.key.clone(), Some(status.to_json(controller))));
    }
    out
}

#[cfg(test)]
#[path = "backendtls_tests.rs"]
mod tests;
