use super::*;
use crate::backend::tests::{cluster_named, key, mk_route, route_conditions, translate};
use crate::{EventBody, ResourceEvent};
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use prost::Message;

/// A syntactically valid PEM certificate block (a DER SEQUENCE).
const CA: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";

fn base(extra: &str) -> String {
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

fn policy(name: &str, section: Option<&str>, ca: &str, created: &str) -> String {
    let section = section
        .map(|s| format!(", sectionName: {s}"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: app, creationTimestamp: \"{created}\"}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: web{section}}}]\n  validation:\n    hostname: web.example.com\n    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {ca}}}]\n"
    )
}

fn ancestors(t: &crate::Translator, name: &str) -> Vec<Value> {
    t.status(&key(Kind::BackendTLSPolicy, "app", name))
        .map(|s| s["ancestors"].as_array().unwrap().clone())
        .unwrap_or_default()
}

fn conds(a: &Value) -> Vec<(String, String, String)> {
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
fn a_younger_policy_on_the_same_target_is_conflicted() {
    let t = translate(&base(&format!(
        "{}{}",
        policy("young", Some("https"), "ca", "2025-06-01T00:00:00Z"),
        policy("old", Some("https"), "ca", "2025-01-01T00:00:00Z")
    )));
    assert_eq!(conds(&ancestors(&t, "old")[0])[1].2, "Accepted");
    let young = ancestors(&t, "young");
    assert_eq!(
        conds(&young[0]),
        vec![("Accepted".into(), "False".into(), "Conflicted".into())]
    );
    assert_eq!(
        young[0]["conditions"][0]["message"],
        "Policy conflicts with BackendTLSPolicy app/old."
    );
}

#[test]
fn a_sectioned_policy_wins_over_a_whole_service_one() {
    let t = translate(&base(&format!(
        "{}{}",
        policy("whole", None, "ca", "2025-01-01T00:00:00Z"),
        policy("sectioned", Some("https"), "ca", "2025-06-01T00:00:00Z")
    )));
    assert_eq!(ancestors(&t, "sectioned").len(), 1);
    assert!(ancestors(&t, "whole").is_empty());
}

#[test]
fn more_than_16_ancestors_are_truncated_and_aggregated() {
    let mut list: Vec<(Value, Vec<Condition>)> = (0..20)
        .map(|i| {
            (
                json!({"name": format!("gw-{i:02}"), "namespace": "infra"}),
                vec![Condition::new("Accepted", true, "Accepted", "", None)],
            )
        })
        .collect();
    list[19].1[0].status = "False".into();
    truncate(&mut list, None);
    assert_eq!(list.len(), 16);
    // Not-accepted ancestors first, then by name.
    assert_eq!(list[0].0["name"], "gw-19");
    assert_eq!(list[1].0["name"], "gw-00");
    assert!(list[15].1.iter().any(|c| c.type_ == "Aggregated"));
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
    let (rs, _) = flotilla_model::parse_documents("x.yaml", cm, "c1");
    let r = rs.into_iter().next().unwrap();
    t.apply(&ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Upsert {
            key: r.key,
            object: r.raw,
            origin: None,
        },
    })
    .unwrap();
    assert_eq!(
        t.dirty.iter().cloned().collect::<Vec<_>>(),
        vec![key(Kind::Gateway, "infra", "gw")]
    );
    t.recompute();
    // `other` is not PEM: the policy now fails.
    assert_eq!(conds(&ancestors(&t, "p")[0])[0].2, "NoValidCACertificate");
}

/// Creation times are compared as instants: `…:45Z` is older than `…:45.5Z` (which sorts
/// first as text), so the policy created at `…:45Z` wins whatever the names.
#[test]
fn policy_age_is_compared_as_time_not_text() {
    let t = translate(&base(&format!(
        "{}{}",
        policy("aa-young", Some("https"), "ca", "2025-01-01T00:00:45.5Z"),
        policy("zz-old", Some("https"), "ca", "2025-01-01T00:00:45Z")
    )));
    assert_eq!(conds(&ancestors(&t, "zz-old")[0])[1].2, "Accepted");
    assert_eq!(
        ancestors(&t, "aa-young")[0]["conditions"][0]["message"],
        "Policy conflicts with BackendTLSPolicy app/zz-old."
    );
}
