//! ClientTrafficPolicy TLS settings through the translator: versions, ciphers and names, client
//! certificate validation (CAs, CRLs, SAN/SPKI matching), fingerprints, HTTPS listeners sharing
//! a port, and the real Envoy accepting all of it.

use super::schema::{CIPHERS, CURVES, SIGNATURE_ALGORITHMS};
use super::tests::*;
use crate::Translator;
use envoy_types::pb::envoy::config::listener::v3::listener_filter;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters;
use prost::Message;

#[test]
fn tls_settings_and_tcp_idle_timeout_reach_tls_listeners() {
    let t = translate(
        "  - {name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: tcp, port: 9000, protocol: TCP, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
",
        GW,
        &[
            "  tls:
    minVersion: '1.3'
    ciphers: [ECDHE-ECDSA-AES128-GCM-SHA256]
    ecdhCurves: [X25519]
    signatureAlgorithms: [ecdsa_secp256r1_sha256]
    alpnProtocols: [http/1.1]
    session: {resumption: {stateful: {}}}
  timeout: {tcp: {idleTimeout: 30s}, http: {requestReceivedTimeout: 2s}}
  connection: {connectionLimit: {value: 10}}
",
            TCP_ROUTE,
        ]
        .concat(),
    );
    assert_eq!(condition(&t).1, "Accepted");
    let l = listener(&t, "tcp-8443");
    let chain = &l.filter_chains[0];
    assert_eq!(hcm_of(chain).request_timeout, secs(2));
    let ctx = downstream_tls(chain);
    let common = ctx.common_tls_context.unwrap();
    let p = common.tls_params.unwrap();
    use tls_parameters::TlsProtocol as P;
    assert_eq!(p.tls_minimum_protocol_version, P::TlSv13 as i32);
    assert_eq!(p.tls_maximum_protocol_version, P::TlSv13 as i32);
    assert_eq!(p.cipher_suites, ["ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert_eq!(p.ecdh_curves, ["X25519"]);
    assert_eq!(p.signature_algorithms, ["ecdsa_secp256r1_sha256"]);
    assert_eq!(common.alpn_protocols, ["http/1.1"]);
    assert!(!ctx.disable_stateful_session_resumption);
    assert!(ctx.session_ticket_keys_type.is_some());

    let tcp = listener(&t, "tcp-9000");
    let filters = &tcp.filter_chains[0].filters;
    assert_eq!(filters[0].name, "envoy.filters.network.connection_limit");
    let tp: TcpProxy = typed(filters.last().unwrap());
    assert_eq!(tp.idle_timeout, secs(30));
}

/// Every TLS name the policy may use is one Envoy takes: a listener naming all of them (one
/// listener per list, ciphers limited to TLS 1.2) passes Envoy's validation.
#[test]
fn envoy_takes_every_tls_name_a_policy_may_use() {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let t = translate(
        "  - {name: https, port: 18443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}\n",
        GW,
        &format!(
            "  tls:\n    maxVersion: '1.2'\n    ciphers: [{}, '[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]']\n    ecdhCurves: [{}]\n    signatureAlgorithms: [{}]\n",
            list(CIPHERS),
            list(CURVES),
            list(SIGNATURE_ALGORITHMS)
        ),
    );
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    validate_with_envoy(&t);
    let t = translate(
        HTTP,
        GW,
        "  tls: {ecdhCurves: [curve1], signatureAlgorithms: [sig1]}\n",
    );
    assert_eq!(
        condition(&t).2,
        "TLS: unsupported ECDHCurves value curve1\nunsupported SignatureAlgorithms value sig1."
    );
}

#[test]
fn client_validation_trusts_the_referenced_cas() {
    let https = "  - {name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}\n";
    let t = translate(
        https,
        GW,
        "  tls:
    clientValidation:
      caCertificateRefs: [{name: ca}]
      optional: true
      allowExpiredCertificate: true
      spkiHashes: [NvqYIYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A=]
      certificateHashes: [df6ff72fe9116521268f6f2dd4966f51df479883fe7037b39f75916ac3049d1a]
      subjectAltNames:
        dnsNames: [{type: Exact, value: client1.example.com}]
        emailAddresses: [{type: Suffix, value: '@example.com'}]
        ipAddresses: [{type: Prefix, value: 192.168.}]
        uris: [{value: 'spiffe://example.com/client1'}]
        otherNames: [{oid: 1.3.6.1.4.1.311.20.2.3, value: client1}]
",
    );
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    let l = listener(&t, "tcp-8443");
    let ctx = downstream_tls(&l.filter_chains[0]);
    assert_eq!(ctx.require_client_certificate.map(|b| b.value), Some(false));
    let v = validation_context(&ctx);
    assert!(v.trusted_ca.is_some());
    assert!(v.allow_expired_certificate);
    assert_eq!(v.verify_certificate_spki.len(), 1);
    assert_eq!(v.verify_certificate_hash.len(), 1);
    let sans: Vec<(i32, String)> = v
        .match_typed_subject_alt_names
        .iter()
        .map(|m| (m.san_type, m.oid.clone()))
        .collect();
    assert_eq!(
        sans,
        [
            (SanType::Dns as i32, String::new()),
            (SanType::Email as i32, String::new()),
            (SanType::IpAddress as i32, String::new()),
            (SanType::Uri as i32, String::new()),
            (
                SanType::OtherName as i32,
                "1.3.6.1.4.1.311.20.2.3".to_string()
            ),
        ]
    );
    assert_eq!(validate_with_envoy(&t), 1);

    let t = translate(
        https,
        GW,
        "  tls: {clientValidation: {caCertificateRefs: [{name: missing}]}}\n",
    );
    assert_eq!(
        condition(&t),
        (
            "False".into(),
            "Invalid".into(),
            "TLS: failed to get certificate from ref: secret infra/missing does not exist.".into()
        )
    );
}

/// HTTPS listeners of one port: each filter chain (and its HCM, connection limit and TLS
/// context) carries its own listener's policy; the Envoy listener's own settings are those of
/// the port's first listener.
#[test]
fn https_listeners_sharing_a_port_keep_their_own_chain_settings() {
    let gateway = base_and_gateway(
        "  - {name: a, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: b, port: 8443, protocol: HTTPS, hostname: x.b.example.com, tls: {certificateRefs: [{name: cert}]}}
",
    );
    let t = crate::tests::translate_yaml(&format!(
        "{gateway}---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: for-a, namespace: infra}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: a}}]
  timeout: {{http: {{requestReceivedTimeout: 1s}}}}
  tcpKeepalive: {{probes: 2}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: for-b, namespace: infra}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: b}}]
  timeout: {{http: {{requestReceivedTimeout: 2s}}}}
  connection: {{connectionLimit: {{value: 5}}, bufferLimit: 1Ki}}
  tls: {{minVersion: '1.3'}}
"
    ));
    let l = listener(&t, "tcp-8443");
    let chain = |host: &str| {
        l.filter_chains
            .iter()
            .find(|c| {
                c.filter_chain_match
                    .as_ref()
                    .is_some_and(|m| m.server_names == [host])
            })
            .unwrap_or_else(|| panic!("chain for {host}"))
    };
    let (a, b) = (chain("a.example.com"), chain("x.b.example.com"));
    assert_eq!(hcm_of(a).request_timeout, secs(1));
    assert_eq!(hcm_of(b).request_timeout, secs(2));
    assert_eq!(a.filters.len(), 1);
    assert_eq!(b.filters[0].name, "envoy.filters.network.connection_limit");
    // Listener-level: the first listener's policy (keepalive), not b's buffer limit.
    assert_eq!(l.per_connection_buffer_limit_bytes, None);
    assert_eq!(l.socket_options.len(), 2);
    assert_eq!(validate_with_envoy(&t), 1);
}

