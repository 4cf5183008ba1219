//! BackendTLSPolicy (and Envoy Gateway Backend `spec.tls`): which policy applies to a backend,
//! whether its CA references resolve, the policy's ancestor status as Envoy Gateway writes it,
//! and the Envoy `UpstreamTlsContext` a valid policy produces.

use crate::envoy::any;
use crate::index::Index;
use crate::values::Age;
use envoy_types::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, subject_alt_name_matcher, CertificateValidationContext, CommonTlsContext,
    SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
use flotilla_model::gateway::Condition;
use flotilla_model::refs::{BackendTlsPolicy, LocalObjectRef};
use flotilla_model::{Kind, Object, ResourceKey};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The system trust store of the proxy host (Debian/Ubuntu/Alpine path, as Envoy Gateway's
/// proxy image has it).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Envoy Gateway caps `status.ancestors` at 16 entries (the Gateway API's MaxItems).
const MAX_ANCESTORS: usize = 16;

/// The backend a backendRef names, as a BackendTLSPolicy target: group and kind as the
/// backendRef spells them, and the section (a Service/ServiceImport port's name, an Envoy
/// Gateway Backend's port number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsTarget {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub section: Option<String>,
}

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
    /// The BackendTLSPolicies of one namespace in precedence order: oldest first, then name.
    pub fn tls_policies_in<'a>(
        &'a self,
        cluster: &str,
        ns: &str,
    ) -> Vec<(&'a ResourceKey, &'a BackendTlsPolicy)> {
        let start = ResourceKey::new(cluster, Kind::BackendTLSPolicy, ns, "");
        let mut out: Vec<_> = self
            .resources
            .range(start..)
            .take_while(|(k, _)| {
                k.cluster == cluster && k.kind == Kind::BackendTLSPolicy && k.namespace == ns
            })
            .filter_map(|(k, r)| match &r.object {
                Object::BackendTLSPolicy(p) => Some((k, p)),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| {
            Age::of(&a.1.metadata, a.0)
                .cmp(&Age::of(&b.1.metadata, b.0))
                .then_with(|| a.0.cmp(b.0))
        });
        out
    }

    /// The policy that applies to `target`: among the policies of the target's namespace, the
    /// first (in precedence order) whose targetRef names the target's exact section, else the
    /// first whose targetRef names the whole backend.
    pub fn tls_policy_for<'a>(
        &'a self,
        cluster: &str,
        target: &TlsTarget,
    ) -> Option<(&'a ResourceKey, &'a BackendTlsPolicy)> {
        let policies = self.tls_policies_in(cluster, &target.namespace);
        let names = |p: &BackendTlsPolicy, section: Option<&str>| {
            p.spec.target_refs.iter().any(|t| {
                t.group == target.group
                    && t.kind == target.kind
                    && t.name == target.name
                    && t.section_name.as_deref() == section
            })
        };
        if let Some(section) = target.section.as_deref() {
            if let Some(hit) = policies.iter().find(|(_, p)| names(p, Some(section))) {
                return Some(*hit);
            }
        }
        policies.into_iter().find(|(_, p)| names(p, None))
    }

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

/// Envoy Gateway's `Error2ConditionMsg`: first letter upper-cased, a closing period.
pub(crate) fn condition_message(msg: &str) -> String {
    let mut c = msg.chars();
    let mut out = match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// The conditions a policy carries at each of its ancestors.
fn policy_conditions(ix: &Index, key: &ResourceKey, p: &BackendTlsPolicy) -> Vec<Condition> {
    let gen = p.metadata.generation;
    match ix.tls_bundle(&key.cluster, &key.namespace, p) {
        Ok(_) => vec![
            Condition::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Resolved all the Object references.",
                gen,
            ),
            Condition::new(
                "Accepted",
                true,
                "Accepted",
                "Policy has been accepted.",
                gen,
            ),
        ],
        Err(e) => {
            let msg = condition_message(&e.message);
            vec![
                Condition::new("Accepted", false, "NoValidCACertificate", msg.clone(), gen),
                Condition::new(
                    "ResolvedRefs",
                    false,
                    if e.invalid_kind {
                        "InvalidKind"
                    } else {
                        "InvalidCACertificateRef"
                    },
                    msg,
                    gen,
                ),
            ]
        }
    }
}

