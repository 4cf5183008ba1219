//! Policy attachment: the one mechanism every Envoy Gateway policy kind attaches with.
//!
//! A policy names its targets with `targetRef` (deprecated), `targetRefs` and `targetSelectors`
//! (labels of objects of the target kind in the policy's namespace), each optionally narrowed
//! by `sectionName` (a Gateway listener, or a route rule). This module resolves those targets
//! against the index and orders policies by Envoy Gateway's precedence (oldest
//! `creationTimestamp` first, compared as times, then `namespace/name`). The per-kind rules
//! (which kinds a policy may target, conflicts, overrides) live in [`ctp`] and [`btp`]; the
//! ancestor status they write is built with [`status`]. BackendTLSPolicy (a Gateway API kind)
//! attaches the same way: [`backendtls`] answers "which policy applies to this backend" and
//! writes its ancestor status.
//!
//! What other translator modules call: [`ctp::attach`] and [`btp::attach`] give, for one
//! cluster, the statuses of every policy of the kind and an attachment map (gathered in
//! [`attachments::Policies`]) that answers
//! "which ClientTrafficPolicy applies to this listener" ([`ctp::CtpAttachment::for_listener`])
//! and "which BackendTrafficPolicy applies to this route rule"
//! ([`btp::BtpAttachment::for_route_rule`]), most specific target first.
//!
//! What ClientTrafficPolicy fields do to Envoy lives in [`client`]: the spec read once into
//! checked settings, applied by the listener builders (`crate::listener::xds`) through
//! `client::xds`.

pub(crate) mod attachments;
pub(crate) mod backend;
pub(crate) mod backendtls;
pub(crate) mod btp;
pub(crate) mod client;
pub(crate) mod ctp;
pub(crate) mod ratelimit;
pub(crate) mod status;

/// What one cluster's policy pass ([`ctp::attach`] and [`btp::attach`]) read besides the
/// policies themselves, so that a change it did not read skips the pass (and the statuses of
/// a thousand policies are not rebuilt for one route). Kept with the pass's result.
#[derive(Default)]
pub(crate) struct PolicyDeps {
    /// (kind, namespace, name) of every object a policy of the cluster names.
    named: BTreeSet<(Kind, String, String)>,
    /// Some policy selects its targets by labels (any object of a target kind may match).
    selects: bool,
}

impl PolicyDeps {
    pub fn of(ix: &Index, cluster: &str) -> Self {
        let mut deps = PolicyDeps::default();
        for kind in [Kind::ClientTrafficPolicy, Kind::BackendTrafficPolicy] {
            let start = ResourceKey::new(cluster, kind, "", "");
            let policies = ix
                .resources
                .range(start..)
                .take_while(|(k, _)| k.cluster == cluster && k.kind == kind);
            for (k, r) in policies {
                let Object::Extension(_, o) = &r.object else {
                    continue;
                };
                let targets = PolicyTargets::parse(&o.spec);
                deps.selects |= !targets.selectors.is_empty();
                for t in targets.refs {
                    if let Some(kind) = Kind::parse(&t.kind) {
                        deps.named.insert((kind, k.namespace.clone(), t.name));
                    }
                }
            }
        }
        deps
    }

    /// Whether a change of the object `key` (of this cluster) can change what the pass
    /// decides. Everything the pass reads must be here: policies, Gateways, their classes,
    /// ListenerSets, Namespaces (allowed ListenerSets), Secrets and ConfigMaps (references of
    /// policy fields), and the routes a policy names or may select.
    pub fn affected_by(&self, key: &ResourceKey) -> bool {
        match key.kind {
            Kind::ClientTrafficPolicy
            | Kind::BackendTrafficPolicy
            | Kind::Gateway
            | Kind::GatewayClass
            | Kind::ListenerSet
            | Kind::Namespace
            | Kind::Secret
            | Kind::ConfigMap => true,
            k if ROUTE_KINDS.contains(&k) => {
                self.selects
                    || self
                        .named
                        .contains(&(k, key.namespace.clone(), key.name.clone()))
            }
            _ => false,
        }
    }
}

