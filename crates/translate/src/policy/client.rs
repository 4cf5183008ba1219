//! ClientTrafficPolicy fields → Envoy: the spec read once into typed, validated
//! [`ClientSettings`] (here, after the checks of [`schema`]), and their application ([`xds`])
//! to the Envoy Listener, its filter chains, the HTTP connection manager and the downstream
//! TLS context, as Envoy Gateway's xDS translator writes them
//! (`internal/xds/translator/listener.go`, `buildXdsTCPListener`, `addHCMToXDSListener`,
//! `buildXdsDownstreamTLSSocket`).
//!
//! Which policy configures which listener is decided by [`super::ctp`]; a policy whose fields are
//! invalid (its status says why, from [`invalid`]) configures nothing, and its
//! listeners fail closed as in Envoy Gateway ([`xds::fail_closed`]).
//!
//! A listener with a policy gets Envoy Gateway's HTTP connection manager defaults too, whatever
//! fields the policy sets: the peer address is the client's (`use_remote_address`), headers
//! with underscores are refused, paths are normalized with merged slashes and escaped slashes
//! redirected, HTTP/2 takes Envoy Gateway's stream and window limits, the router adds no
//! `x-envoy-*` headers, and TLS is 1.2 to 1.3. Listeners without a policy keep Flotilla's
//! (Envoy's) defaults.
//!
//! Listeners that share an Envoy listener: Envoy Gateway builds one Envoy listener per address
//! and port, created by the first Gateway listener (in listener order) on that port; the
//! listener-level settings (TCP keepalive socket options, the per-connection buffer limit, the
//! PROXY protocol listener filter) are that first listener's. Plain HTTP listeners of one port
//! share its default filter chain and HTTP connection manager, which the first of them creates
//! with its policy's settings: the later ones only add routes. (Envoy Gateway refuses a policy
//! that would configure only some of the plain HTTP listeners of a port, see
//! `validatePortOverlapForClientTrafficPolicy`, so the first listener's policy is normally the
//! policy of all of them.) HTTPS listeners each have their own filter chain and HCM, which carry
//! their own policy's settings.

use crate::index::Index;
pub(crate) use crate::ir::client::{
    ClientCa, ClientIp, ClientSettings, ConnectionLimit, HeaderOp, Http1, Http2, Keepalive,
    RequestId, StrMatch, Tls, Xfcc,
};
use crate::values::GoDuration;
use envoy_types::pb::envoy::config::core::v3::http_protocol_options;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use flotilla_model::{Kind, Object, ResourceKey};
use schema::{bool_at, dur_at, quantity_at, str_at, str_match, tls_version, u32_at};
pub(crate) use schema::{deprecated_fields, invalid, parse_cidr};
use serde_json::Value;

/// Envoy Gateway's refusal of `http10.useDefaultHost` on a listener with no hostname to use.
/// (Envoy Gateway then falls back to the one non-wildcard hostname of the listener's routes;
/// this controller does not.)
pub(crate) fn http10_default_host_error(spec: &Value) -> Option<String> {
    (bool_at(spec, "/http1/http10/useDefaultHost") == Some(true)).then(|| {
        "HTTP1: cannot set http10 default host on listener with only wildcard hostnames."
            .to_string()
    })
}

/// The settings for a listener with hostname `hostname`: with `http10.useDefaultHost`, that
/// hostname becomes the default host, and a listener without one takes no settings (its
/// policy's status says why).
pub(crate) fn for_listener(
    mut s: ClientSettings,
    hostname: Option<&str>,
) -> Option<ClientSettings> {
    // Envoy does not validate client certificates over QUIC: Envoy Gateway leaves HTTP/3 off
    // there (and warns, see [`http3_warning`]).
    if s.tls.client_ca.is_some() {
        s.http3 = false;
    }
    if let Some(h1) = s.http1.as_mut().filter(|h| h.use_default_host) {
        let h = hostname.filter(|h| !h.contains('*'))?;
        h1.default_host = Some(h.to_string());
    }
    Some(s)
}