/// The policies of one namespace that lose a target to an older policy, with the winner
/// (Envoy Gateway's `ProcessBackendTLSPolicyStatus`: the first policy to claim a
/// group/kind/name/section target owns it).
fn conflicts(ix: &Index, cluster: &str, ns: &str) -> BTreeMap<ResourceKey, ResourceKey> {
    let mut claimed: BTreeMap<(String, String, String, String), &ResourceKey> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (key, p) in ix.tls_policies_in(cluster, ns) {
        for t in &p.spec.target_refs {
            let target = (
                t.group.clone(),
                t.kind.clone(),
                t.name.clone(),
                t.section_name.clone().unwrap_or_default(),
            );
            if let Some(winner) = claimed.get(&target) {
                out.insert(key.clone(), (*winner).clone());
                break;
            }
            claimed.insert(target, key);
        }
    }
    out
}

/// Computes the status of every BackendTLSPolicy of (cluster, namespace) from the ancestors
/// recorded by gateway translation (`ancestors`: policy → ancestorRefs, in order).
pub(crate) fn namespace_statuses(
    ix: &Index,
    cluster: &str,
    ns: &str,
    ancestors: &dyn Fn(&ResourceKey) -> Vec<Value>,
    controller: &str,
) -> Vec<(ResourceKey, Option<Value>)> {
    let conflicted = conflicts(ix, cluster, ns);
    let mut out = Vec::new();
    for (key, p) in ix.tls_policies_in(cluster, ns) {
        let gen = p.metadata.generation;
        let conds = policy_conditions(ix, key, p);
        let mut list: Vec<(Value, Vec<Condition>)> = Vec::new();
        for a in ancestors(key) {
            if !list.iter().any(|(r, _)| *r == a) {
                list.push((a, conds.clone()));
            }
        }
        if let Some(winner) = conflicted.get(key) {
            let cond = Condition::new(
                "Accepted",
                false,
                "Conflicted",
                format!(
                    "Policy conflicts with BackendTLSPolicy {}/{}.",
                    winner.namespace, winner.name
                ),
                gen,
            );
            for a in ancestors(winner) {
                match list.iter_mut().find(|(r, _)| *r == a) {
                    Some((_, cs)) => set_condition(cs, cond.clone()),
                    None => list.push((a, vec![cond.clone()])),
                }
            }
        }
        if list.is_empty() {
            out.push((key.clone(), None));
            continue;
        }
        if list.len() > MAX_ANCESTORS {
            truncate(&mut list, gen);
        }
        let ancestors: Vec<Value> = list
            .into_iter()
            .map(|(r, conds)| {
                json!({"ancestorRef": r, "controllerName": controller, "conditions": conds})
            })
            .collect();
        out.push((key.clone(), Some(json!({ "ancestors": ancestors }))));
    }
    out
}

