//! Listener TLS: certificateRefs to Secrets (validation with Envoy Gateway's reasons and
//! messages) and the DownstreamTlsContext that serves them.
//!
//! Certificates are sent inline in the listener's transport socket: a certificate change
//! re-sends the listener, which is rare, and there is no second resource to keep in step.

use crate::envoy::any;
use crate::index::Index;
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, CertificateValidationContext, CommonTlsContext, DownstreamTlsContext,
    TlsCertificate,
};
use envoy_types::pb::google::protobuf::BoolValue;
use flotilla_model::gateway::{Condition, FrontendTlsValidation, GatewayTlsConfig, ListenerTls};
use flotilla_model::{Kind, Object, ResourceKey, GATEWAY_GROUP};

/// Envoy Gateway's Secret type that points at an SDS server instead of holding a certificate.
const SDS_SECRET_TYPE: &str = "gateway.envoyproxy.io/sds";

/// One usable certificate and key (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertPair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// A certificate served by an SDS server (Envoy Gateway's `gateway.envoyproxy.io/sds` Secret):
/// the server's unix socket and the secret's name there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SdsRef {
    pub url: String,
    pub secret: String,
}

/// What a TLS-terminating filter chain serves: inline certificates and SDS references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServingCerts {
    pub inline: Vec<CertPair>,
    pub sds: Vec<SdsRef>,
}

impl ServingCerts {
    pub fn is_empty(&self) -> bool {
        self.inline.is_empty() && self.sds.is_empty()
    }
}

/// The longest unix socket path Linux takes (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_PATH: usize = 107;

/// Whether a Secret is an SDS reference (Envoy Gateway's `gateway.envoyproxy.io/sds` type).
pub(crate) fn is_sds_secret(secret: &k8s_openapi::api::core::v1::Secret) -> bool {
    secret.type_.as_deref() == Some(SDS_SECRET_TYPE)
}

/// The server and secret name an SDS reference Secret `ns/name` holds, or what is wrong with it
/// (Envoy Gateway's wording).
pub(crate) fn sds_ref(
    secret: &k8s_openapi::api::core::v1::Secret,
    ns: &str,
    name: &str,
) -> Result<SdsRef, String> {
    let field = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .filter(|v| !v.is_empty())
    };
    match (field("url"), field("secretName")) {
        (None, _) => Err(format!("no url found in SDS reference secret {ns}/{name}")),
        (_, None) => Err(format!(
            "no secretName found in SDS reference secret {ns}/{name}"
        )),
        (Some(url), Some(secret)) => {
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            let path = url.split_once("://").map_or("", |(_, p)| p);
            if scheme == "unix" {
                // Envoy refuses a pipe without a path or longer than a socket address holds.
                if path.is_empty() || path.len() > MAX_UNIX_PATH {
                    return Err(format!(
                        "invalid URL in SDS reference secret {ns}/{name}: the unix socket path must have 1 to {MAX_UNIX_PATH} bytes"
                    ));
                }
                Ok(SdsRef { url, secret })
            } else {
                Err(format!(
                    "invalid URL in SDS reference secret {ns}/{name}: unsupported URL scheme: {scheme}"
                ))
            }
        }
    }
}

