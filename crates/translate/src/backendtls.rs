//! Upstream TLS: what an attached BackendTLSPolicy (and an Envoy Gateway Backend's
//! `spec.tls`) makes of a backend's TLS (CA sources, SNI, SANs), whether its CA references
//! resolve, and the Envoy `UpstreamTlsContext` it produces. Which policy is attached to a
//! backend, conflicts and the policy's status are policy attachment's
//! (`crate::policy::backendtls`).

use crate::envoy::any;
use crate::index::Index;
use envoy_types::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, subject_alt_name_matcher, CertificateValidationContext, CommonTlsContext,
    SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use flotilla_model::refs::{Backend, BackendTlsPolicy, LocalObjectRef};
use flotilla_model::{Kind, Object, ResourceKey};
use serde_json::Value;
use std::collections::BTreeMap;

/// The system trust store of the proxy host (Debian/Ubuntu/Alpine path, as Envoy Gateway's
/// proxy image has it).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where the CA bundle comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CaSource {
    /// The proxy's system trust store (`wellKnownCACertificates: System`).
    System,
    /// PEM certificates, inline.
    Pem(String),
    /// No verification (`Backend.spec.tls.insecureSkipVerify`).
    Insecure,
    /// From an SDS server (a `gateway.envoyproxy.io/sds` Secret).
    Sds(crate::tls::SdsRef),
}

/// Upstream TLS settings after merging a Backend's `spec.tls` with a BackendTLSPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UpstreamTls {
    pub sni: Option<String>,
    pub ca: CaSource,
    /// (type, value): type is "DNS" or "URI".
    pub sans: Vec<(&'static str, String)>,
}

/// Why a policy's CA references do not resolve. `invalid_kind` selects the ResolvedRefs reason
/// (InvalidKind when nothing usable was referenced at all, InvalidCACertificateRef otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsError {
    pub message: String,
    pub invalid_kind: bool,
}

impl Index {
    /// Resolves a policy's validation settings (Envoy Gateway's `getBackendTLSBundle`).
    pub fn tls_bundle(
        &self,
        cluster: &str,
        ns: &str,
        p: &BackendTlsPolicy,
    ) -> Result<UpstreamTls, TlsError> {
        let v = &p.spec.validation;
        let sans = v
            .subject_alt_names
            .iter()
            .filter_map(|s| match s.type_.as_str() {
                "Hostname" => s.hostname.clone().map(|h| ("DNS", h)),
                "URI" => s.uri.clone().map(|u| ("URI", u)),
                _ => None,
            })
            .collect();
        let ca = if v.well_known_ca_certificates.as_deref() == Some("System") {
            CaSource::System
        } else {
            self.ca_source(cluster, ns, &v.ca_certificate_refs)?
        };
        Ok(UpstreamTls {
            sni: Some(v.hostname.clone()).filter(|h| !h.is_empty()),
            ca,
            sans,
        })
    }

    /// The CA of a list of references: one SDS reference Secret alone, or else the PEM bundle
    /// of the others (Envoy Gateway's rules and wording for SDS CAs).
    pub fn ca_source(
        &self,
        cluster: &str,
        ns: &str,
        refs: &[LocalObjectRef],
    ) -> Result<CaSource, TlsError> {
        let fail = |message: String| TlsError {
            message,
            invalid_kind: false,
        };
        let sds: Vec<(&LocalObjectRef, &k8s_openapi::api::core::v1::Secret)> = refs
            .iter()
            .filter(|r| r.kind == "Secret")
            .filter_map(|r| {
                let key = ResourceKey::new(cluster, Kind::Secret, ns, &r.name);
                match self.resources.get(&key).map(|x| &x.object) {
                    Some(Object::Secret(s)) if crate::tls::is_sds_secret(s) => Some((r, s)),
                    _ => None,
                }
            })
            .collect();
        let Some((r, secret)) = sds.first() else {
            return self.ca_bundle(cluster, ns, refs).map(CaSource::Pem);
        };
        if !self.options.sds {
            return Err(fail(
                "SDS Secret reference is not enabled in EnvoyGateway configuration".into(),
            ));
        }
        if sds.len() > 1 {
            return Err(fail(
                "multiple SDS reference secrets are not supported".into(),
            ));
        }
        if refs.len() > 1 {
            return Err(fail(
                "cannot mix SDS reference secrets with other CA certificate types".into(),
            ));
        }
        crate::tls::sds_ref(secret, ns, &r.name)
            .map(CaSource::Sds)
            .map_err(|p| fail(format!("invalid SDS reference secret {}: {p}", r.name)))
    }

