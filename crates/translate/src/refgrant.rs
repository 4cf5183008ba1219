//! ReferenceGrant: whether an object of one namespace may refer to an object of another.

use crate::index::Index;
use flotilla_model::{Kind, Object, ResourceKey};

impl Index {
    /// Whether a reference from an object of (`from_group`, `from_kind`) in `from_ns` to the
    /// object `to_ns/to_name` of (`to_group`, `to_kind`) is allowed, in `cluster`.
    ///
    /// A reference within one namespace is always allowed. Across namespaces it needs a
    /// ReferenceGrant in the referent's namespace whose `from` names the referrer's group, kind
    /// and namespace and whose `to` names the referent's group and kind, and its name or no
    /// name (Envoy Gateway's `validateCrossNamespaceRef`). Groups compare exactly: the core
    /// group is "".
    #[allow(clippy::too_many_arguments)]
    pub fn reference_allowed(
        &self,
        cluster: &str,
        from_group: &str,
        from_kind: &str,
        from_ns: &str,
        to_group: &str,
        to_kind: &str,
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        if from_ns == to_ns {
            return true;
        }
        let start = ResourceKey::new(cluster, Kind::ReferenceGrant, to_ns, "");
        self.resources
            .range(start..)
            .take_while(|(k, _)| {
                k.cluster == cluster && k.kind == Kind::ReferenceGrant && k.namespace == to_ns
            })
            .any(|(_, r)| {
                let Object::ReferenceGrant(g) = &r.object else {
                    return false;
                };
                g.spec
                    .from
                    .iter()
                    .any(|f| f.namespace == from_ns && f.group == from_group && f.kind == from_kind)
                    && g.spec.to.iter().any(|t| {
                        t.group == to_group
                            && t.kind == to_kind
                            && t.name
                                .as_deref()
                                .is_none_or(|n| n.is_empty() || n == to_name)
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::index::Index;
    use flotilla_model::parse_object;
    use serde_json::json;
    use std::sync::Arc;

    fn grant(ns: &str, from: serde_json::Value, to: serde_json::Value) -> Index {
        let mut ix = Index::default();
        let r = parse_object(
            "c",
            json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                   "metadata": {"name": "g", "namespace": ns}, "spec": {"from": from, "to": to}}),
        )
        .unwrap();
        ix.insert(Arc::new(r));
        ix
    }

    const GW: &str = "gateway.networking.k8s.io";

    #[test]
    fn same_namespace_needs_no_grant() {
        let ix = Index::default();
        assert!(ix.reference_allowed("c", GW, "HTTPRoute", "a", "", "Service", "a", "s"));
        assert!(!ix.reference_allowed("c", GW, "HTTPRoute", "a", "", "Service", "b", "s"));
    }

    #[test]
    fn grant_matches_from_and_to() {
        let ix = grant(
            "b",
            json!([{"group": GW, "kind": "HTTPRoute", "namespace": "a"}]),
            json!([{"group": "", "kind": "Service"}]),
        );
        assert!(ix.reference_allowed("c", GW, "HTTPRoute", "a", "", "Service", "b", "any"));
        // Wrong referrer namespace, kind, referent kind, referent namespace, other cluster.
        assert!(!ix.reference_allowed("c", GW, "HTTPRoute", "x", "", "Service", "b", "s"));
        assert!(!ix.reference_allowed("c", GW, "GRPCRoute", "a", "", "Service", "b", "s"));
        assert!(!ix.reference_allowed("c", GW, "HTTPRoute", "a", "", "Secret", "b", "s"));
        assert!(!ix.reference_allowed("c", GW, "HTTPRoute", "a", "", "Service", "d", "s"));
        assert!(!ix.reference_allowed("o", GW, "HTTPRoute", "a", "", "Service", "b", "s"));
    }

    #[test]
    fn grant_with_name_allows_only_that_name() {
        let ix = grant(
            "b",
            json!([{"group": GW, "kind": "Gateway", "namespace": "a"}]),
            json!([{"group": "", "kind": "Secret", "name": "cert"}]),
        );
        assert!(ix.reference_allowed("c", GW, "Gateway", "a", "", "Secret", "b", "cert"));
        assert!(!ix.reference_allowed("c", GW, "Gateway", "a", "", "Secret", "b", "other"));
    }
}