#[test]
fn tls_fingerprints_turn_on_in_the_tls_inspector() {
    use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
    let t = translate(
        "  - {name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}\n",
        GW,
        "  tls: {fingerprints: [JA4]}\n",
    );
    let l = listener(&t, "tcp-8443");
    let f = l
        .listener_filters
        .iter()
        .find(|f| f.name == "envoy.filters.listener.tls_inspector")
        .expect("tls inspector");
    let Some(listener_filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!("tls inspector config")
    };
    let ti = TlsInspector::decode(&a.value[..]).unwrap();
    assert_eq!(ti.enable_ja3_fingerprinting, None);
    assert_eq!(ti.enable_ja4_fingerprinting.map(|b| b.value), Some(true));
}

/// A CA whose certificate is valid from `not_before` (y, m, d), and a CRL it signs revoking
/// serial 7, due for an update at `next_update`: (CA PEM, CRL PEM).
fn ca_and_crl(not_before: (i32, u8, u8), next_update: (i32, u8, u8)) -> (String, String) {
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa,
        Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
    let ca = params.self_signed(&key).unwrap();
    let issuer = Issuer::new(params, key);
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2000, 1, 1),
        next_update: date_time_ymd(next_update.0, next_update.1, next_update.2),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(7u64),
            revocation_time: date_time_ymd(2000, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    (ca.pem(), crl.pem().unwrap())
}