    /// Concatenates the CA certificates of ConfigMap, Secret and ClusterTrustBundle references
    /// (Envoy Gateway's `getCaCertsFromCARefs`), and checks that the result is PEM Envoy can load.
    pub fn ca_bundle(
        &self,
        cluster: &str,
        ns: &str,
        refs: &[LocalObjectRef],
    ) -> Result<String, TlsError> {
        let fail = |message: String| TlsError {
            message,
            invalid_kind: false,
        };
        let mut ca = String::new();
        let mut push = |crt: &str| {
            if !ca.is_empty() {
                ca.push('\n');
            }
            ca.push_str(crt);
        };
        for r in refs {
            match r.kind.as_str() {
                "ConfigMap" => {
                    let key = ResourceKey::new(cluster, Kind::ConfigMap, ns, &r.name);
                    let Some(Object::ConfigMap(cm)) = self.resources.get(&key).map(|x| &x.object)
                    else {
                        return Err(fail(format!(
                            "configmap {} not found in namespace {ns}",
                            r.name
                        )));
                    };
                    match cm.data.as_ref().and_then(ca_or_first) {
                        Some(crt) => push(crt),
                        None => return Err(fail(format!("no ca found in configmap {}", r.name))),
                    }
                }
                "Secret" => {
                    let key = ResourceKey::new(cluster, Kind::Secret, ns, &r.name);
                    let Some(Object::Secret(s)) = self.resources.get(&key).map(|x| &x.object)
                    else {
                        return Err(fail(format!(
                            "secret {} not found in namespace {ns}",
                            r.name
                        )));
                    };
                    let data: Option<BTreeMap<String, String>> = s.data.as_ref().map(|d| {
                        d.iter()
                            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                            .collect()
                    });
                    match data.as_ref().and_then(ca_or_first) {
                        Some(crt) => push(crt),
                        None => return Err(fail(format!("no ca found in secret {}", r.name))),
                    }
                }
                "ClusterTrustBundle" => {
                    let key = ResourceKey::new(cluster, Kind::ClusterTrustBundle, "", &r.name);
                    let bundle = match self.resources.get(&key).map(|x| &x.object) {
                        Some(Object::ClusterTrustBundle(b)) => b
                            .spec
                            .get("trustBundle")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        _ => {
                            return Err(fail(format!("cluster trust bundle {} not found", r.name)))
                        }
                    };
                    push(bundle);
                }
                _ => {}
            }
        }
        if ca.is_empty() {
            return Err(TlsError {
                message:
                    "no CA bundle found in referenced ConfigMap, Secret, or ClusterTrustBundle"
                        .into(),
                invalid_kind: true,
            });
        }
        // Envoy rejects (NACKs) a cluster whose trusted CA holds no loadable certificate; say so
        // here, on the policy, instead.
        if !pem_has_certificate(&ca) {
            return Err(fail(
                "the referenced CA bundle holds no valid PEM certificate".into(),
            ));
        }
        Ok(ca)
    }
}

/// The merged upstream TLS of a backend: its Backend `spec.tls` (if an Envoy Gateway Backend
/// in namespace `ns`) overridden by the BackendTLSPolicy attached to it, for what the policy
/// sets (Envoy Gateway's `applyBackendTLSSetting`). `None`: plaintext. An error is the reason
/// the backendRef is refused (InvalidBackendTLS).
pub(crate) fn upstream_tls(
    ix: &Index,
    cluster: &str,
    backend: Option<(&str, &Backend)>,
    policy: Option<(&ResourceKey, &BackendTlsPolicy)>,
) -> Result<Option<UpstreamTls>, String> {
    let from_backend = match backend.and_then(|(ns, be)| be.spec.tls.as_ref().map(|t| (ns, t))) {
        None => None,
        Some((ns, t)) => {
            let insecure = t.insecure_skip_verify.unwrap_or(false);
            let ca = if insecure {
                CaSource::Insecure
            } else if t.well_known_ca_certificates.as_deref() == Some("System") {
                CaSource::System
            } else if !t.ca_certificate_refs.is_empty() {
                ix.ca_source(cluster, ns, &t.ca_certificate_refs)
                    .map_err(|e| e.message)?
            } else {
                return Err(
                    "CACertificate must be specified when InsecureSkipVerify is false".into(),
                );
            };
            Some(UpstreamTls {
                sni: t.sni.clone(),
                ca,
                sans: vec![],
            })
        }
    };
    let from_policy = match policy {
        None => None,
        Some((key, p)) => Some(
            ix.tls_bundle(cluster, &key.namespace, p)
                .map_err(|e| e.message)?,
        ),
    };
    Ok(match (from_backend, from_policy) {
        (b, None) => b,
        (None, p) => p,
        (Some(mut b), Some(p)) => {
            // The policy wins for what it sets.
            b.ca = p.ca;
            if p.sni.is_some() {
                b.sni = p.sni;
            }
            if !p.sans.is_empty() {
                b.sans = p.sans;
            }
            Some(b)
        }
    })
}