/// The `subjectAltNames` matchers of a client validation, in Envoy Gateway's order.
fn san_matchers(cv: &Value) -> Vec<(SanType, StrMatch, String)> {
    let mut out = Vec::new();
    for (field, t) in [
        ("dnsNames", SanType::Dns),
        ("emailAddresses", SanType::Email),
        ("ipAddresses", SanType::IpAddress),
        ("uris", SanType::Uri),
        ("otherNames", SanType::OtherName),
    ] {
        for m in cv
            .pointer(&format!("/subjectAltNames/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(sm) = str_match(m) {
                let oid = m.get("oid").and_then(Value::as_str).unwrap_or_default();
                out.push((t, sm, oid.to_string()));
            }
        }
    }
    out
}

fn header_ops(spec: &Value, p: &str) -> Vec<HeaderOp> {
    let Some(f) = spec.pointer(p) else {
        return vec![];
    };
    let pairs = |op: &str| -> Vec<(String, String)> {
        f.get(op)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|h| {
                let s = |k: &str| {
                    h.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                (s("name"), s("value"))
            })
            .collect()
    };
    let mut out: Vec<HeaderOp> = Vec::new();
    out.extend(pairs("set").into_iter().map(|(n, v)| HeaderOp::Set(n, v)));
    out.extend(pairs("add").into_iter().map(|(n, v)| HeaderOp::Add(n, v)));
    out.extend(
        pairs("addIfAbsent")
            .into_iter()
            .map(|(n, v)| HeaderOp::AddIfAbsent(n, v)),
    );
    out.extend(
        f.get("remove")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(|n| HeaderOp::Remove(n.to_string()))),
    );
    out.extend(
        f.get("removeOnMatch")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(str_match)
            .map(HeaderOp::RemoveOnMatch),
    );
    out
}

/// Whole seconds of a duration, as Envoy Gateway keeps them for keepalive (`d.Seconds()`
/// truncated to a uint32).
fn whole_seconds(d: GoDuration) -> u32 {
    u32::try_from(d.to_proto().seconds.max(0)).unwrap_or(u32::MAX)
}