/// A policy trusting Secret `crl-ca`'s CA and checking the CRLs `crl_refs` (a YAML flow list),
/// with Secret `crl-ca` (`ca.crt`, and `ca.crl` = `secret_crl`) and ConfigMap `crl-cm`
/// (`ca.crl` = `cm_crl`) beside it.
fn translate_with_crl(ca: &str, secret_crl: &str, cm_crl: &str, crl: &str) -> Translator {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let indent = |s: &str| s.replace('\n', "\n    ");
    let https = format!(
        "  - {{name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {{certificateRefs: [{{name: cert}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: crl-ca, namespace: infra}}
data: {{ca.crt: {}, ca.crl: {}, other: eA==}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: crl-cm, namespace: infra}}
data:
  ca.crl: |
    {}
",
        b64(ca),
        b64(secret_crl),
        indent(cm_crl)
    );
    // The listener list ends the Gateway; the extra objects follow it.
    translate(
        &https,
        GW,
        &format!("  tls:\n    clientValidation:\n      caCertificateRefs: [{{name: crl-ca}}]\n      crl: {crl}\n"),
    )
}

/// `clientValidation.crl`: the referenced CRLs (a Secret's and a ConfigMap's, `ca.crl`) reach
/// Envoy's validation context with `onlyVerifyLeafCertificate`, and Envoy takes them.
#[test]
fn client_validation_checks_the_referenced_crls() {
    use envoy_types::pb::envoy::config::core::v3::data_source;
    let (ca, crl) = ca_and_crl((2020, 1, 1), (2100, 1, 1));
    let (_, other_crl) = ca_and_crl((2020, 1, 1), (2100, 1, 1));
    let t = translate_with_crl(
        &ca,
        &crl,
        &other_crl,
        "{refs: [{name: crl-ca}, {kind: ConfigMap, name: crl-cm}], onlyVerifyLeafCertificate: true}",
    );
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    let l = listener(&t, "tcp-8443");
    let ctx = downstream_tls(&l.filter_chains[0]);
    let v = validation_context(&ctx);
    let Some(data_source::Specifier::InlineBytes(pem)) = v.crl.unwrap().specifier else {
        panic!("an inline CRL")
    };
    let pem = String::from_utf8(pem).unwrap();
    assert_eq!(pem.matches("-----BEGIN X509 CRL-----").count(), 2, "{pem}");
    assert!(pem.starts_with(&crl), "the Secret's CRL first");
    assert!(v.only_verify_leaf_cert_crl);
    assert_eq!(validate_with_envoy(&t), 1);
    // Without onlyVerifyLeafCertificate: Envoy's default, the whole chain.
    let t = translate_with_crl(&ca, &crl, &other_crl, "{refs: [{name: crl-ca}]}");
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    assert_eq!(validate_with_envoy(&t), 1);
}