use crate::index::{selector_matches, Index};
use crate::values::Age;
use flotilla_model::{Kind, Object, Resource, ResourceKey, GATEWAY_GROUP};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// The route kinds a BackendTrafficPolicy may target.
pub(crate) const ROUTE_KINDS: [Kind; 5] = [
    Kind::HTTPRoute,
    Kind::GRPCRoute,
    Kind::TCPRoute,
    Kind::UDPRoute,
    Kind::TLSRoute,
];

/// One resolved target of a policy: the object it names (in the policy's namespace) and the
/// section of it, if any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Target {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub section: Option<String>,
}

/// The target fields every policy kind shares (Envoy Gateway's `PolicyTargetReferences`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetFields {
    #[serde(default)]
    target_ref: Option<RefField>,
    #[serde(default)]
    target_refs: Vec<RefField>,
    #[serde(default)]
    target_selectors: Vec<SelectorField>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefField {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    section_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelectorField {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: String,
    #[serde(flatten)]
    selector: LabelSelector,
}

/// A policy's targets as written, checked once.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicyTargets {
    /// `targetRef` then `targetRefs`, in order (Envoy Gateway's `GetTargetRefs`).
    pub refs: Vec<Target>,
    selectors: Vec<SelectorField>,
    /// `spec.targetRef` is set: Envoy Gateway warns that it is deprecated.
    pub deprecated_target_ref: bool,
}

impl PolicyTargets {
    pub fn parse(spec: &Value) -> Self {
        let f = TargetFields::deserialize(spec).unwrap_or_default();
        let deprecated_target_ref = f.target_ref.is_some();
        let refs = f
            .target_ref
            .into_iter()
            .chain(f.target_refs)
            .map(|r| Target {
                group: r.group,
                kind: r.kind,
                name: r.name,
                section: r.section_name,
            })
            .collect();
        PolicyTargets {
            refs,
            selectors: f.target_selectors,
            deprecated_target_ref,
        }
    }