/// The policy's settings, or why they cannot be used (the same message as its status).
pub(crate) fn parse(spec: &Value) -> Result<ClientSettings, String> {
    if let Some(msg) = invalid(spec) {
        return Err(msg);
    }
    let keepalive = spec.pointer("/tcpKeepalive").map(|_| Keepalive {
        probes: u32_at(spec, "/tcpKeepalive/probes"),
        idle_time: dur_at(spec, "/tcpKeepalive/idleTime").map(whole_seconds),
        interval: dur_at(spec, "/tcpKeepalive/interval").map(whole_seconds),
    });
    let connection_limit = spec
        .pointer("/connection/connectionLimit/value")
        .and_then(Value::as_u64)
        .map(|max| ConnectionLimit {
            max,
            close_delay: dur_at(spec, "/connection/connectionLimit/closeDelay"),
        });
    let proxy_protocol = match spec.pointer("/proxyProtocol") {
        // The newer field wins over the deprecated `enableProxyProtocol`.
        Some(_) => Some(
            bool_at(spec, "/proxyProtocol/optional")
                .or(bool_at(
                    spec,
                    "/proxyProtocol/allowRequestsWithoutProxyProtocol",
                ))
                .unwrap_or(false),
        ),
        None => bool_at(spec, "/enableProxyProtocol")
            .unwrap_or(false)
            .then_some(false),
    };
    let client_ip = if let Some(name) = str_at(spec, "/clientIPDetection/customHeader/name") {
        Some(ClientIp::Header {
            name: name.to_string(),
            fail_closed: bool_at(spec, "/clientIPDetection/customHeader/failClosed")
                .unwrap_or(false),
        })
    } else if let Some(cidrs) = spec
        .pointer("/clientIPDetection/xForwardedFor/trustedCIDRs")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        Some(ClientIp::XffTrusted {
            cidrs: cidrs
                .iter()
                .filter_map(|c| c.as_str().and_then(parse_cidr))
                .collect(),
        })
    } else {
        u32_at(spec, "/clientIPDetection/xForwardedFor/numTrustedHops")
            .map(|hops| ClientIp::Xff { hops })
    };
    use http_protocol_options::HeadersWithUnderscoresAction as U;
    let with_underscores = match str_at(spec, "/headers/withUnderscoresAction") {
        Some("Allow") => U::Allow,
        Some("DropHeader") => U::DropHeader,
        _ => U::RejectRequest,
    };
    let request_id = match str_at(spec, "/headers/requestID") {
        Some("PreserveOrGenerate") => Some(RequestId::PreserveOrGenerate),
        Some("Preserve") => Some(RequestId::Preserve),
        Some("Generate") => Some(RequestId::Generate),
        Some("Disable") => Some(RequestId::Disable),
        _ => bool_at(spec, "/headers/preserveXRequestID")
            .unwrap_or(false)
            .then_some(RequestId::Preserve),
    };
    let xfcc = spec.pointer("/headers/xForwardedClientCert").map(|x| {
        use http_connection_manager::ForwardClientCertDetails as F;
        let mode = match x.get("mode").and_then(Value::as_str) {
            Some("ForwardOnly") => F::ForwardOnly,
            Some("AppendForward") => F::AppendForward,
            Some("SanitizeSet") => F::SanitizeSet,
            Some("AlwaysForwardOnly") => F::AlwaysForwardOnly,
            _ => F::Sanitize,
        };
        let details = if matches!(mode, F::AppendForward | F::SanitizeSet) {
            x.get("certDetailsToAdd")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        } else {
            vec![]
        };
        Xfcc { mode, details }
    });
    use http_connection_manager::PathWithEscapedSlashesAction as E;
    let escaped_slashes = match str_at(spec, "/path/escapedSlashesAction") {
        Some("KeepUnchanged") => E::KeepUnchanged,
        Some("RejectRequest") => E::RejectRequest,
        Some("UnescapeAndForward") => E::UnescapeAndForward,
        _ => E::UnescapeAndRedirect,
    };
    let http1 = spec.pointer("/http1").map(|_| Http1 {
        trailers: bool_at(spec, "/http1/enableTrailers").unwrap_or(false),
        preserve_case: bool_at(spec, "/http1/preserveHeaderCase").unwrap_or(false),
        http10: spec.pointer("/http1/http10").is_some(),
        use_default_host: bool_at(spec, "/http1/http10/useDefaultHost") == Some(true),
        default_host: None,
        ignored_upgrades: spec
            .pointer("/http1/ignoredUpgradeTypes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(str_match)
            .collect(),
    });
    let window = |p: &str| quantity_at(spec, p).map(|q| q as u32);
    let http2 = Http2 {
        stream_window: window("/http2/initialStreamWindowSize"),
        connection_window: window("/http2/initialConnectionWindowSize"),
        max_streams: u32_at(spec, "/http2/maxConcurrentStreams"),
        reset_stream_on_error: str_at(spec, "/http2/onInvalidMessage")
            .map(|m| m == "TerminateStream"),
    };
    let strings = |p: &str| -> Vec<String> {
        spec.pointer(p)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let tls = Tls {
        // Resolved against the index by [`resolve_client_ca`].
        client_ca: None,
        min: str_at(spec, "/tls/minVersion").and_then(tls_version),
        max: str_at(spec, "/tls/maxVersion").and_then(tls_version),
        ciphers: strings("/tls/ciphers"),
        ecdh_curves: strings("/tls/ecdhCurves"),
        signature_algorithms: strings("/tls/signatureAlgorithms"),
        alpn: spec
            .pointer("/tls/alpnProtocols")
            .map(|_| strings("/tls/alpnProtocols")),
        stateless_resumption: spec.pointer("/tls/session/resumption/stateless").is_some(),
        stateful_resumption: spec.pointer("/tls/session/resumption/stateful").is_some(),
        ja3: strings("/tls/fingerprints").iter().any(|f| f == "JA3"),
        ja4: strings("/tls/fingerprints").iter().any(|f| f == "JA4"),
    };
    Ok(ClientSettings {
        keepalive,
        buffer_limit: quantity_at(spec, "/connection/bufferLimit").map(|q| q as u32),
        connection_limit,
        proxy_protocol,
        tcp_idle_timeout: dur_at(spec, "/timeout/tcp/idleTimeout"),
        request_timeout: dur_at(spec, "/timeout/http/requestReceivedTimeout"),
        request_headers_timeout: dur_at(spec, "/timeout/http/requestHeadersReceivedTimeout"),
        max_request_headers_kb: quantity_at(spec, "/headers/maxRequestHeaderLimit")
            .map(|q| (q / 1024.0) as u32),
        max_accept_per_socket_event: u32_at(spec, "/connection/maxAcceptPerSocketEvent")
            .filter(|n| *n > 0),
        http_idle_timeout: dur_at(spec, "/timeout/http/idleTimeout"),
        stream_idle_timeout: dur_at(spec, "/timeout/http/streamIdleTimeout"),
        client_ip,
        skip_xff_append: bool_at(
            spec,
            "/clientIPDetection/xForwardedFor/disableXForwardedForAppend",
        )
        .unwrap_or(false),
        strip_trailing_host_dot: bool_at(spec, "/headers/host/stripTrailingHostDot")
            .unwrap_or(false),
        enable_envoy_headers: bool_at(spec, "/headers/enableEnvoyHeaders").unwrap_or(false),
        disable_rate_limit_headers: bool_at(spec, "/headers/disableRateLimitHeaders")
            .unwrap_or(false),
        with_underscores,
        request_id,
        xfcc,
        merge_slashes: !bool_at(spec, "/path/disableMergeSlashes").unwrap_or(false),
        escaped_slashes,
        http1,
        http2,
        health_check_path: str_at(spec, "/healthCheck/path").map(str::to_string),
        grpc_web: bool_at(spec, "/grpc/enableWeb").unwrap_or(false),
        scheme_match_backend: str_at(spec, "/scheme") == Some("MatchBackend"),
        http3: spec.pointer("/http3").is_some_and(|v| !v.is_null()),
        early_request_headers: header_ops(spec, "/headers/earlyRequestHeaders"),
        late_response_headers: header_ops(spec, "/headers/lateResponseHeaders"),
        tls,
    })
}

const EG_GROUP: &str = "gateway.envoyproxy.io";
const CTB_GROUP: &str = "certificates.k8s.io";

/// The CA bundle of `tls.clientValidation` (Envoy Gateway's `buildListenerTLSParameters`):
/// `caCertificateRefs` to Secrets (the default kind) or ConfigMaps, key `ca.crt`, in the
/// policy's namespace or granted by a ReferenceGrant. `None` without client validation (or
/// with no CA, which Envoy Gateway also ignores); the error is the policy's status message.
pub(crate) fn resolve_client_ca(
    ix: &Index,
    policy: &ResourceKey,
    spec: &Value,
) -> Result<Option<ClientCa>, String> {
    let Some(cv) = spec.pointer("/tls/clientValidation") else {
        return Ok(None);
    };
    let mut pem = Vec::new();
    for r in cv
        .get("caCertificateRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = resolve_cert_ref(ix, policy, r, "caCertificateRef", true)?;
        let (ns, name, lower) = (r.ns, r.name, r.kind.to_ascii_lowercase());
        let from_ref = |m: String| format!("TLS: failed to get certificate from ref: {m}.");
        let bytes: Vec<u8> = match (r.kind_of, r.object) {
            (Kind::ClusterTrustBundle, Some(Object::ClusterTrustBundle(b))) => b
                .spec
                .get("trustBundle")
                .and_then(Value::as_str)
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default(),
            (Kind::ClusterTrustBundle, _) => {
                return Err(from_ref(format!(
                    "ref ClusterTrustBundle [{name}] not found"
                )))
            }
            // `ca.crt`, else the only entry there is (Envoy Gateway's `getCaCertFromSecret`).
            _ => match r.entries() {
                Some((entries, _)) => entry_or_only(entries, CA_KEY).ok_or_else(|| {
                    from_ref(format!(
                        "ref {lower} [{name}] has none of the expected keys [{CA_KEY}] and more than one entry"
                    ))
                })?,
                None => return Err(from_ref(format!("{lower} {ns}/{name} does not exist"))),
            },
        };
        if bytes.is_empty() {
            return Err(format!(
                "TLS: caCertificateRef not found in {lower} {name}."
            ));
        }
        if !crate::tls::is_pem_certificate(&bytes) {
            return Err(format!(
                "TLS: invalid certificate in {lower} {name}: no valid PEM certificate."
            ));
        }
        append_pem(&mut pem, &bytes);
    }
    if pem.is_empty() {
        return Ok(None);
    }
    let crl = resolve_crl(ix, policy, cv, &pem)?;
    Ok(Some(ClientCa {
        pem,
        optional: cv.get("optional").and_then(Value::as_bool).unwrap_or(false)
            || cv.get("mode").and_then(Value::as_str) == Some("VerifyIfGiven"),
        spki_hashes: strings_of(cv, "spkiHashes"),
        cert_hashes: strings_of(cv, "certificateHashes"),
        sans: san_matchers(cv),
        allow_expired: cv
            .get("allowExpiredCertificate")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        crl,
    }))
}

/// The key of a CA bundle in its Secret or ConfigMap (Envoy Gateway's `ca.crt`).
const CA_KEY: &str = "ca.crt";

/// The key of a CRL in its Secret or ConfigMap (Envoy Gateway's `ca.crl`).
const CRL_KEY: &str = "ca.crl";

/// The entries of a Secret (decoded) or a ConfigMap: (key, bytes).
type Entries = Vec<(String, Vec<u8>)>;

/// A certificate-like ref of a ClientTrafficPolicy (`clientValidation.caCertificateRefs[]`,
/// `clientValidation.crl.refs[]`) and the object it names.
struct CertRef<'a> {
    /// As written (`Secret` when unset): the policy's status messages name it.
    kind: &'a str,
    kind_of: Kind,
    ns: &'a str,
    name: &'a str,
    /// `None`: it does not exist.
    object: Option<&'a Object>,
}

