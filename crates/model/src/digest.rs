//! A state digest: one hash that says whether two replicas (or a replica and the fold of the
//! agents' files) hold exactly the same resources.
//!
//! Hex SHA-256 over, for each resource in the order given, `key.to_string()`, `\n`, the
//! value's `serde_json::to_vec`, `\n`. Callers pass resources in key order (`ResourceKey`'s
//! `Ord`: cluster, kind, namespace, name), so equal sets give equal digests wherever they
//! were computed. `serde_json`'s maps are ordered, so equal objects serialize to equal bytes.

use crate::ResourceKey;
use sha2::{Digest, Sha256};

/// The digest of `resources`, taken in the order given (pass them in key order).
pub fn state_digest<'a>(
    resources: impl IntoIterator<Item = (&'a ResourceKey, &'a serde_json::Value)>,
) -> String {
    let mut h = Sha256::new();
    for (key, value) in resources {
        h.update(key.to_string().as_bytes());
        h.update(b"\n");
        // Serializing a `Value` cannot fail (its keys are strings); were it ever to, an
        // empty body still yields a digest that differs from the correct one.
        h.update(serde_json::to_vec(value).unwrap_or_default());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use serde_json::json;

    #[test]
    fn digest_of_nothing_is_sha256_of_nothing() {
        assert_eq!(
            state_digest(std::iter::empty()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn digest_covers_keys_values_and_order() {
        let a = ResourceKey::new("east", Kind::HTTPRoute, "default", "a");
        let b = ResourceKey::new("east", Kind::HTTPRoute, "default", "b");
        let va = json!({"kind": "HTTPRoute", "metadata": {"name": "a"}});
        let vb = json!({"kind": "HTTPRoute", "metadata": {"name": "b"}});
        let d = state_digest([(&a, &va), (&b, &vb)]);
        assert_eq!(d.len(), 64);
        assert_eq!(d, state_digest([(&a, &va), (&b, &vb)]));
        assert_ne!(d, state_digest([(&b, &vb), (&a, &va)]));
        assert_ne!(d, state_digest([(&a, &va)]));
        assert_ne!(d, state_digest([(&a, &vb), (&b, &va)]));
        // The framing is exactly key, newline, JSON, newline.
        let mut h = Sha256::new();
        h.update(b"east/HTTPRoute/default/a\n");
        h.update(serde_json::to_vec(&va).unwrap());
        h.update(b"\n");
        assert_eq!(state_digest([(&a, &va)]), hex::encode(h.finalize()));
    }
}