    /// The targets of a policy kind with a model type (BackendTLSPolicy's `targetRefs`, checked
    /// when the object was parsed).
    pub fn of_local_refs(refs: &[flotilla_model::refs::LocalTargetRef]) -> Self {
        PolicyTargets {
            refs: refs
                .iter()
                .map(|r| Target {
                    group: r.group.clone(),
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                    section: r.section_name.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Every target: the references, then (deduplicated) the objects of the namespace `ns`
    /// whose labels a selector matches, of the selector's kind and among `kinds`, in name
    /// order. A selector never names a section.
    pub fn resolve(&self, ix: &Index, cluster: &str, ns: &str, kinds: &[Kind]) -> Vec<Target> {
        let mut out = self.refs.clone();
        let mut seen: BTreeSet<Target> = out.iter().cloned().collect();
        for s in &self.selectors {
            let group = s.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let Some(kind) = kinds.iter().find(|k| k.as_str() == s.kind) else {
                continue;
            };
            for (k, r) in objects_of(ix, cluster, *kind, ns) {
                let labels = r.metadata().labels.clone().unwrap_or_default();
                if !selector_matches(&s.selector, &labels) {
                    continue;
                }
                let t = Target {
                    group: group.to_string(),
                    kind: s.kind.clone(),
                    name: k.name.clone(),
                    section: None,
                };
                if seen.insert(t.clone()) {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// The objects of one kind in one namespace of a cluster, in name order.
pub(crate) fn objects_of<'a>(
    ix: &'a Index,
    cluster: &'a str,
    kind: Kind,
    ns: &'a str,
) -> impl Iterator<Item = (&'a ResourceKey, &'a Object)> + 'a {
    let start = ResourceKey::new(cluster, kind, ns, "");
    ix.resources
        .range(start..)
        .take_while(move |(k, _)| k.cluster == cluster && k.kind == kind && k.namespace == ns)
        .map(|(k, r)| (k, &r.object))
}

/// One stored policy: its key, metadata, raw spec and checked targets.
pub(crate) struct PolicyRef<'a> {
    pub key: &'a ResourceKey,
    pub generation: Option<i64>,
    pub spec: &'a Value,
    /// The stored object (a policy kind with a model type is read through it).
    pub object: &'a Object,
    pub targets: PolicyTargets,
    age: Age<'a>,
}

impl<'a> PolicyRef<'a> {
    /// A stored policy of an Envoy Gateway extension kind, or a BackendTLSPolicy (whose targets
    /// the model type has checked); `None` for any other object.
    fn of(key: &'a ResourceKey, r: &'a Resource) -> Option<Self> {
        let (meta, spec, targets) = match &r.object {
            Object::Extension(_, o) => (&o.metadata, &o.spec, PolicyTargets::parse(&o.spec)),
            Object::BackendTLSPolicy(p) => (
                &p.metadata,
                r.raw.get("spec").unwrap_or(&Value::Null),
                PolicyTargets::of_local_refs(&p.spec.target_refs),
            ),
            _ => return None,
        };
        Some(PolicyRef {
            key,
            generation: meta.generation,
            spec,
            object: &r.object,
            targets,
            age: Age::of(meta, key),
        })
    }
}

/// Every policy of `kind` in `cluster`, in precedence order: oldest first (as instants), then
/// `namespace/name` (Envoy Gateway sorts the provider's list this way before translating).
pub(crate) fn policies_in<'a>(ix: &'a Index, cluster: &str, kind: Kind) -> Vec<PolicyRef<'a>> {
    let start = ResourceKey::new(cluster, kind, "", "");
    in_precedence_order(
        ix.resources
            .range(start..)
            .take_while(|(k, _)| k.cluster == cluster && k.kind == kind),
    )
}

/// [`policies_in`], of one namespace only (a policy kind whose targets are all local to it, as
/// BackendTLSPolicy's, never needs the others).
pub(crate) fn policies_in_namespace<'a>(
    ix: &'a Index,
    cluster: &str,
    kind: Kind,
    ns: &str,
) -> Vec<PolicyRef<'a>> {
    let start = ResourceKey::new(cluster, kind, ns, "");
    in_precedence_order(
        ix.resources
            .range(start..)
            .take_while(|(k, _)| k.cluster == cluster && k.kind == kind && k.namespace == ns),
    )
}

fn in_precedence_order<'a>(
    stored: impl Iterator<Item = (&'a ResourceKey, &'a std::sync::Arc<Resource>)>,
) -> Vec<PolicyRef<'a>> {
    let mut out: Vec<PolicyRef<'a>> = stored.filter_map(|(k, r)| PolicyRef::of(k, r)).collect();
    out.sort_by(|a, b| a.age.cmp(&b.age));
    out
}

/// The Gateways of `cluster` that this controller translates (their class is ours).
pub(crate) fn our_gateways<'a>(
    ix: &'a Index,
    cluster: &'a str,
    is_ours: &dyn Fn(&flotilla_model::gateway::Gateway) -> bool,
) -> Vec<(&'a ResourceKey, &'a flotilla_model::gateway::Gateway)> {
    ix.gateways_in(cluster)
        .filter_map(|k| match ix.resources.get(k).map(|r| &r.object) {
            Some(Object::Gateway(g)) if is_ours(g) => Some((k, g)),
            _ => None,
        })
        .collect()
}