impl CertRef<'_> {
    /// The entries of the Secret (decoded) or ConfigMap it names, and that object's creation
    /// time in Unix seconds; `None` when it names no Secret or ConfigMap that exists.
    fn entries(&self) -> Option<(Entries, Option<i64>)> {
        match self.object? {
            Object::Secret(sec) => Some((
                sec.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
                sec.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
            )),
            Object::ConfigMap(cm) => Some((
                cm.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                    .collect(),
                cm.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
            )),
            _ => None,
        }
    }
}

/// Resolves a certificate-like ref `r` of ClientTrafficPolicy `policy` as Envoy Gateway does:
/// a Secret (the default kind) or a ConfigMap, in the policy's namespace or in another one a
/// ReferenceGrant allows; with `trust_bundles`, a ClusterTrustBundle too (cluster-scoped: no
/// grant). `field` names the ref in the message for a kind it cannot be.
fn resolve_cert_ref<'a>(
    ix: &'a Index,
    policy: &'a ResourceKey,
    r: &'a Value,
    field: &str,
    trust_bundles: bool,
) -> Result<CertRef<'a>, String> {
    let get = |f: &str| r.get(f).and_then(Value::as_str);
    let name = get("name").unwrap_or_default();
    let kind = get("kind").unwrap_or("Secret");
    let group = get("group").unwrap_or_default();
    let ns = get("namespace")
        .filter(|n| !n.is_empty())
        .unwrap_or(&policy.namespace);
    let kind_of = match (group, kind) {
        ("", "Secret") => Kind::Secret,
        ("", "ConfigMap") => Kind::ConfigMap,
        (CTB_GROUP, "ClusterTrustBundle") | ("", "ClusterTrustBundle") if trust_bundles => {
            Kind::ClusterTrustBundle
        }
        _ => return Err(format!("TLS: unsupported {field} kind:{kind}.")),
    };
    let key = if kind_of == Kind::ClusterTrustBundle {
        ResourceKey::new(&policy.cluster, kind_of, "", name)
    } else {
        if !ix.reference_allowed(
            &policy.cluster,
            EG_GROUP,
            "ClientTrafficPolicy",
            &policy.namespace,
            group,
            kind,
            ns,
            name,
        ) {
            return Err(format!(
                "TLS: {} {ns}/{name} is not permitted by any ReferenceGrant.",
                kind.to_ascii_lowercase()
            ));
        }
        ResourceKey::new(&policy.cluster, kind_of, ns, name)
    };
    Ok(CertRef {
        kind,
        kind_of,
        ns,
        name,
        object: ix.resources.get(&key).map(|r| &r.object),
    })
}

