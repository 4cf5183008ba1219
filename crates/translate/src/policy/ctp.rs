//! ClientTrafficPolicy attachment (Envoy Gateway's `ProcessClientTrafficPolicies`): a policy
//! targets Gateways of its own namespace, or one listener of them with `sectionName`. Per
//! gateway, the oldest policy naming a listener wins that listener and the oldest naming the
//! whole Gateway wins the rest; later ones are `Conflicted`, and a Gateway-wide policy that
//! listener policies displace on some listeners is `Overridden` there.

use super::status::{AncestorRef, PolicyStatus};
use super::{is_kind, policies_in, PolicyRef};
use crate::index::Index;
use crate::listener::listener_sets;
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
    /// (ListenerSet, listener name) -> the policy attached to that listener by `sectionName`.
    set_listeners: BTreeMap<(ResourceKey, String), ResourceKey>,
    /// ListenerSet -> the policy attached to the whole ListenerSet.
    sets: BTreeMap<ResourceKey, ResourceKey>,
    /// (Gateway or ListenerSet, listener name) whose policy is refused there (it would
    /// configure other plain HTTP listeners of the port too): nothing configures them.
    refused: BTreeSet<(ResourceKey, String)>,
}

impl CtpAttachment {
    /// The policy that configures listener `listener` of gateway `gw`, or of its ListenerSet
    /// `set`: the one naming the listener, else the one naming its ListenerSet, else the one
    /// naming the Gateway.
    pub fn for_listener(
        &self,
        gw: &ResourceKey,
        set: Option<&ResourceKey>,
        listener: &str,
    ) -> Option<&ResourceKey> {
        let owner = set.unwrap_or(gw);
        if self
            .refused
            .contains(&(owner.clone(), listener.to_string()))
        {
            return None;
        }
        let own = match set {
            Some(ls) => self
                .set_listeners
                .get(&(ls.clone(), listener.to_string()))
                .or_else(|| self.sets.get(ls)),
            None => self.listeners.get(&(gw.clone(), listener.to_string())),
        };
        own.or_else(|| self.gateways.get(gw))
    }
}

/// Everything [`attach`] decides.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CtpResult {
    pub attachment: CtpAttachment,
    /// The status of every ClientTrafficPolicy of the cluster.
    pub statuses: BTreeMap<ResourceKey, Value>,
}

/// An attachment point: a Gateway or one of its (accepted) ListenerSets.
struct Owner<'a> {
    key: ResourceKey,
    /// The Gateway it belongs to.
    gateway: ResourceKey,
    listeners: Vec<&'a str>,
    /// Its HTTP and HTTPS listeners without a hostname, or with a wildcard one.
    hostless: BTreeSet<&'a str>,
    /// Its HTTPS listeners.
    https: BTreeSet<&'a str>,
}

fn https(ls: &[flotilla_model::gateway::Listener]) -> BTreeSet<&str> {
    ls.iter()
        .filter(|l| l.protocol == "HTTPS")
        .map(|l| l.name.as_str())
        .collect()
}

fn hostless(ls: &[flotilla_model::gateway::Listener]) -> BTreeSet<&str> {
    ls.iter()
        .filter(|l| matches!(l.protocol.as_str(), "HTTP" | "HTTPS"))
        .filter(|l| l.hostname.as_deref().is_none_or(|h| h.contains('*')))
        .map(|l| l.name.as_str())
        .collect()
}

/// A plain-HTTP listener of a gateway, named as Envoy Gateway names its IR listener
/// (`ns/gateway/listener`, or `ns/gateway/set-ns/set/listener` for a ListenerSet's).
struct HttpListener {
    owner: ResourceKey,
    name: String,
    port: i32,
    ir_name: String,
}

/// Envoy Gateway's `validatePortOverlapForClientTrafficPolicy`: plain-HTTP listeners that
/// share a port share one Envoy listener, so a policy may not configure one of them alone.
/// A policy on a whole Gateway or ListenerSet may cover the others when they are its own
/// (their IR names start with its prefix).
fn port_overlap(
    all: &[HttpListener],
    owner: &ResourceKey,
    listener: &str,
    whole: bool,
) -> Option<String> {
    let me = all
        .iter()
        .find(|l| l.owner == *owner && l.name == listener)?;
    let others = all
        .iter()
        .filter(|o| o.ir_name != me.ir_name && o.port == me.port);
    let prefix = format!("{}/", &me.ir_name[..me.ir_name.rfind('/').unwrap_or(0)]);
    let names: Vec<&str> = others
        .filter(|o| !whole || !o.ir_name.starts_with(&prefix))
        .map(|o| o.ir_name.as_str())
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "ClientTrafficPolicy is being applied to multiple http (non https) listeners ({}) on the same port, which is not allowed.",
            names.join(", ")
        )
    })
}

