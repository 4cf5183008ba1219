//! A digest of a set of stored objects: replicas (and a checker that folds the same input
//! itself) compare state by comparing one string.

use crate::ResourceKey;
use sha2::{Digest, Sha256};

/// Hex SHA-256 over, for each `(key, object)` in the order given (callers pass key order):
/// the key's display form, `\n`, the object's compact JSON, `\n`.
pub fn state_digest<'a>(
    resources: impl IntoIterator<Item = (&'a ResourceKey, &'a serde_json::Value)>,
) -> String {
    let mut h = Sha256::new();
    for (key, value) in resources {
        h.update(key.to_string().as_bytes());
        h.update(b"\n");
        // A `Value` always serializes; an error here could only be an IO error of the writer,
        // and hashing into a `Vec` has none.
        h.update(serde_json::to_vec(value).unwrap_or_default());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn digest_depends_on_keys_values_and_order() {
        let a = ResourceKey::new("c", Kind::Service, "ns", "a");
        let b = ResourceKey::new("c", Kind::Service, "ns", "b");
        let v1 = serde_json::json!({"x": 1});
        let v2 = serde_json::json!({"x": 2});
        let base = state_digest([(&a, &v1), (&b, &v2)]);
        assert_eq!(base, state_digest([(&a, &v1), (&b, &v2)]));
        assert_ne!(base, state_digest([(&a, &v2), (&b, &v2)]));
        assert_ne!(base, state_digest([(&b, &v2), (&a, &v1)]));
        assert_ne!(base, state_digest([(&a, &v1)]));
        assert_eq!(state_digest([]).len(), 64);
    }
}
