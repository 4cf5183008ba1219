//! A policy's `status.ancestors`, built the way Envoy Gateway's `status` package builds it:
//! conditions are set per ancestor reference (one entry per distinct reference, a condition
//! replaced by type), `Accepted` is added last only where nothing set it, and a list longer
//! than 16 entries is truncated with an `Aggregated` condition on the 16th.
//!
//! The ancestor is generic ([`Ancestor`]): Envoy Gateway's own policies name a Gateway (or a
//! listener of one) as [`AncestorRef`]; BackendTLSPolicy names the parentRef of the route that
//! uses it, as the route writes it (`super::backendtls::RouteParent`).

use flotilla_model::gateway::Condition;
use flotilla_model::GATEWAY_GROUP;
use serde_json::{json, Value};

/// Envoy Gateway caps `status.ancestors` at 16 entries (the Gateway API's MaxItems).
pub(crate) const MAX_ANCESTORS: usize = 16;

/// What a policy's status can name as an ancestor.
pub(crate) trait Ancestor: Clone + PartialEq {
    /// The namespace and name the truncation orders by (Envoy Gateway's sort keys).
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    /// The `ancestorRef` object.
    fn to_json(&self) -> Value;
}

/// An ancestor a policy reports on: a Gateway, or one of its listeners.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AncestorRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub section: Option<String>,
}

impl AncestorRef {
    pub fn gateway(namespace: &str, name: &str, section: Option<&str>) -> Self {
        AncestorRef {
            kind: "Gateway",
            namespace: namespace.to_string(),
            name: name.to_string(),
            section: section.map(str::to_string),
        }
    }
}

impl Ancestor for AncestorRef {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "group": GATEWAY_GROUP,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
        });
        if let Some(s) = &self.section {
            v["sectionName"] = json!(s);
        }
        v
    }
}

/// One entry of `status.ancestors`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AncestorStatus<A = AncestorRef> {
    pub ancestor: A,
    pub conditions: Vec<Condition>,
}

/// A policy's ancestor status under construction.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PolicyStatus<A = AncestorRef> {
    pub generation: Option<i64>,
    pub ancestors: Vec<AncestorStatus<A>>,
}

impl<A> Default for PolicyStatus<A> {
    fn default() -> Self {
        PolicyStatus {
            generation: None,
            ancestors: Vec::new(),
        }
    }
}

impl<A: Ancestor> PolicyStatus<A> {
    pub fn new(generation: Option<i64>) -> Self {
        PolicyStatus {
            generation,
            ancestors: Vec::new(),
        }
    }

    /// Sets a condition on one ancestor (Envoy Gateway's `SetConditionForPolicyAncestor`).
    pub fn set(&mut self, a: &A, type_: &str, ok: bool, reason: &str, message: &str) {
        let cond = Condition::new(type_, ok, reason, message, self.generation);
        match self.ancestors.iter_mut().find(|x| x.ancestor == *a) {
            Some(x) => match x.conditions.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => *c = cond,
                None => x.conditions.push(cond),
            },
            None => self.ancestors.push(AncestorStatus {
                ancestor: a.clone(),
                conditions: vec![cond],
            }),
        }
    }

    /// `Accepted=False` with `reason` (a resolve error: Conflicted, TargetNotFound, Invalid).
    pub fn reject(&mut self, a: &A, reason: &str, message: &str) {
        self.set(a, "Accepted", false, reason, message);
    }

    /// `Accepted=True` unless something already set `Accepted`.
    pub fn accept_if_unset(&mut self, a: &A) {
        let set = self
            .ancestors
            .iter()
            .any(|x| x.ancestor == *a && x.conditions.iter().any(|c| c.type_ == "Accepted"));
        if !set {
            self.set(a, "Accepted", true, "Accepted", "Policy has been accepted.");
        }
    }

    /// The `Warning`/`DeprecatedField` condition for deprecated fields, in Envoy Gateway's
    /// words (`field is deprecated, use alternative instead`, joined with `; `).
    pub fn warn_deprecated(&mut self, a: &A, fields: &[(&str, &str)]) {
        if fields.is_empty() {
            return;
        }
        let msg = fields
            .iter()
            .map(|(f, alt)| format!("{f} is deprecated, use {alt} instead"))
            .collect::<Vec<_>>()
            .join("; ");
        self.set(a, "Warning", true, "DeprecatedField", &msg);
    }

    /// Envoy Gateway's `TruncatePolicyAncestors`: past 16 entries, keep the 16 most telling
    /// (not accepted first, then overridden, then the rest; each by namespace, then name) and
    /// mark the 16th `Aggregated`.
    pub fn truncate(&mut self) {
        if self.ancestors.len() <= MAX_ANCESTORS {
            return;
        }
        let rank = |x: &AncestorStatus<A>| {
            let is = |t: &str, s: &str| x.conditions.iter().any(|c| c.type_ == t && c.status == s);
            if is("Accepted", "False") {
                0
            } else if is("Overridden", "True") {
                1
            } else {
                2
            }
        };
        self.ancestors.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| a.ancestor.namespace().cmp(b.ancestor.namespace()))
                .then_with(|| a.ancestor.name().cmp(b.ancestor.name()))
        });
        self.ancestors.truncate(MAX_ANCESTORS);
        let last = self.ancestors[MAX_ANCESTORS - 1].ancestor.clone();
        self.set(
            &last,
            "Aggregated",
            true,
            "Aggregated",
            "Ancestors have been truncated because the number of policy ancestors exceeds 16.",
        );
    }

    /// The `status` object, as Envoy Gateway writes it (`ancestors: null` when the policy
    /// reached no ancestor).
    pub fn to_json(&self, controller: &str) -> Value {
        if self.ancestors.is_empty() {
            return json!({ "ancestors": null });
        }
        let ancestors: Vec<Value> = self
            .ancestors
            .iter()
            .map(|a| {
                json!({
                    "ancestorRef": a.ancestor.to_json(),
                    "conditions": a.conditions,
                    "controllerName": controller,
                })
            })
            .collect();
        json!({ "ancestors": ancestors })
    }
}