/// The entry `key`, else the only entry there is; `None` when neither.
fn entry_or_only(mut entries: Entries, key: &str) -> Option<Vec<u8>> {
    if let Some(i) = entries.iter().position(|(k, _)| k == key) {
        return Some(entries.swap_remove(i).1);
    }
    if entries.len() == 1 {
        return entries.pop().map(|(_, v)| v);
    }
    None
}

/// Appends a PEM document to a bundle, ending it with a newline.
fn append_pem(pem: &mut Vec<u8>, bytes: &[u8]) {
    pem.extend_from_slice(bytes);
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
}

/// `clientValidation.crl` (Envoy Gateway's `validateCRL` and its ref resolution): `refs` to
/// Secrets (the default kind) or ConfigMaps, key `ca.crl` (else their only entry), each holding
/// PEM `X509 CRL` blocks that parse, none expired.
///
/// Expiry without a clock (translation is deterministic): a CRL is expired when its
/// `nextUpdate` is before an instant known to be past, the latest of the `notBefore` of the CAs
/// it is used with and the `creationTimestamp` of the object holding it. Envoy would refuse
/// every client certificate of that CA with such a CRL; one that expires later does the same
/// from then on (as in Envoy Gateway, whose check runs only at translation).
fn resolve_crl(
    ix: &Index,
    policy: &ResourceKey,
    cv: &Value,
    ca_pem: &[u8],
) -> Result<Option<crate::ir::client::Crl>, String> {
    let Some(crl) = cv.get("crl").filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let mut past = ca_pem_not_before(ca_pem);
    let mut pem = Vec::new();
    for r in crl
        .get("refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let r = resolve_cert_ref(ix, policy, r, "crl ref", false)?;
        let (ns, name, lower) = (r.ns, r.name, r.kind.to_ascii_lowercase());
        let Some((entries, created)) = r.entries() else {
            return Err(format!(
                "TLS: failed to get crl from ref: {lower} {ns}/{name} does not exist."
            ));
        };
        let bytes = entry_or_only(entries, CRL_KEY).ok_or_else(|| {
            format!(
                "TLS: crl not found in {lower} {name}: it has none of the expected keys [{CRL_KEY}]."
            )
        })?;
        if let Some(t) = created {
            past = past.max(Some(t));
        }
        let next_updates =
            crl_next_updates(&bytes).map_err(|e| format!("TLS: invalid crl in {name}: {e}."))?;
        for next in next_updates.into_iter().flatten() {
            if past.is_some_and(|p| next.timestamp() < p) {
                return Err(format!(
                    "TLS: invalid crl in {name}: CRL is expired (next update was due at {}).",
                    go_time(&next)
                ));
            }
        }
        append_pem(&mut pem, &bytes);
    }
    if pem.is_empty() {
        return Err("TLS: crl has no refs.".into());
    }
    Ok(Some(crate::ir::client::Crl {
        pem,
        only_leaf: crl
            .get("onlyVerifyLeafCertificate")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }))
}