/// Where Envoy fetches the secret an SDS reference names: its server, through the cluster
/// [`sds_cluster`] builds.
pub(crate) fn sds_secret_config(
    r: &SdsRef,
) -> envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
    use envoy_types::pb::envoy::config::core::v3::{
        api_config_source, config_source, grpc_service, ApiConfigSource, ApiVersion, ConfigSource,
        GrpcService,
    };
    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig {
        name: r.secret.clone(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: api_config_source::ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                            grpc_service::EnvoyGrpc {
                                cluster_name: sds_cluster_name(&r.url),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// The outcome of checking a listener's certificateRefs.
pub(crate) struct CertCheck {
    pub certs: Vec<CertPair>,
    /// The DNS subjectAltNames of each certificate in `certs`.
    pub sans: Vec<Vec<String>>,
    /// Valid SDS reference secrets (Envoy Gateway's `gateway.envoyproxy.io/sds` type).
    pub sds: Vec<SdsRef>,
    /// `certificate refs N: ...` for each ref that failed, with its reason.
    pub errors: Vec<(&'static str, String)>,
}

/// Resolves and checks every certificateRef of a listener owned by (`owner_kind`, `owner_ns`).
/// A ref to another namespace needs a ReferenceGrant from the owner's kind and namespace.
pub(crate) fn check_certificate_refs(
    ix: &Index,
    cluster: &str,
    owner_kind: &str,
    owner_ns: &str,
    tls: &ListenerTls,
) -> CertCheck {
    let mut out = CertCheck {
        certs: vec![],
        sans: vec![],
        sds: vec![],
        errors: vec![],
    };
    for (i, r) in tls.certificate_refs.iter().enumerate() {
        let mut fail = |reason: &'static str, msg: String| {
            out.errors
                .push((reason, format!("certificate refs {i}: {msg}")));
        };
        if r.group.as_deref().is_some_and(|g| !g.is_empty()) {
            fail(
                "InvalidCertificateRef",
                "Listener's TLS certificate ref group must be unspecified/empty.".into(),
            );
            continue;
        }
        if r.kind.as_deref().is_some_and(|k| k != "Secret") {
            fail(
                "InvalidCertificateRef",
                "Listener's TLS certificate ref kind must be Secret.".into(),
            );
            continue;
        }
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(owner_ns);
        if !ix.reference_allowed(
            cluster,
            GATEWAY_GROUP,
            owner_kind,
            owner_ns,
            "",
            "Secret",
            ns,
            &r.name,
        ) {
            fail(
                "RefNotPermitted",
                format!(
                    "Certificate ref to secret {ns}/{} not permitted by any ReferenceGrant.",
                    r.name
                ),
            );
            continue;
        }
        let key = ResourceKey::new(cluster, Kind::Secret, ns, &r.name);
        let Some(Object::Secret(secret)) = ix.resources.get(&key).map(|r| &r.object) else {
            fail(
                "InvalidCertificateRef",
                format!("Secret {ns}/{} does not exist.", r.name),
            );
            continue;
        };
        if is_sds_secret(secret) {
            match sds_ref(secret, ns, &r.name) {
                Ok(found) => out.sds.push(found),
                Err(p) => fail(
                    "InvalidCertificateRef",
                    format!(
                        "Secret {ns}/{} is not a valid SDS reference secret: {p}.",
                        r.name
                    ),
                ),
            }
            continue;
        }
        if secret.type_.as_deref() != Some("kubernetes.io/tls") {
            fail(
                "InvalidCertificateRef",
                format!("Secret {ns}/{} must be of type kubernetes.io/tls.", r.name),
            );
            continue;
        }
        let data = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.clone())
                .filter(|b| !b.is_empty())
        };
        let (Some(cert), Some(key)) = (data("tls.crt"), data("tls.key")) else {
            fail(
                "InvalidCertificateRef",
                format!("Secret {ns}/{} must contain tls.crt and tls.key.", r.name),
            );
            continue;
        };
        // Envoy rejects a listener whose certificate or key does not parse, or whose key is
        // not the certificate's: check here so that such a Secret becomes a condition, not a
        // NACK.
        // Envoy Gateway reports problems with the data itself without the
        // `certificate refs N:` prefix.
        let mut bad_data = |msg: String| {
            out.errors.push((
                "InvalidCertificateRef",
                format!("{ns}/{} must contain {msg}", r.name),
            ))
        };
        let Some(leaf) = pem_block(&cert, &["CERTIFICATE"]) else {
            bad_data("valid tls.crt and tls.key, unable to validate certificate in tls.crt: unable to decode pem data for certificate".into());
            continue;
        };
        let Some(key_der) = pem_block(&key, &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"])
        else {
            bad_data("valid tls.crt and tls.key, unable to validate private key in tls.key: unable to decode pem data for private key".into());
            continue;
        };
        let Some(parsed) = parse_certificate(&leaf.1) else {
            bad_data("valid tls.crt and tls.key, unable to validate certificate in tls.crt: unable to parse certificate".into());
            continue;
        };
        if key_matches(parsed.spki, &key_der.0, &key_der.1) == Some(false) {
            bad_data(
                "a matching tls.crt and tls.key: tls: private key does not match public key."
                    .into(),
            );
            continue;
        }
        out.sans.push(parsed.dns_names);
        out.certs.push(CertPair { cert, key });
    }
    out
}

/// Whether `pem` starts with a parseable PEM certificate (what Envoy takes as a trusted CA).
pub(crate) fn is_pem_certificate(pem: &[u8]) -> bool {
    pem_block(pem, &["CERTIFICATE"]).is_some_and(|(_, der)| parse_certificate(&der).is_some())
}

/// The first PEM block of `data` whose label is one of `labels`: (label, DER bytes).
fn pem_block(data: &[u8], labels: &[&str]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let end_label = after.find("-----")?;
        let label = &after[..end_label];
        let body_start = &after[end_label + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start.find(&end_marker)?;
        if labels.contains(&label) {
            let der = base64_decode(&body_start[..body_end])?;
            return (!der.is_empty()).then(|| (label.to_string(), der));
        }
        rest = &body_start[body_end + end_marker.len()..];
    }
    None
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// One DER element: (tag, contents, rest).
fn der(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed DER value's contents.
fn der_children(mut data: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let (tag, content, rest) = der(data)?;
        out.push((tag, content));
        data = rest;
    }
    Some(out)
}

const SEQ: u8 = 0x30;

/// What Flotilla needs from a certificate.
struct ParsedCert<'a> {
    /// The subjectPublicKeyInfo contents.
    spki: &'a [u8],
    dns_names: Vec<String>,
}

fn parse_certificate(der_bytes: &[u8]) -> Option<ParsedCert<'_>> {
    let (SEQ, cert, _) = der(der_bytes)? else {
        return None;
    };
    let (SEQ, tbs, _) = der(cert)? else {
        return None;
    };
    let mut fields = der_children(tbs)?;
    if fields.first()?.0 == 0xa0 {
        fields.remove(0);
    }
    // serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    let (SEQ, spki) = *fields.get(5)? else {
        return None;
    };
    let mut dns_names = Vec::new();
    if let Some((_, exts)) = fields.iter().find(|(t, _)| *t == 0xa3) {
        let (SEQ, list, _) = der(exts)? else {
            return None;
        };
        for (_, ext) in der_children(list)? {
            let parts = der_children(ext)?;
            // subjectAltName, OID 2.5.29.17
            if parts.first() != Some(&(0x06, &[0x55, 0x1d, 0x11][..])) {
                continue;
            }
            let (_, value) = parts.iter().find(|(t, _)| *t == 0x04)?;
            let (SEQ, names, _) = der(value)? else {
                return None;
            };
            for (tag, name) in der_children(names)? {
                if tag == 0x82 {
                    dns_names.push(String::from_utf8_lossy(name).to_ascii_lowercase());
                }
            }
        }
    }
    Some(ParsedCert { spki, dns_names })
}