/// The gateways a policy (in its current or previous form) can affect: those it names, those
/// of the ListenerSets and routes it names, and (a selector may match any of them) every gateway of the cluster
/// when it has a selector. Policy statuses themselves are recomputed per cluster (see
/// `Translator::recompute`); this edge is what retranslates the gateways a policy configures.
pub(crate) fn affected_gateways(ix: &Index, r: &Resource, out: &mut BTreeSet<ResourceKey>) {
    let Object::Extension(_, o) = &r.object else {
        return;
    };
    let k = &r.key;
    let targets = PolicyTargets::parse(&o.spec);
    if !targets.selectors.is_empty() {
        out.extend(ix.gateways_in(&k.cluster).cloned());
        return;
    }
    for t in &targets.refs {
        if t.group != GATEWAY_GROUP {
            continue;
        }
        match Kind::parse(&t.kind) {
            Some(Kind::Gateway) => {
                out.insert(ResourceKey::new(
                    &k.cluster,
                    Kind::Gateway,
                    &k.namespace,
                    &t.name,
                ));
            }
            Some(Kind::ListenerSet) => {
                let set = ResourceKey::new(&k.cluster, Kind::ListenerSet, &k.namespace, &t.name);
                out.extend(ix.parent_gateway(set));
            }
            Some(kind) if ROUTE_KINDS.contains(&kind) => {
                let route = ResourceKey::new(&k.cluster, kind, &k.namespace, &t.name);
                ix.gateways_of_route(&route, out);
            }
            _ => {}
        }
    }
}

/// The routes a policy names, when it names nothing but routes (no Gateway, ListenerSet or
/// label selector): its change concerns those routes alone. `None` otherwise.
pub(crate) fn route_targets(r: &Resource) -> Option<Vec<ResourceKey>> {
    let Object::Extension(_, o) = &r.object else {
        return None;
    };
    let targets = PolicyTargets::parse(&o.spec);
    if !targets.selectors.is_empty() {
        return None;
    }
    let k = &r.key;
    targets
        .refs
        .iter()
        .filter(|t| t.group == GATEWAY_GROUP)
        .map(|t| match Kind::parse(&t.kind) {
            Some(kind) if ROUTE_KINDS.contains(&kind) => {
                Some(ResourceKey::new(&k.cluster, kind, &k.namespace, &t.name))
            }
            _ => None,
        })
        .collect()
}

/// Field errors of a policy, grouped by the section of the spec Envoy Gateway wraps them in,
/// in the order it translates them; [`FieldErrors::message`] is its condition message.
#[derive(Default)]
pub(crate) struct FieldErrors(Vec<(&'static str, Vec<String>)>);

impl FieldErrors {
    pub fn add(&mut self, section: &'static str, error: String) {
        match self.0.iter_mut().find(|(s, _)| *s == section) {
            Some((_, errs)) => errs.push(error),
            None => self.0.push((section, vec![error])),
        }
    }

    /// Invalid Go durations among `fields` (JSON pointer, Envoy Gateway's field name).
    pub fn durations(&mut self, spec: &Value, section: &'static str, fields: &[(&str, &str)]) {
        for (pointer, name) in fields {
            if let Some(v) = spec.pointer(pointer).and_then(Value::as_str) {
                if crate::values::parse_go_duration(v).is_err() {
                    self.add(section, format!("invalid {name} value {v}"));
                }
            }
        }
    }

    /// A quantity outside `min..=max`, in Envoy Gateway's words.
    pub fn quantity_range(
        &mut self,
        spec: &Value,
        section: &'static str,
        pointer: &str,
        name: &str,
        (min, max): (f64, f64),
    ) {
        let Some(v) = spec.pointer(pointer) else {
            return;
        };
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match crate::values::parse_quantity(&text) {
            Some(q) if q >= min && q <= max => {}
            _ => self.add(
                section,
                format!("{name} value {text} is out of range, must be between {min} and {max}"),
            ),
        }
    }

    /// Envoy Gateway's message: each section `Section: error\nerror`, sections one per line,
    /// ended with a period (its `Error2ConditionMsg`).
    pub fn message(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let mut m = self
            .0
            .iter()
            .map(|(s, errs)| format!("{s}: {}", errs.join("\n")))
            .collect::<Vec<_>>()
            .join("\n");
        if !m.ends_with('.') {
            m.push('.');
        }
        Some(m)
    }
}

/// Whether a target names a Gateway API object of `kind`.
pub(crate) fn is_kind(t: &Target, kind: &str) -> bool {
    t.group == GATEWAY_GROUP && t.kind == kind
}

#[cfg(test)]
mod tests;
