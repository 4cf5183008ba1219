use super::*;
use serde_json::json;

const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";

#[test]
fn secret_values_are_hidden_and_keys_kept() {
    let s = json!({
        "kind": "Secret",
        "metadata": {"name": "tls", "annotations": {LAST_APPLIED: "{\"data\":{\"tls.key\":\"x\"}}", "team": "a"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"},
        "stringData": {"password": "hunter2"},
    });
    let r = for_reader(Kind::Secret, &s).expect("a Secret is always redacted");
    assert_eq!(r["data"], json!({"tls.crt": REDACTED, "tls.key": REDACTED}));
    assert_eq!(r["stringData"], json!({"password": REDACTED}));
    assert_eq!(r["metadata"]["annotations"][LAST_APPLIED], REDACTED);
    assert_eq!(r["metadata"]["annotations"]["team"], "a");
    assert_eq!(r["type"], "kubernetes.io/tls");
}

#[test]
fn inline_private_keys_are_hidden_in_any_kind() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(KEY);
    let cert_b64 = base64::engine::general_purpose::STANDARD
        .encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let p = json!({
        "kind": "EnvoyPatchPolicy",
        "spec": {"jsonPatches": [
            {"operation": {"op": "add", "value": {"private_key": {"inline_string": KEY}}}},
            {"operation": {"op": "add", "value": {"private_key": {"inline_bytes": b64}}}},
            {"operation": {"op": "add", "value": {"certificate_chain": {"inline_bytes": cert_b64}}}},
        ]},
    });
    let r = for_reader(Kind::EnvoyPatchPolicy, &p).expect("holds keys");
    let ops = &r["spec"]["jsonPatches"];
    assert_eq!(
        ops[0]["operation"]["value"]["private_key"]["inline_string"],
        REDACTED
    );
    assert_eq!(
        ops[1]["operation"]["value"]["private_key"]["inline_bytes"],
        REDACTED
    );
    assert_eq!(
        ops[2]["operation"]["value"]["certificate_chain"]["inline_bytes"], cert_b64,
        "certificates are public"
    );
    let route = json!({"kind": "HTTPRoute", "spec": {"hostnames": ["a.example"]}});
    assert_eq!(
        for_reader(Kind::HTTPRoute, &route),
        None,
        "nothing to hide: no copy"
    );
}