/// An INTEGER's magnitude bytes (leading zeros dropped).
fn int_bytes(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|x| **x == 0).count();
    &b[n..]
}

/// Whether the private key (DER, of PEM `label`) belongs to the certificate's public key:
/// `Some(false)` when it provably does not, `None` when the key type is not checked here.
fn key_matches(spki: &[u8], label: &str, key: &[u8]) -> Option<bool> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let spki = der_children(spki)?;
    let (SEQ, alg) = *spki.first()? else {
        return None;
    };
    let cert_alg = der_children(alg)?.first()?.1;
    let (0x03, bits) = *spki.get(1)? else {
        return None;
    };
    let cert_key = bits.get(1..)?;
    let (_, key_seq, _) = der(key)?;
    // Unwrap PKCS#8 to the algorithm's own private key structure.
    let (alg, inner): (&[u8], &[u8]) = match label {
        "RSA PRIVATE KEY" => (RSA, key_seq),
        "EC PRIVATE KEY" => (EC, key_seq),
        _ => {
            let parts = der_children(key_seq)?;
            let (SEQ, alg_id) = *parts.get(1)? else {
                return None;
            };
            let oid = der_children(alg_id)?.first()?.1;
            let (0x04, octets) = *parts.get(2)? else {
                return None;
            };
            let (SEQ, inner, _) = der(octets)? else {
                return None;
            };
            (oid, inner)
        }
    };
    if alg != cert_alg {
        return Some(false);
    }
    if alg == RSA {
        // RSAPrivateKey: version, modulus, publicExponent, ...
        let k = der_children(inner)?;
        let (SEQ, pubkey, _) = der(cert_key)? else {
            return None;
        };
        let p = der_children(pubkey)?;
        Some(
            int_bytes(k.get(1)?.1) == int_bytes(p.first()?.1)
                && int_bytes(k.get(2)?.1) == int_bytes(p.get(1)?.1),
        )
    } else if alg == EC {
        // ECPrivateKey: version, privateKey, [0] parameters, [1] publicKey
        let k = der_children(inner)?;
        let (_, public) = k.iter().find(|(t, _)| *t == 0xa1)?;
        let (0x03, bits, _) = der(public)? else {
            return None;
        };
        Some(bits.get(1..)? == cert_key)
    } else {
        None
    }
}