/// `ca.crt` if present, else the first key's value (Envoy Gateway's `getOrFirstFromData`).
fn ca_or_first(data: &BTreeMap<String, String>) -> Option<&str> {
    data.get("ca.crt")
        .or_else(|| data.values().next())
        .map(String::as_str)
}

/// Whether `pem` holds at least one CERTIFICATE block whose body is base64 of a DER SEQUENCE
/// with a consistent length, and every CERTIFICATE block does.
pub(crate) fn pem_has_certificate(pem: &str) -> bool {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut rest = pem;
    let mut found = 0;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let Some(end) = after.find(END) else {
            return false;
        };
        let body: String = after[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        match base64_decode(&body) {
            Some(der) if der_sequence_ok(&der) => found += 1,
            _ => return false,
        }
        rest = &after[end + END.len()..];
    }
    found > 0
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A DER SEQUENCE whose (definite) length covers exactly the rest of the bytes.
fn der_sequence_ok(der: &[u8]) -> bool {
    if der.len() < 2 || der[0] != 0x30 {
        return false;
    }
    let (len, header) = match der[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81..=0x84 => {
            let k = (der[1] & 0x7f) as usize;
            if der.len() < 2 + k {
                return false;
            }
            let len = der[2..2 + k]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize);
            (len, 2 + k)
        }
        _ => return false,
    };
    header + len == der.len()
}

/// The TLS transport socket for an upstream cluster.
pub(crate) fn transport_socket(tls: &UpstreamTls) -> TransportSocket {
    let validation = match &tls.ca {
        CaSource::Insecure => None,
        ca => {
            let mut v = CertificateValidationContext::default();
            match ca {
                CaSource::System => {
                    // Envoy refuses SAN checks without `trusted_ca` (its `system_root_certs` does
                    // not count), so name the system bundle as Envoy Gateway does.
                    v.trusted_ca = Some(DataSource {
                        specifier: Some(data_source::Specifier::Filename(
                            SYSTEM_CA_BUNDLE.to_string(),
                        )),
                        ..Default::default()
                    });
                }
                CaSource::Pem(pem) => {
                    v.trusted_ca = Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(pem.clone())),
                        ..Default::default()
                    });
                }
                CaSource::Insecure | CaSource::Sds(_) => {}
            }
            // Without explicit SANs, the server certificate must match the SNI hostname.
            let sans: Vec<(&str, String)> = if tls.sans.is_empty() {
                tls.sni.iter().map(|h| ("DNS", h.clone())).collect()
            } else {
                tls.sans.clone()
            };
            v.match_typed_subject_alt_names = sans
                .into_iter()
                .map(|(t, value)| SubjectAltNameMatcher {
                    san_type: if t == "URI" {
                        subject_alt_name_matcher::SanType::Uri as i32
                    } else {
                        subject_alt_name_matcher::SanType::Dns as i32
                    },
                    matcher: Some(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(value)),
                        ignore_case: false,
                    }),
                    ..Default::default()
                })
                .collect();
            Some(match ca {
                // The CA from SDS, the name checks from here.
                CaSource::Sds(r) => {
                    common_tls_context::ValidationContextType::CombinedValidationContext(
                        common_tls_context::CombinedCertificateValidationContext {
                            default_validation_context: Some(v),
                            validation_context_sds_secret_config: Some(
                                crate::tls::sds_secret_config(r),
                            ),
                            ..Default::default()
                        },
                    )
                }
                _ => common_tls_context::ValidationContextType::ValidationContext(v),
            })
        }
    };
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: validation,
            ..Default::default()
        }),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &ctx,
        ))),
    }
}

#[cfg(test)]
pub(crate) mod tests;
