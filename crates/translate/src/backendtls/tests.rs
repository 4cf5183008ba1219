//! Upstream TLS from an attached BackendTLSPolicy; the fixtures are shared with the
//! attachment tests (`policy/backendtls_tests.rs`).

use super::*;
use crate::backend::tests::{cluster_named, key, mk_route, route_conditions, translate};
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context;
use prost::Message;
use serde_json::json;

/// A syntactically valid PEM certificate block (a DER SEQUENCE).
pub(crate) const CA: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";

pub(crate) fn base(extra: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: eg}}
spec: {{controllerName: gateway.envoyproxy.io/gatewayclass-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: eg
  listeners:
  - {{name: http, port: 8080, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: app}}
spec: {{ports: [{{name: https, port: 443}}, {{name: alt, port: 8443}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: app, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: https, port: 9443}}, {{name: alt, port: 9444}}]
endpoints: [{{addresses: [10.0.0.1]}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca, namespace: app}}
data: {{ca.crt: {ca:?}}}
---
{route}{extra}"#,
        ca = CA,
        route = mk_route("r", "app", "gw", &["{name: web, port: 443}"]),
    )
}

pub(crate) fn policy(name: &str, section: Option<&str>, ca: &str, created: &str) -> String {
    let section = section
        .map(|s| format!(", sectionName: {s}"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: app, creationTimestamp: \"{created}\"}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: web{section}}}]\n  validation:\n    hostname: web.example.com\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca}}}]\n"
    )
}

pub(crate) fn ancestors(t: &crate::Translator, name: &str) -> Vec<Value> {
    t.status(&key(Kind::BackendTLSPolicy, "app", name))
        .map(|s| s["ancestors"].as_array().unwrap().clone())
        .unwrap_or_default()
}

pub(crate) fn conds(a: &Value) -> Vec<(String, String, String)> {
    a["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap().to_string();
            (f("type"), f("status"), f("reason"))
        })
        .collect()
}

#[test]
fn valid_policy_is_accepted_at_the_route_parent_and_configures_upstream_tls() {
    let t = translate(&base(&policy(
        "p",
        Some("https"),
        "ca",
        "2025-01-01T00:00:00Z",
    )));
    let a = ancestors(&t, "p");
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0]["ancestorRef"],
        json!({"name": "gw", "namespace": "infra"})
    );
    assert_eq!(
        a[0]["controllerName"],
        "gateway.envoyproxy.io/gatewayclass-controller"
    );
    assert_eq!(
        conds(&a[0]),
        vec![
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
            ("Accepted".into(), "True".into(), "Accepted".into())
        ]
    );
    let c = cluster_named(&t, "c1/infra/gw", "app/web/443").unwrap();
    let ts = c.transport_socket.expect("upstream TLS");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(ConfigType::TypedConfig(any)) = ts.config_type else {
        panic!("typed config")
    };
    let ctx = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(ctx.sni, "web.example.com");
    let Some(common_tls_context::ValidationContextType::ValidationContext(v)) =
        ctx.common_tls_context.unwrap().validation_context_type
    else {
        panic!("validation context")
    };
    assert_eq!(
        v.trusted_ca.unwrap().specifier,
        Some(data_source::Specifier::InlineString(CA.to_string()))
    );
    assert_eq!(v.match_typed_subject_alt_names.len(), 1);
    // The other port of the Service is not targeted: plaintext.
    let route = mk_route("r2", "app", "gw", &["{name: web, port: 8443}"]);
    let t = translate(&format!(
        "{}---\n{route}",
        base(&policy("p", Some("https"), "ca", "2025-01-01T00:00:00Z"))
    ));
    assert!(cluster_named(&t, "c1/infra/gw", "app/web/8443")
        .unwrap()
        .transport_socket
        .is_none());
}

#[test]
fn missing_ca_fails_policy_and_route() {
    let t = translate(&base(&policy("p", None, "nope", "2025-01-01T00:00:00Z")));
    let a = ancestors(&t, "p");
    assert_eq!(
        conds(&a[0]),
        vec![
            (
                "Accepted".into(),
                "False".into(),
                "NoValidCACertificate".into()
            ),
            (
                "ResolvedRefs".into(),
                "False".into(),
                "InvalidCACertificateRef".into()
            )
        ]
    );
    assert_eq!(
        a[0]["conditions"][0]["message"],
        "Configmap nope not found in namespace app."
    );
    let rr = route_conditions(&t, "app", "r")
        .into_iter()
        .find(|c| c.0 == "ResolvedRefs")
        .unwrap();
    assert_eq!(rr.2, "InvalidBackendTLS");
    assert_eq!(
        rr.3,
        "Failed to process route rule 0 backendRef 0: configmap nope not found in namespace app."
    );
}

#[test]
fn pem_check_refuses_what_envoy_would_reject() {
    assert!(pem_has_certificate(CA));
    assert!(!pem_has_certificate("fake-cert"));
    assert!(!pem_has_certificate(
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----"
    ));
    assert!(!pem_has_certificate(
        "-----BEGIN CERTIFICATE-----\nMAMCAQ==\n-----END CERTIFICATE-----"
    ));
}

#[test]
fn a_ca_configmap_change_recomputes_the_gateway() {
    let mut t = translate(&base(&policy("p", None, "ca", "2025-01-01T00:00:00Z")));
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: app}\ndata: {other: x}\n";
    crate::tests::apply_yaml(&mut t, cm);
    assert_eq!(
        t.dirty.iter().cloned().collect::<Vec<_>>(),
        vec![key(Kind::Gateway, "infra", "gw")]
    );
    t.recompute();
    // `other` is not PEM: the policy now fails.
    assert_eq!(conds(&ancestors(&t, "p")[0])[0].2, "NoValidCACertificate");
}