/// Client certificate validation for a listener (Gateway `spec.tls.frontend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientValidation {
    /// PEM bundle of the trusted CAs.
    pub ca: Vec<u8>,
    /// False in AllowInsecureFallback mode: a client without a certificate is let in.
    pub require: bool,
}

/// The frontend validation that applies to listeners on `port`: the per-port entry if any
/// (whose absent validation disables it), else the default.
pub(crate) fn frontend_validation(
    tls: Option<&GatewayTlsConfig>,
    port: i32,
) -> Option<&FrontendTlsValidation> {
    let f = tls?.frontend.as_ref()?;
    match f.per_port.iter().rev().find(|p| p.port == port) {
        Some(p) => p.tls.validation.as_ref(),
        None => f.default.as_ref()?.validation.as_ref(),
    }
}

const CTB_GROUP: &str = "certificates.k8s.io";

/// Resolves a validation's caCertificateRefs to a PEM bundle, or (reason, message).
pub(crate) fn resolve_client_validation(
    ix: &Index,
    cluster: &str,
    owner_ns: &str,
    v: &FrontendTlsValidation,
) -> Result<ClientValidation, (&'static str, String)> {
    let mut ca = Vec::new();
    for r in &v.ca_certificate_refs {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("ConfigMap");
        let supported = matches!(
            (group, kind),
            ("", "ConfigMap") | ("", "Secret") | (CTB_GROUP, "ClusterTrustBundle")
        );
        if !supported {
            return Err((
                "InvalidCACertificateKind",
                "Unsupported reference kind, supported kinds are ConfigMap, Secret, and ClusterTrustBundle in caCertificateRefs".into(),
            ));
        }
        let ns = r
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(owner_ns);
        if kind != "ClusterTrustBundle"
            && !ix.reference_allowed(
                cluster,
                GATEWAY_GROUP,
                "Gateway",
                owner_ns,
                group,
                kind,
                ns,
                &r.name,
            )
        {
            return Err((
                "RefNotPermitted",
                format!(
                    "cross-namespace reference is not permitted by any ReferenceGrant for caCertificateRef {group}/{} (kind: {kind}, namespace: {ns})",
                    r.name
                ),
            ));
        }
        let pem: Option<Vec<u8>> = match kind {
            "ConfigMap" => {
                let key = ResourceKey::new(cluster, Kind::ConfigMap, ns, &r.name);
                let Some(Object::ConfigMap(cm)) = ix.resources.get(&key).map(|r| &r.object) else {
                    return Err((
                        "InvalidCACertificateRef",
                        format!("configmap {} not found in namespace {ns}", r.name),
                    ));
                };
                cm.data
                    .as_ref()
                    .and_then(|d| d.get("ca.crt"))
                    .map(|s| s.as_bytes().to_vec())
            }
            "Secret" => {
                let key = ResourceKey::new(cluster, Kind::Secret, ns, &r.name);
                let Some(Object::Secret(sec)) = ix.resources.get(&key).map(|r| &r.object) else {
                    return Err((
                        "InvalidCACertificateRef",
                        format!("secret {} not found in namespace {ns}", r.name),
                    ));
                };
                sec.data
                    .as_ref()
                    .and_then(|d| d.get("ca.crt"))
                    .map(|b| b.0.clone())
            }
            _ => {
                let key = ResourceKey::new(cluster, Kind::ClusterTrustBundle, "", &r.name);
                let Some(Object::ClusterTrustBundle(b)) = ix.resources.get(&key).map(|r| &r.object)
                else {
                    return Err((
                        "InvalidCACertificateRef",
                        format!("clustertrustbundle {} not found", r.name),
                    ));
                };
                b.spec
                    .get("trustBundle")
                    .and_then(|v| v.as_str())
                    .map(|s| s.as_bytes().to_vec())
            }
        };
        // Envoy rejects a trusted CA that is not PEM certificates.
        let Some(pem) = pem.filter(|p| {
            pem_block(p, &["CERTIFICATE"]).is_some_and(|(_, der)| parse_certificate(&der).is_some())
        }) else {
            return Err((
                "InvalidCACertificateRef",
                format!(
                    "{} {ns}/{} has no valid CA certificate in ca.crt",
                    kind.to_ascii_lowercase(),
                    r.name
                ),
            ));
        };
        ca.extend_from_slice(&pem);
        if !ca.ends_with(b"\n") {
            ca.push(b'\n');
        }
    }
    Ok(ClientValidation {
        ca,
        require: v.mode.as_deref() != Some("AllowInsecureFallback"),
    })
}

