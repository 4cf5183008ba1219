//! ClientTrafficPolicy attachment (Envoy Gateway's `ProcessClientTrafficPolicies`): a policy
//! targets Gateways of its own namespace, or one listener of them with `sectionName`. Per
//! gateway, the oldest policy naming a listener wins that listener and the oldest naming the
//! whole Gateway wins the rest; later ones are `Conflicted`, and a Gateway-wide policy that
//! listener policies displace on some listeners is `Overridden` there.

use super::status::{AncestorRef, PolicyStatus};
use super::{invalid_duration, is_kind, policies_in, PolicyRef};
use crate::index::Index;
use flotilla_model::gateway::Gateway;
use flotilla_model::{Kind, ResourceKey};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Which ClientTrafficPolicy applies where, for one cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CtpAttachment {
    /// (gateway, listener name) -> the policy attached to that listener by `sectionName`.
    listeners: BTreeMap<(ResourceKey, String), ResourceKey>,
    /// gateway -> the policy attached to the whole Gateway.
    gateways: BTreeMap<ResourceKey, ResourceKey>,
}

impl CtpAttachment {
    /// The policy that configures listener `listener` of gateway `gw`: the one naming the
    /// listener, else the one naming the Gateway.
    // The next step (translating the policies' fields) calls this; until then only tests do.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn for_listener(&self, gw: &ResourceKey, listener: &str) -> Option<&ResourceKey> {
        self.listeners
            .get(&(gw.clone(), listener.to_string()))
            .or_else(|| self.gateways.get(gw))
    }
}

/// Everything [`attach`] decides.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CtpResult {
    pub attachment: CtpAttachment,
    /// The status of every ClientTrafficPolicy of the cluster.
    pub statuses: BTreeMap<ResourceKey, Value>,
}

/// Why a policy's fields cannot be translated, if that is cheap to tell (the durations Envoy
/// Gateway parses while translating a listener; the other fields are checked when translated).
pub(crate) fn invalid(spec: &Value) -> Option<String> {
    invalid_duration(
        spec,
        &[
            ("/tcpKeepalive/idleTime", "IdleTime", "TCP KeepAlive"),
            ("/tcpKeepalive/interval", "Interval", "TCP KeepAlive"),
            (
                "/connection/connectionLimit/closeDelay",
                "CloseDelay",
                "Connection",
            ),
            ("/timeout/tcp/idleTimeout", "TCP IdleTimeout", "Timeout"),
            (
                "/timeout/http/requestReceivedTimeout",
                "HTTP RequestReceivedTimeout",
                "Timeout",
            ),
            ("/timeout/http/idleTimeout", "HTTP IdleTimeout", "Timeout"),
            (
                "/timeout/http/streamIdleTimeout",
                "HTTP StreamIdleTimeout",
                "Timeout",
            ),
        ],
    )
}

/// Attaches every ClientTrafficPolicy of `cluster` to the gateways `gateways` (those this
/// controller translates) and computes their statuses.
pub(crate) fn attach(
    ix: &Index,
    cluster: &str,
    gateways: &[(&ResourceKey, &Gateway)],
    controller: &str,
) -> CtpResult {
    let policies = policies_in(ix, cluster, Kind::ClientTrafficPolicy);
    let gw_by_nn: BTreeMap<(&str, &str), (&ResourceKey, &Gateway)> = gateways
        .iter()
        .map(|(k, g)| ((k.namespace.as_str(), k.name.as_str()), (*k, *g)))
        .collect();
    let mut out = CtpResult::default();
    let mut statuses: Vec<PolicyStatus> = policies
        .iter()
        .map(|p| PolicyStatus::new(p.generation))
        .collect();
    // Gateway -> sections taken ("/" stands for the whole Gateway, as in Envoy Gateway).
    let mut taken: BTreeMap<ResourceKey, BTreeSet<String>> = BTreeMap::new();
    const ALL: &str = "/";
    let targets_of = |p: &PolicyRef| {
        p.targets
            .resolve(ix, cluster, &p.key.namespace, &[Kind::Gateway])
            .into_iter()
            .filter(|t| is_kind(t, "Gateway"))
            .collect::<Vec<_>>()
    };
    let invalid: Vec<Option<String>> = policies.iter().map(|p| invalid(p.spec)).collect();
    // Pass 1: policies naming a listener; pass 2: those naming a whole Gateway.
    for with_section in [true, false] {
        for ((p, st), bad) in policies.iter().zip(statuses.iter_mut()).zip(&invalid) {
            for t in targets_of(p) {
                if t.section.is_some() != with_section {
                    continue;
                }
                let ns = p.key.namespace.as_str();
                let Some((gw_key, gw)) = gw_by_nn.get(&(ns, t.name.as_str())) else {
                    continue;
                };
                let anc = AncestorRef::gateway(ns, &t.name, t.section.as_deref());
                let s = taken.entry((*gw_key).clone()).or_default();
                match &t.section {
                    Some(section) => {
                        if !gw.spec.listeners.iter().any(|l| l.name == *section) {
                            st.reject(
                                &anc,
                                "TargetNotFound",
                                &format!(
                                    "No section name {section} found for Gateway {ns}/{}",
                                    t.name
                                ),
                            );
                            continue;
                        }
                        if s.contains(section) {
                            st.reject(&anc, "Conflicted", &format!(
                                "Unable to target section of {}, another ClientTrafficPolicy has already attached to it",
                                t.name));
                            continue;
                        }
                        s.insert(section.clone());
                        out.attachment
                            .listeners
                            .insert(((*gw_key).clone(), section.clone()), p.key.clone());
                    }
                    None => {
                        if s.contains(ALL) {
                            st.reject(&anc, "Conflicted", &format!(
                                "Unable to target Gateway {}, another ClientTrafficPolicy has already attached to it",
                                t.name));
                            continue;
                        }
                        if !s.is_empty() {
                            // BTreeSet iterates sorted, as Envoy Gateway sorts the sections.
                            let sections: Vec<&str> = s.iter().map(String::as_str).collect();
                            st.set(&anc, "Overridden", true, "Overridden", &format!(
                                "There are existing ClientTrafficPolicies that are overriding these sections [{}]",
                                sections.join(" ")));
                        }
                        s.insert(ALL.to_string());
                        out.attachment
                            .gateways
                            .insert((*gw_key).clone(), p.key.clone());
                    }
                }
                if let Some(msg) = bad {
                    st.reject(&anc, "Invalid", msg);
                }
                st.accept_if_unset(&anc);
                if p.targets.deprecated_target_ref {
                    st.warn_deprecated(&anc, &[("spec.targetRef", "spec.targetRefs")]);
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