/// The `nextUpdate` of each CRL of a PEM bundle (`None`: it has none); an error when a block
/// does not parse or there is no CRL at all.
fn crl_next_updates(pem: &[u8]) -> Result<Vec<Option<x509_parser::time::ASN1Time>>, String> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("failed to decode PEM: {e}"))?;
        if block.label != "X509 CRL" {
            continue;
        }
        let (_, crl) = x509_parser::parse_x509_crl(&block.contents)
            .map_err(|e| format!("failed to parse CRL: {e}"))?;
        out.push(crl.next_update());
    }
    if out.is_empty() {
        return Err("no valid CRL found".into());
    }
    Ok(out)
}

/// The latest `notBefore` of the certificates of a PEM bundle, in Unix seconds.
fn ca_pem_not_before(pem: &[u8]) -> Option<i64> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|b| b.label == "CERTIFICATE")
        .filter_map(|b| {
            x509_parser::parse_x509_certificate(&b.contents)
                .ok()
                .map(|(_, c)| c.validity().not_before.timestamp())
        })
        .max()
}

/// A time as Go's `time.Time` prints it in UTC (`2005-02-06 12:00:00 +0000 UTC`).
fn go_time(t: &x509_parser::time::ASN1Time) -> String {
    let d = t.to_datetime();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

fn strings_of(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The gateways configured by a ClientTrafficPolicy whose client validation trusts the CAs (or
/// takes the CRLs) of ConfigMap or Secret `holder`: they are translated again when it changes.
pub(crate) fn gateways_trusting(
    ix: &Index,
    holder: &ResourceKey,
    out: &mut std::collections::BTreeSet<ResourceKey>,
) {
    let kind = holder.kind.as_str();
    for p in super::policies_in(ix, &holder.cluster, Kind::ClientTrafficPolicy) {
        let refs = |pointer: &str| {
            p.spec
                .pointer(pointer)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        };
        let names_it = refs("/tls/clientValidation/caCertificateRefs")
            .chain(refs("/tls/clientValidation/crl/refs"))
            .any(|r| {
                let f = |k: &str| r.get(k).and_then(Value::as_str);
                f("kind").unwrap_or("Secret") == kind
                    && f("name") == Some(holder.name.as_str())
                    && f("namespace").unwrap_or(&p.key.namespace) == holder.namespace
            });
        if names_it {
            if let Some(r) = ix.resources.get(p.key) {
                super::affected_gateways(ix, r, out);
            }
        }
    }
}

/// Envoy Gateway's warning for a policy enabling HTTP/3 on HTTPS listener `listener` whose
/// client certificates it validates.
pub(crate) fn http3_warning(spec: &Value, listener: &str) -> Option<String> {
    let h3 = spec.pointer("/http3").is_some_and(|v| !v.is_null());
    let validates = spec
        .pointer("/tls/clientValidation/caCertificateRefs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    (h3 && validates).then(|| {
        format!("HTTP/3 was disabled for listener \"{listener}\" because Envoy does not support downstream client TLS validation over QUIC")
    })
}

pub(crate) mod schema;
pub(crate) mod xds;

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
#[cfg(test)]
#[path = "client_tls_tests.rs"]
mod tls_tests;