/// The BackendTLSPolicy ancestors one gateway contributes: for every route attached to it (or
/// to one of its ListenerSets), in Envoy Gateway's route order, each parentRef naming this
/// gateway becomes an ancestor of the policies its backends use.
pub(crate) fn gateway_tls_ancestors(
    ix: &Index,
    gw_key: &ResourceKey,
    sets: &[crate::listener::SetInfo],
) -> BTreeMap<ResourceKey, Vec<Value>> {
    let mut out: BTreeMap<ResourceKey, Vec<Value>> = BTreeMap::new();
    // Most clusters have no BackendTLSPolicy at all: nothing to walk then.
    let first = ResourceKey::new(&gw_key.cluster, Kind::BackendTLSPolicy, "", "");
    if !ix
        .resources
        .range(first..)
        .next()
        .is_some_and(|(k, _)| k.cluster == gw_key.cluster && k.kind == Kind::BackendTLSPolicy)
    {
        return out;
    }
    let mut keys: Vec<&ResourceKey> = std::iter::once(gw_key)
        .chain(sets.iter().map(|s| &s.key))
        .flat_map(|k| ix.routes_of_gateway(k))
        .collect();
    keys.sort();
    keys.dedup();
    // Envoy Gateway meets the routes kind by kind (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute,
    // UDPRoute: the order of `Kind`), each kind oldest first, then namespace/name.
    let mut routes: Vec<(Kind, Age, &ResourceKey, &Object)> = keys
        .into_iter()
        .filter_map(|k| {
            let r = ix.resources.get(k)?;
            Some((k.kind, Age::of(r.object.metadata(), k), k, &r.object))
        })
        .collect();
    routes.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    for (_, _, k, obj) in routes {
        let Some((parents, refs)) = route_refs(obj) else {
            continue;
        };
        let policies = crate::backend::tls_policies_of(ix, k, refs);
        if policies.is_empty() {
            continue;
        }
        for pref in parents {
            if !crate::listener::refers_to(sets, pref, &k.namespace, gw_key) {
                continue;
            }
            let v = serde_json::to_value(pref).unwrap_or(Value::Null);
            for p in &policies {
                let list = out.entry(p.clone()).or_default();
                if !list.contains(&v) {
                    list.push(v.clone());
                }
            }
        }
    }
    out
}

/// A route's parentRefs and the backendRefs of all its rules.
fn route_refs(
    obj: &Object,
) -> Option<(
    &[flotilla_model::gateway::ParentReference],
    Vec<&flotilla_model::gateway::HttpBackendRef>,
)> {
    Some(match obj {
        Object::HTTPRoute(h) => (
            &h.spec.parent_refs,
            h.spec.rules.iter().flat_map(|r| &r.backend_refs).collect(),
        ),
        Object::GRPCRoute(g) => (
            &g.spec.parent_refs,
            g.spec.rules.iter().flat_map(|r| &r.backend_refs).collect(),
        ),
        Object::TLSRoute(flotilla_model::routes::TlsRoute { spec, .. })
        | Object::TCPRoute(flotilla_model::routes::TcpRoute { spec, .. })
        | Object::UDPRoute(flotilla_model::routes::UdpRoute { spec, .. }) => (
            &spec.parent_refs,
            spec.rules.iter().flat_map(|r| &r.backend_refs).collect(),
        ),
        _ => return None,
    })
}

fn set_condition(conds: &mut Vec<Condition>, c: Condition) {
    match conds.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => conds.push(c),
    }
}

/// Envoy Gateway's `TruncatePolicyAncestors`: not-accepted ancestors first, then by namespace
/// and name; keep 16 and mark the last one Aggregated.
fn truncate(list: &mut Vec<(Value, Vec<Condition>)>, gen: Option<i64>) {
    let rank = |conds: &[Condition]| {
        if conds
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "False")
        {
            0
        } else {
            2
        }
    };
    let field = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    list.sort_by(|a, b| {
        (rank(&a.1), field(&a.0, "namespace"), field(&a.0, "name")).cmp(&(
            rank(&b.1),
            field(&b.0, "namespace"),
            field(&b.0, "name"),
        ))
    });
    list.truncate(MAX_ANCESTORS);
    if let Some((_, conds)) = list.last_mut() {
        set_condition(
            conds,
            Condition::new(
                "Aggregated",
                true,
                "Aggregated",
                "Ancestors have been truncated because the number of policy ancestors exceeds 16.",
                gen,
            ),
        );
    }
}

#[cfg(test)]
mod tests;