/// CRLs Envoy would refuse, or that are certainly expired, are refused in status with Envoy
/// Gateway's words; nothing of the policy reaches Envoy.
#[test]
fn invalid_or_expired_crls_are_refused_in_status() {
    let (ca, crl) = ca_and_crl((2020, 1, 1), (2100, 1, 1));
    // Due for an update before the CA it is used with was valid: expired whenever checked.
    let (recent_ca, stale_crl) = ca_and_crl((2024, 7, 16), (2005, 2, 6));
    for (t, wanted) in [
        (
            translate_with_crl(&recent_ca, &stale_crl, &crl, "{refs: [{name: crl-ca}]}"),
            "TLS: invalid crl in crl-ca: CRL is expired (next update was due at 2005-02-06 00:00:00 +0000 UTC).",
        ),
        (
            translate_with_crl(&ca, "not a CRL", &crl, "{refs: [{name: crl-ca}]}"),
            "TLS: invalid crl in crl-ca: no valid CRL found.",
        ),
        (
            translate_with_crl(
                &ca,
                "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
                &crl,
                "{refs: [{name: crl-ca}]}",
            ),
            "TLS: invalid crl in crl-ca: failed to parse CRL",
        ),
        (
            translate_with_crl(&ca, &crl, &crl, "{refs: [{name: nowhere}]}"),
            "TLS: failed to get crl from ref: secret infra/nowhere does not exist.",
        ),
        (
            translate_with_crl(&ca, &crl, &crl, "{refs: []}"),
            "TLS: crl must have at least one ref.",
        ),
        (
            translate(
                "  - {name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}\n",
                GW,
                "  tls: {clientValidation: {crl: {refs: [{name: ca}]}}}\n",
            ),
            "TLS: crl requires caCertificateRefs to be set.",
        ),
    ] {
        let (status, reason, message) = condition(&t);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"), "{message}");
        assert!(message.starts_with(wanted), "{message}\nwanted: {wanted}");
        // The listener fails closed rather than serve without the CRL: its route answers 500
        // (beside the 421 for other hosts), nothing is routed.
        let statuses = route_statuses(&t, "https-8443/infra/gw/https");
        assert!(
            statuses.contains(&Some(500)) && !statuses.contains(&None),
            "{message}: {statuses:?}"
        );
    }
}

/// A change to the ConfigMap holding a CRL reaches the policy: a CRL that no longer parses
/// makes it Invalid on the next recomputation.
#[test]
fn a_changed_crl_configmap_is_translated_again() {
    let (ca, crl) = ca_and_crl((2020, 1, 1), (2100, 1, 1));
    let mut t = translate_with_crl(&ca, &crl, &crl, "{refs: [{kind: ConfigMap, name: crl-cm}]}");
    assert_eq!(condition(&t).1, "Accepted", "{}", policy_status(&t));
    let evs = crate::tests::events(
        "c1",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: crl-cm, namespace: infra}\ndata: {ca.crl: not a CRL}\n",
    );
    crate::tests::apply_all(&mut t, &evs);
    assert_eq!(
        condition(&t).2,
        "TLS: invalid crl in crl-cm: no valid CRL found."
    );
}

/// Certificate-like refs (`caCertificateRefs`, `crl.refs`) that cannot be used are refused with
/// Envoy Gateway's words: a kind they cannot be, another namespace without a ReferenceGrant, an
/// object that does not exist or lacks the expected key.
#[test]
fn unusable_certificate_refs_are_refused_in_status() {
    let (ca, crl) = ca_and_crl((2020, 1, 1), (2100, 1, 1));
    let https = "  - {name: https, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: cert}]}}\n";
    let ca_refs = |refs: &str| {
        translate(
            https,
            GW,
            &format!("  tls: {{clientValidation: {{caCertificateRefs: [{refs}]}}}}\n"),
        )
    };
    let crl_refs = |refs: &str| translate_with_crl(&ca, &crl, &crl, &format!("{{refs: [{refs}]}}"));
    for (t, wanted) in [
        (
            ca_refs("{kind: Service, name: ca}"),
            "TLS: unsupported caCertificateRef kind:Service.",
        ),
        (
            ca_refs("{name: ca, namespace: other}"),
            "TLS: secret other/ca is not permitted by any ReferenceGrant.",
        ),
        (
            ca_refs("{name: cert}"),
            "TLS: failed to get certificate from ref: ref secret [cert] has none of the expected keys [ca.crt] and more than one entry.",
        ),
        (
            ca_refs("{kind: ConfigMap, name: nope}"),
            "TLS: failed to get certificate from ref: configmap infra/nope does not exist.",
        ),
        (
            ca_refs("{kind: ClusterTrustBundle, name: nope}"),
            "TLS: failed to get certificate from ref: ref ClusterTrustBundle [nope] not found.",
        ),
        (
            crl_refs("{kind: ClusterTrustBundle, name: crl-ca}"),
            "TLS: unsupported crl ref kind:ClusterTrustBundle.",
        ),
        (
            crl_refs("{kind: ConfigMap, name: crl-cm, namespace: other}"),
            "TLS: configmap other/crl-cm is not permitted by any ReferenceGrant.",
        ),
        (
            crl_refs("{name: cert}"),
            "TLS: crl not found in secret cert: it has none of the expected keys [ca.crl].",
        ),
    ] {
        assert_eq!(
            condition(&t),
            ("False".into(), "Invalid".into(), wanted.into()),
            "{wanted}"
        );
    }
}
