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

/// The version Flotilla gives an encoded xDS resource: hex of the first 8 bytes of a SHA-256.
/// For most resources, of the body. For a RouteConfiguration (`route_configuration`), whose
/// virtual hosts are encoded once each and assembled, of its fields other than the virtual
/// hosts (in order) followed by each virtual host's own SHA-256: a function of the bytes all the
/// same, computed without hashing every byte again when one virtual host changes. A body that
/// is not well-formed protobuf is hashed whole.
pub fn xds_version(route_configuration: bool, body: &[u8]) -> String {
    let whole = || hex::encode(&Sha256::digest(body)[..8]);
    if !route_configuration {
        return whole();
    }
    let Some(fields) = top_level_fields(body) else {
        return whole();
    };
    let mut header = Sha256::new();
    let mut vhosts = Vec::new();
    for (number, raw, value) in fields {
        if number == ROUTE_CONFIGURATION_VIRTUAL_HOSTS {
            vhosts.push(Sha256::digest(value));
        } else {
            header.update(raw);
        }
    }
    for d in vhosts {
        header.update(d);
    }
    hex::encode(&header.finalize()[..8])
}

/// `envoy.config.route.v3.RouteConfiguration.virtual_hosts`.
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u64 = 2;

/// One field of a message: its number, its bytes with its key, and a length-delimited field's
/// value (empty for the other wire types).
type Field<'a> = (u64, &'a [u8], &'a [u8]);

/// A message's fields, or `None` when the bytes are not a well-formed message.
fn top_level_fields(mut b: &[u8]) -> Option<Vec<Field<'_>>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let start = b;
        let key = varint(&mut b)?;
        let value: &[u8] = match key & 7 {
            0 => {
                varint(&mut b)?;
                &[]
            }
            1 => {
                b = b.get(8..)?;
                &[]
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let v = b.get(..len)?;
                b = &b[len..];
                v
            }
            5 => {
                b = b.get(4..)?;
                &[]
            }
            _ => return None,
        };
        let raw = &start[..start.len() - b.len()];
        out.push((key >> 3, raw, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn xds_versions_hash_bodies_and_route_configurations_by_virtual_host() {
        // Any resource: the SHA-256 of its body.
        assert_eq!(xds_version(false, b""), "e3b0c44298fc1c14");
        // A route configuration: name (field 1), then two virtual hosts (field 2).
        let name = [0x0a, 0x01, b'r'];
        let vh = |c: u8| [0x12, 0x02, 0x0a, c];
        let body: Vec<u8> = name
            .iter()
            .chain(&vh(b'a'))
            .chain(&vh(b'b'))
            .copied()
            .collect();
        let mut h = Sha256::new();
        h.update(name);
        h.update(Sha256::digest([0x0a, b'a']));
        h.update(Sha256::digest([0x0a, b'b']));
        assert_eq!(xds_version(true, &body), hex::encode(&h.finalize()[..8]));
        // Another virtual host, another version; not the whole-body hash.
        let other: Vec<u8> = name
            .iter()
            .chain(&vh(b'a'))
            .chain(&vh(b'c'))
            .copied()
            .collect();
        assert_ne!(xds_version(true, &body), xds_version(true, &other));
        assert_ne!(xds_version(true, &body), xds_version(false, &body));
        // Bytes that are not a message are hashed whole.
        assert_eq!(
            xds_version(true, &[0x12, 0x09]),
            xds_version(false, &[0x12, 0x09])
        );
    }

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
