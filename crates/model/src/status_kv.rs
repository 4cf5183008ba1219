//! The status bucket's vocabulary, shared by the store (which writes it) and the agents
//! (which read their cluster's keys and write them to Kubernetes): the bucket name, the key of
//! a resource's status, and the value.
//!
//! Key: `<cluster>.<kind>.<namespace>.<name>`, namespace `_` for cluster-scoped kinds. NATS KV
//! keys allow `[-/_=.a-zA-Z0-9]` with `.` separating tokens. Kubernetes namespaces are DNS
//! labels and names DNS subdomains (lowercase alphanumerics, `-`, `.`), so they fit; a name
//! with dots spans several tokens, which is fine: agents filter on `<cluster>.>` and the value
//! carries the namespace and name. Anything else (a file-mode object named with other
//! characters) has no key, and its status is not published.

use crate::ResourceKey;
use serde::{Deserialize, Serialize};

/// The JetStream key-value bucket of computed statuses (its stream is `KV_<bucket>`).
pub const STATUS_BUCKET: &str = "flotilla-status";

/// The stream behind [`STATUS_BUCKET`].
pub fn status_stream() -> String {
    format!("KV_{STATUS_BUCKET}")
}

/// The subject prefix of the bucket's keys (`$KV.<bucket>.`).
pub fn status_subject_prefix() -> String {
    format!("$KV.{STATUS_BUCKET}.")
}

/// The subjects of one cluster's keys: what its agent may read.
pub fn status_subjects_of(cluster: &str) -> String {
    format!("{}{cluster}.>", status_subject_prefix())
}

/// Whether every character of a key token is one NATS KV allows.
fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'='))
}

/// The bucket key of a resource's status, or `None` when its names do not fit a key.
pub fn status_key(key: &ResourceKey) -> Option<String> {
    let ns = if key.kind.cluster_scoped() {
        "_"
    } else {
        key.namespace.as_str()
    };
    let name_ok = key.name.split('.').all(token_ok);
    (token_ok(&key.cluster) && token_ok(ns) && name_ok)
        .then(|| format!("{}.{}.{}.{}", key.cluster, key.kind, ns, key.name))
}

/// One published status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusValue {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` of the object the status was computed from (the conditions'
    /// `observedGeneration`).
    #[serde(default)]
    pub generation: Option<i64>,
    pub status: serde_json::Value,
    /// The store revision that published it.
    #[serde(default)]
    pub revision: u64,
}

impl StatusValue {
    /// Equal but for the revision (a value that differs only in its revision is not
    /// rewritten, neither into the bucket nor into Kubernetes).
    pub fn same_as(&self, other: &StatusValue) -> bool {
        self.api_version == other.api_version
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
            && self.generation == other.generation
            && self.status == other.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn keys_fit_nats_kv_or_are_refused() {
        let k = ResourceKey::new("east", Kind::HTTPRoute, "app", "web.v2");
        assert_eq!(status_key(&k).as_deref(), Some("east.HTTPRoute.app.web.v2"));
        let k = ResourceKey::new("east", Kind::GatewayClass, "", "eg");
        assert_eq!(status_key(&k).as_deref(), Some("east.GatewayClass._.eg"));
        for bad in ["a b", "a*", "a>", "", "x.", ".x", "a..b", "ä"] {
            let k = ResourceKey::new("east", Kind::Gateway, "ns", bad);
            assert_eq!(status_key(&k), None, "{bad:?}");
        }
        let k = ResourceKey::new("ea st", Kind::Gateway, "ns", "gw");
        assert_eq!(status_key(&k), None);
    }

    #[test]
    fn values_equal_but_for_the_revision_are_the_same() {
        let v = StatusValue {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "Gateway".into(),
            namespace: "infra".into(),
            name: "gw".into(),
            generation: Some(2),
            status: serde_json::json!({"conditions": []}),
            revision: 7,
        };
        let mut w = v.clone();
        w.revision = 9;
        assert!(v.same_as(&w));
        w.generation = Some(3);
        assert!(!v.same_as(&w));
    }
}