/// Attaches every ClientTrafficPolicy of `cluster` to the gateways `gateways` (those this
/// controller translates) and their ListenerSets, and computes their statuses.
///
/// Envoy Gateway's order: first the policies naming a listener (of a Gateway or of a
/// ListenerSet), then those naming a whole ListenerSet, then those naming a whole Gateway; a
/// wider policy keeps the listeners no narrower one took, and reports the others as
/// `Overridden`.
pub(crate) fn attach(
    ix: &Index,
    cluster: &str,
    gateways: &[(&ResourceKey, &Gateway)],
    controller: &str,
) -> CtpResult {
    let policies = policies_in(ix, cluster, Kind::ClientTrafficPolicy);
    let mut owners: BTreeMap<(Kind, &str, &str), Owner> = BTreeMap::new();
    let mut http: BTreeMap<ResourceKey, Vec<HttpListener>> = BTreeMap::new();
    for (k, g) in gateways {
        let gw_http = http.entry((*k).clone()).or_default();
        for l in g.spec.listeners.iter().filter(|l| l.protocol == "HTTP") {
            gw_http.push(HttpListener {
                owner: (*k).clone(),
                name: l.name.clone(),
                port: l.port,
                ir_name: format!("{}/{}/{}", k.namespace, k.name, l.name),
            });
        }
        owners.insert(
            (Kind::Gateway, k.namespace.as_str(), k.name.as_str()),
            Owner {
                key: (*k).clone(),
                gateway: (*k).clone(),
                listeners: g.spec.listeners.iter().map(|l| l.name.as_str()).collect(),
                hostless: hostless(&g.spec.listeners),
                https: https(&g.spec.listeners),
            },
        );
        for set in listener_sets(ix, k, g).into_iter().filter(|s| s.allowed) {
            let Some(r) = ix.resources.get(&set.key) else {
                continue;
            };
            for l in set
                .ls
                .spec
                .listeners
                .iter()
                .filter(|l| l.protocol == "HTTP")
            {
                gw_http.push(HttpListener {
                    owner: set.key.clone(),
                    name: l.name.clone(),
                    port: l.port,
                    ir_name: format!(
                        "{}/{}/{}/{}/{}",
                        k.namespace, k.name, set.key.namespace, set.key.name, l.name
                    ),
                });
            }
            owners.insert(
                (
                    Kind::ListenerSet,
                    r.key.namespace.as_str(),
                    r.key.name.as_str(),
                ),
                Owner {
                    key: set.key.clone(),
                    gateway: (*k).clone(),
                    listeners: set
                        .ls
                        .spec
                        .listeners
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect(),
                    hostless: hostless(&set.ls.spec.listeners),
                    https: https(&set.ls.spec.listeners),
                },
            );
        }
    }
    let mut out = CtpResult::default();
    let mut statuses: Vec<PolicyStatus> = policies
        .iter()
        .map(|p| PolicyStatus::new(p.generation))
        .collect();
    // Per Gateway, the listeners taken by narrower policies: (owner, listener) for conflicts,
    // and the listener names for the `Overridden` message. Per ListenerSet, the same.
    let mut taken: BTreeSet<(ResourceKey, String)> = BTreeSet::new();
    let mut overriding: BTreeMap<ResourceKey, BTreeSet<String>> = BTreeMap::new();
    let targets_of = |p: &PolicyRef| {
        p.targets
            .resolve(
                ix,
                cluster,
                &p.key.namespace,
                &[Kind::Gateway, Kind::ListenerSet],
            )
            .into_iter()
            .filter_map(|t| {
                let kind = if is_kind(&t, "Gateway") {
                    Kind::Gateway
                } else if is_kind(&t, "ListenerSet") {
                    Kind::ListenerSet
                } else {
                    return None;
                };
                Some((kind, t))
            })
            .collect::<Vec<_>>()
    };
    let invalid: Vec<Option<String>> = policies
        .iter()
        .map(|p| {
            super::client::invalid(p.spec)
                .or_else(|| super::client::resolve_client_ca(ix, p.key, p.spec).err())
        })
        .collect();
    // Pass 1: a listener; pass 2: a whole ListenerSet; pass 3: a whole Gateway.
    for pass in 0..3 {
        for ((p, st), bad) in policies.iter().zip(statuses.iter_mut()).zip(&invalid) {
            for (kind, t) in targets_of(p) {
                let this_pass = match (&t.section, kind) {
                    (Some(_), _) => 0,
                    (None, Kind::ListenerSet) => 1,
                    (None, _) => 2,
                };
                if this_pass != pass {
                    continue;
                }
                let ns = p.key.namespace.as_str();
                let Some(owner) = owners.get(&(kind, ns, t.name.as_str())) else {
                    continue;
                };
                let anc = AncestorRef {
                    kind: kind.as_str(),
                    namespace: ns.to_string(),
                    name: t.name.clone(),
                    section: t.section.clone(),
                };
                let mut overlap;
                // The HTTPS listeners the policy configures here, for its HTTP/3 warning.
                let mut configured: Vec<&str> = Vec::new();
                match &t.section {
                    Some(section) => {
                        if !owner.listeners.contains(&section.as_str()) {
                            st.reject(
                                &anc,
                                "TargetNotFound",
                                &format!(
                                    "No section name {section} found for {} {ns}/{}",
                                    kind.as_str(),
                                    t.name
                                ),
                            );
                            continue;
                        }
                        if !taken.insert((owner.key.clone(), section.clone())) {
                            st.reject(&anc, "Conflicted", &format!(
                                "Unable to target section of {}, another ClientTrafficPolicy has already attached to it",
                                t.name));
                            continue;
                        }
                        overlap = port_overlap(&http[&owner.gateway], &owner.key, section, false);
                        if overlap.is_some() {
                            out.attachment
                                .refused
                                .insert((owner.key.clone(), section.clone()));
                        }
                        if overlap.is_none() {
                            configured.push(section.as_str());
                        }
                        // A translation error: the policy still configures the listener (which
                        // then serves nothing, see `gateway.rs`).
                        if overlap.is_none() && owner.hostless.contains(section.as_str()) {
                            overlap = super::client::http10_default_host_error(p.spec);
                        }
                        overriding
                            .entry(owner.gateway.clone())
                            .or_default()
                            .insert(section.clone());
                        overriding
                            .entry(owner.key.clone())
                            .or_default()
                            .insert(section.clone());
                        let map = match kind {
                            Kind::ListenerSet => &mut out.attachment.set_listeners,
                            _ => &mut out.attachment.listeners,
                        };
                        map.insert((owner.key.clone(), section.clone()), p.key.clone());
                    }
                    None => {
                        let whole = match kind {
                            Kind::ListenerSet => &mut out.attachment.sets,
                            _ => &mut out.attachment.gateways,
                        };
                        if whole.contains_key(&owner.key) {
                            st.reject(&anc, "Conflicted", &format!(
                                "Unable to target {} {}, another ClientTrafficPolicy has already attached to it",
                                kind.as_str(), t.name));
                            continue;
                        }
                        whole.insert(owner.key.clone(), p.key.clone());
                        let mut errs: Vec<String> = Vec::new();
                        for l in owner
                            .listeners
                            .iter()
                            .filter(|l| !taken.contains(&(owner.key.clone(), l.to_string())))
                        {
                            if let Some(e) =
                                port_overlap(&http[&owner.gateway], &owner.key, l, true)
                            {
                                errs.push(e);
                                out.attachment
                                    .refused
                                    .insert((owner.key.clone(), l.to_string()));
                            } else {
                                configured.push(l);
                                if owner.hostless.contains(l) {
                                    errs.extend(super::client::http10_default_host_error(p.spec));
                                }
                            }
                        }
                        overlap = (!errs.is_empty()).then(|| errs.join("\n"));
                        if let Some(s) = overriding.get(&owner.key).filter(|s| !s.is_empty()) {
                            // A BTreeSet iterates sorted, as Envoy Gateway sorts the sections.
                            let sections: Vec<&str> = s.iter().map(String::as_str).collect();
                            st.set(&anc, "Overridden", true, "Overridden", &format!(
                                "There are existing ClientTrafficPolicies that are overriding these sections [{}]",
                                sections.join(" ")));
                        }
                        if kind == Kind::ListenerSet {
                            // The whole ListenerSet displaces a Gateway-wide policy there.
                            let names = owner.listeners.iter().map(|l| l.to_string());
                            overriding
                                .entry(owner.gateway.clone())
                                .or_default()
                                .extend(names);
                        }
                    }
                }
                if let Some(msg) = overlap.as_ref().or(bad.as_ref()) {
                    st.reject(&anc, "Invalid", msg);
                }
                st.accept_if_unset(&anc);
                let mut deprecated = super::client::deprecated_fields(p.spec);
                if p.targets.deprecated_target_ref {
                    deprecated.push(("spec.targetRef", "spec.targetRefs"));
                }
                let http3: Vec<String> = configured
                    .iter()
                    .filter(|l| owner.https.contains(*l))
                    .filter_map(|l| super::client::http3_warning(p.spec, l))
                    .collect();
                if http3.is_empty() {
                    st.warn_deprecated(&anc, &deprecated);
                } else {
                    // Several warnings are one `Warnings` condition, joined as Envoy Gateway
                    // joins them.
                    let mut msgs = http3;
                    msgs.extend(
                        deprecated
                            .iter()
                            .map(|(f, alt)| format!("{f} is deprecated, use {alt} instead")),
                    );
                    let reason = if msgs.len() == 1 {
                        "UnsupportedHTTP3ClientValidation"
                    } else {
                        "Warnings"
                    };
                    st.set(&anc, "Warning", true, reason, &msgs.join("; "));
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