impl Index {
    /// Gateways whose frontend client validation (`spec.tls.frontend`) names the ConfigMap or
    /// Secret `holder`.
    pub(crate) fn gateways_validating_clients_with(
        &self,
        holder: &ResourceKey,
        out: &mut std::collections::BTreeSet<ResourceKey>,
    ) {
        for gw_key in self.gateways_in(&holder.cluster) {
            let Some(Object::Gateway(gw)) = self.resources.get(gw_key).map(|r| &r.object) else {
                continue;
            };
            let Some(f) = gw.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
                continue;
            };
            let validations = f
                .default
                .iter()
                .chain(f.per_port.iter().map(|p| &p.tls))
                .filter_map(|c| c.validation.as_ref());
            let names_it = validations.flat_map(|v| &v.ca_certificate_refs).any(|r| {
                r.name == holder.name
                    && r.namespace.as_deref().unwrap_or(&gw_key.namespace) == holder.namespace
            });
            if names_it {
                out.insert(gw_key.clone());
            }
        }
    }
}

/// The Gateway-level conditions of `spec.tls` (Envoy Gateway's): ResolvedRefs for the
/// frontend CA and backend client certificate references, and InsecureFrontendValidationMode.
/// Empty when the Gateway has no `spec.tls`.
pub(crate) fn gateway_tls_conditions(
    ix: &Index,
    gw_key: &ResourceKey,
    tls: Option<&GatewayTlsConfig>,
    gen: Option<i64>,
) -> Vec<Condition> {
    let Some(tls) = tls else {
        return vec![];
    };
    let (cluster, ns) = (&gw_key.cluster, &gw_key.namespace);
    let mut failure: Option<(&str, String)> = None;
    let mut insecure = false;
    if let Some(f) = &tls.frontend {
        if let Some(v) = f.default.as_ref().and_then(|d| d.validation.as_ref()) {
            insecure |= v.mode.as_deref() == Some("AllowInsecureFallback");
            if let Err((_, e)) = resolve_client_validation(ix, cluster, ns, v) {
                failure = Some((
                    "InvalidParameters",
                    format!("Failed to get default frontend CA certs for gateway: {e}"),
                ));
            }
        }
        for p in &f.per_port {
            if let Some(v) = &p.tls.validation {
                insecure |= v.mode.as_deref() == Some("AllowInsecureFallback");
                if let Err((_, e)) = resolve_client_validation(ix, cluster, ns, v) {
                    failure = Some((
                        "InvalidParameters",
                        format!("Failed to get frontend CA certs for gateway: {e}"),
                    ));
                }
            }
        }
    }
    if let Some(r) = tls
        .backend
        .as_ref()
        .and_then(|b| b.client_certificate_ref.as_ref())
    {
        let kind = r.kind.as_deref().unwrap_or("Secret");
        if r.group.as_deref().is_some_and(|g| !g.is_empty()) || kind != "Secret" {
            failure = Some((
                "InvalidClientCertificateRef",
                format!("Invalid backend client certificate reference for gateway: invalid client certificate reference kind: {kind}"),
            ));
        } else {
            let check = check_certificate_refs(
                ix,
                cluster,
                "Gateway",
                ns,
                &ListenerTls {
                    certificate_refs: vec![r.clone()],
                    ..Default::default()
                },
            );
            if check.certs.is_empty() {
                failure = Some((
                    "InvalidClientCertificateRef",
                    "failed to get backend client certs for gateway".into(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    if insecure {
        out.push(Condition::new(
            "InsecureFrontendValidationMode",
            true,
            "ConfigurationChanged",
            "Gateway is using AllowInsecureFallback frontend validation mode.",
            gen,
        ));
    }
    out.push(match failure {
        Some((reason, msg)) => Condition::new("ResolvedRefs", false, reason, msg, gen),
        None => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "Successfully resolved all TLS references for the gateway",
            gen,
        ),
    });
    out
}

/// The name of the cluster that reaches the SDS server at `url` (`unix:///path`).
pub(crate) fn sds_cluster_name(url: &str) -> String {
    let path = url.strip_prefix("unix://").unwrap_or(url);
    format!("sds_{}", path.replace('/', "_").trim_matches('_'))
}

/// A static HTTP/2 cluster to the SDS server's unix socket, as Envoy Gateway builds it.
pub(crate) fn sds_cluster(url: &str) -> std::sync::Arc<crate::XdsResource> {
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    use envoy_types::pb::envoy::config::core::v3::{address, Address, Pipe};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
    };
    let name = sds_cluster_name(url);
    let path = url.strip_prefix("unix://").unwrap_or(url);
    let c = Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 10,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::Pipe(Pipe {
                                path: path.to_string(),
                                mode: 0,
                            })),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    // gRPC: HTTP/2 to the server.
    let mut c = c;
    crate::traffic::set_protocol_options(
        &mut c,
        crate::traffic::protocol_options(crate::traffic::UpstreamHttp::Http2, None),
    );
    crate::envoy::encode(crate::type_url::CLUSTER, &name, &c)
}

/// The downstream TLS context serving `certs`, with ALPN `alpn` (the
/// `envoy.transport_sockets.tls` socket is [`tls_transport_socket`] of it).
pub(crate) fn downstream_tls_context(
    certs: &ServingCerts,
    alpn: &[&str],
    client: Option<&ClientValidation>,
) -> DownstreamTlsContext {
    let inline = |b: &[u8]| DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(b.to_vec())),
        ..Default::default()
    };
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: certs.sds.iter().map(sds_secret_config).collect(),
            tls_certificates: certs
                .inline
                .iter()
                .map(|c| TlsCertificate {
                    certificate_chain: Some(inline(&c.cert)),
                    private_key: Some(inline(&c.key)),
                    ..Default::default()
                })
                .collect(),
            alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
            validation_context_type: client.map(|c| {
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(inline(&c.ca)),
                        ..Default::default()
                    },
                )
            }),
            ..Default::default()
        }),
        require_client_certificate: client.map(|c| BoolValue { value: c.require }),
        ..Default::default()
    }
}

