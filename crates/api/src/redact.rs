//! What a caller without the admin role sees of a stored object: no secret material.
//!
//! - A Secret keeps its `data` and `stringData` keys (a reader can check that `tls.crt` and
//!   `tls.key` are there), and every value becomes [`REDACTED`]. So does its
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation, which holds the whole
//!   Secret again.
//! - Any object, Secrets included: a string that is a private key in PEM (`-----BEGIN ...
//!   PRIVATE KEY-----`), plain or base64-encoded, becomes [`REDACTED`]. Kinds that take
//!   free-form Envoy config (EnvoyPatchPolicy's JSON patches, EnvoyProxy's bootstrap) can
//!   inline a TLS key that way; every other kind refers to Secrets by name.
//!
//! The other answers hold no resource bodies: `/api/v1/gateways` lists xDS resource names and
//! versions, never their content; statuses and rejections are messages that name objects.

use flotilla_model::Kind;
use serde_json::Value;

/// What replaces a hidden value.
pub const REDACTED: &str = "REDACTED";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// `-----BEGIN` in base64, at the start of an encoded PEM block.
const BASE64_PEM: &str = "LS0tLS1CRUdJTi";

/// The object as a non-admin may see it; `None` when it has nothing to hide (serve it as is:
/// most objects, and no copy).
pub fn for_reader(kind: Kind, raw: &Value) -> Option<Value> {
    let is_secret = kind == Kind::Secret;
    if !is_secret && !holds_private_key(raw) {
        return None;
    }
    let mut v = raw.clone();
    if is_secret {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(m)) = v.get_mut(field) {
                for val in m.values_mut() {
                    *val = Value::String(REDACTED.into());
                }
            }
        }
        // (Not `pointer_mut`: the annotation's name holds a `/`.)
        if let Some(a) = v
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(|a| a.get_mut(LAST_APPLIED))
        {
            *a = Value::String(REDACTED.into());
        }
    }
    redact_private_keys(&mut v);
    Some(v)
}

fn is_private_key(s: &str) -> bool {
    if s.contains("PRIVATE KEY-----") {
        return true;
    }
    if !s.trim_start().starts_with(BASE64_PEM) {
        return false;
    }
    use base64::Engine;
    let compact: String = s.split_ascii_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .is_ok_and(|b| b.windows(16).any(|w| w == b"PRIVATE KEY-----"))
}

fn holds_private_key(v: &Value) -> bool {
    match v {
        Value::String(s) => is_private_key(s),
        Value::Array(a) => a.iter().any(holds_private_key),
        Value::Object(m) => m.values().any(holds_private_key),
        _ => false,
    }
}

fn redact_private_keys(v: &mut Value) {
    match v {
        Value::String(s) if is_private_key(s) => *s = REDACTED.into(),
        Value::Array(a) => a.iter_mut().for_each(redact_private_keys),
        Value::Object(m) => m.values_mut().for_each(redact_private_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