/// A downstream TLS transport socket with context `ctx`.
pub(crate) fn tls_transport_socket(ctx: &DownstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any(
                    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    ctx,
                ),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sds_reference_secrets() {
        let secret = |url: &str, name: &str| {
            let mut data = std::collections::BTreeMap::new();
            data.insert(
                "url".to_string(),
                k8s_openapi::ByteString(url.as_bytes().to_vec()),
            );
            data.insert(
                "secretName".to_string(),
                k8s_openapi::ByteString(name.as_bytes().to_vec()),
            );
            k8s_openapi::api::core::v1::Secret {
                type_: Some(SDS_SECRET_TYPE.into()),
                data: Some(data),
                ..Default::default()
            }
        };
        assert_eq!(
            sds_ref(&secret("unix:///run/sds.sock", "cert"), "ns", "s"),
            Ok(SdsRef {
                url: "unix:///run/sds.sock".into(),
                secret: "cert".into()
            })
        );
        assert!(sds_ref(&secret("unix://", "cert"), "ns", "s")
            .unwrap_err()
            .contains("1 to 107 bytes"));
        let long = format!("unix:///{}", "a".repeat(120));
        assert!(sds_ref(&secret(&long, "cert"), "ns", "s").is_err());
        assert_eq!(
            sds_ref(&secret("tcp://1.2.3.4:1", "cert"), "ns", "s"),
            Err("invalid URL in SDS reference secret ns/s: unsupported URL scheme: tcp".into())
        );
        assert_eq!(
            sds_ref(&secret("unix:///x", ""), "ns", "s"),
            Err("no secretName found in SDS reference secret ns/s".into())
        );
        assert_eq!(sds_cluster_name("unix:///run/sds.sock"), "sds_run_sds.sock");
    }

    #[test]
    fn pem_blocks_and_base64() {
        let cert = b"-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_block(cert, &["CERTIFICATE"]),
            Some(("CERTIFICATE".to_string(), b"MIIB".to_vec()))
        );
        assert_eq!(pem_block(cert, &["PRIVATE KEY"]), None);
        assert_eq!(pem_block(b"not pem", &["CERTIFICATE"]), None);
        assert_eq!(
            pem_block(
                b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
                &["CERTIFICATE"]
            ),
            None
        );
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("a*b"), None);
    }

    #[test]
    fn der_lengths() {
        assert_eq!(
            der(&[0x30, 0x01, 0x05, 0xff]),
            Some((0x30, &[0x05][..], &[0xff][..]))
        );
        assert_eq!(
            der(&[0x30, 0x81, 0x01, 0x05]),
            Some((0x30, &[0x05][..], &[][..]))
        );
        assert_eq!(der(&[0x30, 0x05, 0x05]), None);
        assert!(parse_certificate(&[0x30, 0x00]).is_none());
    }
}
