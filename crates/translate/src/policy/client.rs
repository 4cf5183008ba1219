//! ClientTrafficPolicy fields → Envoy: the spec read once into typed, validated
//! [`ClientSettings`] (here), and their application ([`xds`]) to the Envoy Listener, its filter
//! chains, the HTTP connection manager and the downstream TLS context, as Envoy Gateway's xDS
//! translator writes them (`internal/xds/translator/listener.go`, `buildXdsTCPListener`, `addHCMToXDSListener`,
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

use super::FieldErrors;
use crate::index::Index;
pub(crate) use crate::ir::client::{
    ClientCa, ClientIp, ClientSettings, ConnectionLimit, HeaderOp, Http1, Http2, Keepalive,
    RequestId, StrMatch, Tls, Xfcc,
};
use crate::values::{parse_go_duration, parse_quantity, GoDuration};
use envoy_types::pb::envoy::config::core::v3::http_protocol_options;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters;
use flotilla_model::{Kind, Object, ResourceKey};
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

fn str_match(m: &Value) -> Option<StrMatch> {
    let v = m.get("value").and_then(Value::as_str)?.to_string();
    Some(
        match m.get("type").and_then(Value::as_str).unwrap_or("Exact") {
            "Exact" => StrMatch::Exact(v),
            "Prefix" => StrMatch::Prefix(v),
            "Suffix" => StrMatch::Suffix(v),
            "RegularExpression" => StrMatch::Regex(v),
            _ => return None,
        },
    )
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

fn str_at<'a>(spec: &'a Value, p: &str) -> Option<&'a str> {
    spec.pointer(p).and_then(Value::as_str)
}

fn bool_at(spec: &Value, p: &str) -> Option<bool> {
    spec.pointer(p).and_then(Value::as_bool)
}

fn dur_at(spec: &Value, p: &str) -> Option<GoDuration> {
    str_at(spec, p).and_then(|s| parse_go_duration(s).ok())
}

fn u32_at(spec: &Value, p: &str) -> Option<u32> {
    spec.pointer(p)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// A Kubernetes quantity (a number or a string such as `32Ki`) as a whole number.
fn quantity_at(spec: &Value, p: &str) -> Option<f64> {
    let v = spec.pointer(p)?;
    match v {
        Value::String(s) => parse_quantity(s),
        other => parse_quantity(&other.to_string()),
    }
}

/// Whole seconds of a duration, as Envoy Gateway keeps them for keepalive (`d.Seconds()`
/// truncated to a uint32).
fn whole_seconds(d: GoDuration) -> u32 {
    u32::try_from(d.to_proto().seconds.max(0)).unwrap_or(u32::MAX)
}

/// An address range `a.b.c.d/n` or `x::/n`, as Envoy's CidrRange takes it.
pub(crate) fn parse_cidr(s: &str) -> Option<(String, u32)> {
    let (ip, len) = s.split_once('/')?;
    let addr: std::net::IpAddr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then(|| (ip.to_string(), len))
}

fn tls_version(s: &str) -> Option<tls_parameters::TlsProtocol> {
    use tls_parameters::TlsProtocol as P;
    Some(match s {
        "Auto" => P::TlsAuto,
        "1.0" => P::TlSv10,
        "1.1" => P::TlSv11,
        "1.2" => P::TlSv12,
        "1.3" => P::TlSv13,
        _ => return None,
    })
}

/// The checks of the fields that [`invalid`] adds to Envoy Gateway's translation
/// checks: values its CRD's schema refuses (so Envoy Gateway never sees them) and Envoy would
/// reject. Each is (section, message).
pub(crate) fn schema_errors(spec: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut one_of = |section: &'static str, p: &str, name: &str, allowed: &[&str]| {
        if let Some(v) = spec.pointer(p) {
            if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                out.push((section, format!("invalid {name} value {}", text(v))));
            }
        }
    };
    one_of(
        "Headers",
        "/headers/withUnderscoresAction",
        "WithUnderscoresAction",
        &["Allow", "RejectRequest", "DropHeader"],
    );
    one_of(
        "Headers",
        "/headers/requestID",
        "RequestID",
        &["PreserveOrGenerate", "Preserve", "Generate", "Disable"],
    );
    one_of(
        "Headers",
        "/headers/xForwardedClientCert/mode",
        "XForwardedClientCert Mode",
        &[
            "Sanitize",
            "ForwardOnly",
            "AppendForward",
            "SanitizeSet",
            "AlwaysForwardOnly",
        ],
    );
    one_of(
        "Path",
        "/path/escapedSlashesAction",
        "EscapedSlashesAction",
        &[
            "KeepUnchanged",
            "RejectRequest",
            "UnescapeAndRedirect",
            "UnescapeAndForward",
        ],
    );
    one_of(
        "Scheme",
        "/scheme",
        "Scheme",
        &["MatchBackend", "MatchRequest"],
    );
    one_of(
        "HTTP2",
        "/http2/onInvalidMessage",
        "OnInvalidMessage",
        &["TerminateConnection", "TerminateStream"],
    );
    one_of(
        "TLS",
        "/tls/minVersion",
        "MinVersion",
        &["Auto", "1.0", "1.1", "1.2", "1.3"],
    );
    one_of(
        "TLS",
        "/tls/maxVersion",
        "MaxVersion",
        &["Auto", "1.0", "1.1", "1.2", "1.3"],
    );
    for f in spec
        .pointer("/tls/fingerprints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !f.as_str().is_some_and(|f| f == "JA3" || f == "JA4") {
            out.push(("TLS", format!("invalid Fingerprints value {}", text(f))));
        }
    }
    let min = str_at(spec, "/tls/minVersion").and_then(tls_version);
    let max = str_at(spec, "/tls/maxVersion").and_then(tls_version);
    if let (Some(lo), Some(hi)) = (min, max) {
        let auto = tls_parameters::TlsProtocol::TlsAuto;
        if lo != auto && hi != auto && (lo as i32) > (hi as i32) {
            out.push((
                "TLS",
                "minVersion must be smaller or equal to maxVersion".to_string(),
            ));
        }
    }
    if let Some(f) = spec.pointer("/headers/earlyRequestHeaders") {
        header_filter_errors(f, "EarlyRequestHeaders", &mut out);
    }
    if let Some(f) = spec.pointer("/headers/lateResponseHeaders") {
        header_filter_errors(f, "LateResponseHeaders", &mut out);
    }
    if let Some(cv) = spec.pointer("/tls/clientValidation") {
        let refs = cv
            .get("caCertificateRefs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if cv.get("crl").is_some() {
            // Not translated: refusing is safer than validating less than asked.
            out.push((
                "TLS",
                "tls.clientValidation.crl is not supported by this controller".into(),
            ));
        }
        for h in cv
            .get("certificateHashes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let hex: String = h.as_str().unwrap_or_default().replace(':', "");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push((
                    "TLS",
                    format!("invalid CertificateHashes value {}", text(h)),
                ));
            }
        }
        for h in cv
            .get("spkiHashes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Base64 of a SHA-256 digest.
            let b = h.as_str().unwrap_or_default();
            let ok = b.len() == 44
                && b.ends_with('=')
                && b[..43]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/');
            if !ok {
                out.push(("TLS", format!("invalid SPKIHashes value {}", text(h))));
            }
        }
        for field in [
            "dnsNames",
            "emailAddresses",
            "ipAddresses",
            "uris",
            "otherNames",
        ] {
            for m in cv
                .pointer(&format!("/subjectAltNames/{field}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let bad = match str_match(m) {
                    None => true,
                    Some(StrMatch::Regex(r)) => regex::Regex::new(&r).is_err(),
                    Some(_) => false,
                } || (field == "otherNames"
                    && m.get("oid")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty));
                if bad {
                    out.push(("TLS", format!("invalid SubjectAltNames {field} value {m}")));
                }
            }
        }
        if !refs && cv.get("mode").and_then(Value::as_str) == Some("VerifyIfGiven") {
            out.push((
                "TLS",
                "tls.clientValidation.mode \"VerifyIfGiven\" requires caCertificateRefs".into(),
            ));
        } else if !refs && cv.get("optional").and_then(Value::as_bool) == Some(true) {
            out.push((
                "TLS",
                "tls.clientValidation.optional=true requires caCertificateRefs (maps to mode \"VerifyIfGiven\")".into(),
            ));
        }
    }
    // Envoy (BoringSSL) refuses a listener whose TLS names it does not know; Envoy Gateway
    // passes them through, and Envoy then rejects the whole listener.
    for (p, name, known, groups) in [
        ("/tls/ciphers", "Ciphers", CIPHERS, true),
        ("/tls/ecdhCurves", "ECDHCurves", CURVES, false),
        (
            "/tls/signatureAlgorithms",
            "SignatureAlgorithms",
            SIGNATURE_ALGORITHMS,
            false,
        ),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for v in spec
            .pointer(p)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if v.as_str().is_none_or(|s| !known_tls_name(s, known, groups)) {
                out.push(("TLS", format!("unsupported {name} value {}", text(v))));
            } else if !groups && !seen.insert(text(v)) {
                // BoringSSL refuses a group or signature algorithm list naming one twice.
                out.push(("TLS", format!("duplicate {name} value {}", text(v))));
            }
        }
    }
    if let Some(v) = spec.pointer("/connection/connectionLimit/value") {
        if v.as_u64().is_none_or(|n| n < 1) {
            out.push((
                "Connection",
                format!(
                    "invalid ConnectionLimit value {}, must be at least 1",
                    text(v)
                ),
            ));
        }
    }
    if let Some(v) = str_at(spec, "/timeout/http/requestHeadersReceivedTimeout") {
        if parse_go_duration(v).is_err() {
            out.push((
                "Timeout",
                format!("invalid HTTP RequestHeadersReceivedTimeout value {v}"),
            ));
        }
    }
    if let Some(v) = spec.pointer("/connection/maxAcceptPerSocketEvent") {
        if v.as_u64().is_none_or(|n| u32::try_from(n).is_err()) {
            out.push((
                "Connection",
                format!("invalid MaxAcceptPerSocketEvent value {}", text(v)),
            ));
        }
    }
    // Linux refuses keepalive values outside these ranges, and Envoy then fails to bind the
    // listener.
    if let Some(v) = spec.pointer("/tcpKeepalive/probes") {
        if v.as_u64().is_none_or(|n| !(1..=127).contains(&n)) {
            out.push((
                "TCP KeepAlive",
                format!(
                    "Probes value {} is out of range, must be between 1 and 127",
                    text(v)
                ),
            ));
        }
    }
    for (p, name) in [
        ("/tcpKeepalive/idleTime", "IdleTime"),
        ("/tcpKeepalive/interval", "Interval"),
    ] {
        let secs = dur_at(spec, p).map(|d| d.to_proto().seconds);
        if secs.is_some_and(|s| !(1..=32_767).contains(&s)) {
            out.push((
                "TCP KeepAlive",
                format!(
                    "{name} value {} is out of range, must be between 1s and 32767s",
                    str_at(spec, p).unwrap_or_default()
                ),
            ));
        }
    }
    for d in spec
        .pointer("/headers/xForwardedClientCert/certDetailsToAdd")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !d
            .as_str()
            .is_some_and(|d| ["Subject", "Cert", "Chain", "DNS", "URI"].contains(&d))
        {
            out.push((
                "Headers",
                format!(
                    "invalid XForwardedClientCert CertDetailsToAdd value {}",
                    text(d)
                ),
            ));
        }
    }
    if let Some(v) = spec.pointer("/http2/maxConcurrentStreams") {
        if !v.as_u64().is_some_and(|n| (1..=2_147_483_647).contains(&n)) {
            out.push((
                "HTTP2",
                format!(
                    "MaxConcurrentStreams value {} is out of range, must be between 1 and 2147483647",
                    text(v)
                ),
            ));
        }
    }
    // One way to find the client address (Envoy Gateway's CRD refuses the others).
    let xff = spec.pointer("/clientIPDetection/xForwardedFor");
    if xff.is_some() && spec.pointer("/clientIPDetection/customHeader").is_some() {
        out.push((
            "ClientIPDetection",
            "customHeader cannot be used in conjunction with xForwardedFor".into(),
        ));
    }
    if xff.is_some_and(|x| x.get("numTrustedHops").is_some() && x.get("trustedCIDRs").is_some()) {
        out.push((
            "ClientIPDetection",
            "only one of numTrustedHops or trustedCIDRs may be set".into(),
        ));
    }
    if let Some(cidrs) = spec.pointer("/clientIPDetection/xForwardedFor/trustedCIDRs") {
        for c in cidrs.as_array().into_iter().flatten() {
            if c.as_str().is_none_or(|s| parse_cidr(s).is_none()) {
                out.push((
                    "ClientIPDetection",
                    format!("invalid TrustedCIDRs value {}", text(c)),
                ));
            }
        }
    }
    if let Some(v) = spec.pointer("/clientIPDetection/customHeader/name") {
        if !v.as_str().is_some_and(valid_header_name) {
            out.push((
                "ClientIPDetection",
                format!("invalid CustomHeader name {}", text(v)),
            ));
        }
    }
    if let Some(v) = spec.pointer("/healthCheck/path") {
        if !v.as_str().is_some_and(|p| p.starts_with('/')) {
            out.push((
                "HealthCheck",
                format!("invalid Path value {}, must start with /", text(v)),
            ));
        }
    }
    out
}

/// The TLS 1.2 cipher suites BoringSSL (Envoy's TLS library) takes, by their OpenSSL and
/// IANA names. (TLS 1.3 suites are not configurable.)
const CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
];

/// The key exchange groups BoringSSL takes by name (it refuses a list naming one twice, so
/// aliases such as `prime256v1` are left out).
const CURVES: &[&str] = &["P-256", "P-384", "P-521", "X25519", "X25519MLKEM768"];

/// The signature algorithms BoringSSL takes by name.
const SIGNATURE_ALGORITHMS: &[&str] = &[
    "rsa_pkcs1_sha1",
    "rsa_pkcs1_sha256",
    "rsa_pkcs1_sha384",
    "rsa_pkcs1_sha512",
    "ecdsa_sha1",
    "ecdsa_secp256r1_sha256",
    "ecdsa_secp384r1_sha384",
    "ecdsa_secp521r1_sha512",
    "rsa_pss_rsae_sha256",
    "rsa_pss_rsae_sha384",
    "rsa_pss_rsae_sha512",
    "ed25519",
];

/// A name of `known`, or (with `groups`, for ciphers) a BoringSSL equal-preference group
/// `[a|b]` of them.
fn known_tls_name(s: &str, known: &[&str], groups: bool) -> bool {
    let group = s.strip_prefix('[').and_then(|g| g.strip_suffix(']'));
    match group {
        Some(g) if groups => g.split('|').all(|c| known.contains(&c)),
        _ => known.contains(&s),
    }
}

/// The deprecated fields the policy sets, with what replaces them (Envoy Gateway's warning).
pub(crate) fn deprecated_fields(spec: &Value) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if spec.pointer("/headers/preserveXRequestID").is_some() {
        out.push(("spec.headers.preserveXRequestID", "spec.headers.requestID"));
    }
    // A Go bool: `optional: false` is the same as unset there.
    if bool_at(spec, "/tls/clientValidation/optional") == Some(true) {
        out.push((
            "spec.tls.clientValidation.optional",
            "spec.tls.clientValidation.mode",
        ));
    }
    out
}

/// Envoy Gateway's checks of `earlyRequestHeaders` / `lateResponseHeaders` (`set`, `add`,
/// `addIfAbsent`, `remove`), in its words; `what` is the field's name in the messages.
fn header_filter_errors(filter: &Value, what: &str, out: &mut Vec<(&'static str, String)>) {
    let mut valid = 0;
    for op in ["add", "set", "addIfAbsent"] {
        for h in filter
            .get(op)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = h.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = h.get("value").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                out.push((
                    "Headers",
                    format!("{what} cannot {op} a header with an empty name"),
                ));
            } else if name.contains('/') || name.contains(':') {
                out.push((
                    "Headers",
                    format!("{what} cannot {op} a header with a '/' or ':' character in them. Header: '{name:?}'"),
                ));
            } else if !valid_header_name(name) {
                out.push((
                    "Headers",
                    format!("{what} cannot {op} a header with an invalid name. Header: '{name:?}'"),
                ));
            } else if !valid_header_value(value) {
                out.push((
                    "Headers",
                    format!(
                        "{what} cannot {op} a header with an invalid value. Header: '{name:?}'"
                    ),
                ));
            } else {
                valid += 1;
            }
        }
    }
    for name in filter
        .get("remove")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if name.as_str().is_none_or(str::is_empty) {
            out.push((
                "Headers",
                format!("{what} cannot remove a header with an empty name"),
            ));
        } else if name.as_str().is_some_and(|n| !valid_header_name(n)) {
            out.push((
                "Headers",
                format!("{what} cannot remove a header with an invalid name. Header: '{name}'"),
            ));
        } else {
            valid += 1;
        }
    }
    for m in filter
        .get("removeOnMatch")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match str_match(m) {
            Some(StrMatch::Regex(r)) if regex::Regex::new(&r).is_err() => out.push((
                "Headers",
                format!("{what} cannot removeOnMatch with an invalid regular expression {r:?}"),
            )),
            Some(_) => valid += 1,
            None => out.push((
                "Headers",
                format!("{what} cannot removeOnMatch with an invalid match {m}"),
            )),
        }
    }
    if valid == 0 {
        out.push((
            "Headers",
            format!("{what} did not provide valid configuration to add/set/remove any headers"),
        ));
    }
}

/// A header value Envoy takes: no line breaks or NULs, no surrounding whitespace.
fn valid_header_value(v: &str) -> bool {
    !v.contains(['\r', '\n', '\0']) && !v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t'])
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// An HTTP header name (RFC 9110 token), lower or upper case.
fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why a policy's fields cannot be translated: Envoy Gateway's checks of durations and numeric
/// ranges while translating a listener, in its order, then the checks of
/// [`schema_errors`] (values Envoy Gateway's CRD schema or Envoy would refuse).
/// The CA references of client validation are checked by
/// [`resolve_client_ca`], which needs the index.
pub(crate) fn invalid(spec: &Value) -> Option<String> {
    const U32: (f64, f64) = (0.0, 4_294_967_295.0);
    const WINDOW: (f64, f64) = (65_535.0, 2_147_483_647.0);
    let mut e = FieldErrors::default();
    e.durations(
        spec,
        "TCP KeepAlive",
        &[
            ("/tcpKeepalive/idleTime", "IdleTime"),
            ("/tcpKeepalive/interval", "Interval"),
        ],
    );
    e.quantity_range(
        spec,
        "Connection",
        "/connection/bufferLimit",
        "BufferLimit",
        U32,
    );
    e.durations(
        spec,
        "Connection",
        &[("/connection/connectionLimit/closeDelay", "CloseDelay")],
    );
    e.durations(
        spec,
        "Timeout",
        &[
            ("/timeout/tcp/idleTimeout", "TCP IdleTimeout"),
            (
                "/timeout/http/requestReceivedTimeout",
                "HTTP RequestReceivedTimeout",
            ),
            ("/timeout/http/idleTimeout", "HTTP IdleTimeout"),
            ("/timeout/http/streamIdleTimeout", "HTTP StreamIdleTimeout"),
        ],
    );
    if let Some(v) = spec.pointer("/headers/maxRequestHeaderLimit") {
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        match crate::values::parse_quantity(&text) {
            Some(q) if q < 1024.0 => e.add(
                "Headers",
                format!("MaxRequestHeaderLimit value {text} must be at least 1Ki"),
            ),
            Some(q) if q > 8192.0 * 1024.0 => e.add(
                "Headers",
                format!("MaxRequestHeaderLimit value {text} exceeds the maximum of 8192Ki"),
            ),
            Some(_) => {}
            None => e.add(
                "Headers",
                format!("invalid MaxRequestHeaderLimit value {text}"),
            ),
        }
    }
    e.quantity_range(
        spec,
        "HTTP2",
        "/http2/initialStreamWindowSize",
        "InitialStreamWindowSize",
        WINDOW,
    );
    e.quantity_range(
        spec,
        "HTTP2",
        "/http2/initialConnectionWindowSize",
        "InitialConnectionWindowSize",
        WINDOW,
    );
    for (section, msg) in schema_errors(spec) {
        e.add(section, msg);
    }
    e.message()
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
        let field = |f: &str| r.get(f).and_then(Value::as_str);
        let name = field("name").unwrap_or_default();
        let kind = field("kind").unwrap_or("Secret");
        let group = field("group").unwrap_or_default();
        let ns = field("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or(&policy.namespace);
        let from_ref = |m: String| format!("TLS: failed to get certificate from ref: {m}.");
        let kind_of = match (group, kind) {
            ("", "Secret") => Kind::Secret,
            ("", "ConfigMap") => Kind::ConfigMap,
            (CTB_GROUP, "ClusterTrustBundle") | ("", "ClusterTrustBundle") => {
                Kind::ClusterTrustBundle
            }
            _ => return Err(format!("TLS: unsupported caCertificateRef kind:{kind}.")),
        };
        if kind_of != Kind::ClusterTrustBundle
            && !ix.reference_allowed(
                &policy.cluster,
                EG_GROUP,
                "ClientTrafficPolicy",
                &policy.namespace,
                group,
                kind,
                ns,
                name,
            )
        {
            return Err(format!(
                "TLS: {} {ns}/{name} is not permitted by any ReferenceGrant.",
                kind.to_ascii_lowercase()
            ));
        }
        let key = match kind_of {
            Kind::ClusterTrustBundle => ResourceKey::new(&policy.cluster, kind_of, "", name),
            _ => ResourceKey::new(&policy.cluster, kind_of, ns, name),
        };
        // `ca.crt`, else the only entry there is (Envoy Gateway's `getCaCertFromSecret`).
        let pick = |mut entries: Vec<(String, Vec<u8>)>, what: &str| {
            if let Some(i) = entries.iter().position(|(k, _)| k == "ca.crt") {
                return Ok(entries.swap_remove(i).1);
            }
            if entries.len() == 1 {
                return Ok(entries.swap_remove(0).1);
            }
            Err(from_ref(format!(
                "ref {what} [{name}] has none of the expected keys [ca.crt] and more than one entry"
            )))
        };
        let bytes: Vec<u8> = match (kind_of, ix.resources.get(&key).map(|r| &r.object)) {
            (Kind::Secret, Some(Object::Secret(sec))) => pick(
                sec.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
                "secret",
            )?,
            (Kind::ConfigMap, Some(Object::ConfigMap(cm))) => pick(
                cm.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                    .collect(),
                "configmap",
            )?,
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
            _ => {
                return Err(from_ref(format!(
                    "{} {ns}/{name} does not exist",
                    kind.to_ascii_lowercase()
                )))
            }
        };
        let lower = kind.to_ascii_lowercase();
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
        pem.extend_from_slice(&bytes);
        if !pem.ends_with(b"\n") {
            pem.push(b'\n');
        }
    }
    Ok((!pem.is_empty()).then(|| ClientCa {
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
    }))
}

fn strings_of(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The gateways configured by a ClientTrafficPolicy whose client validation trusts the CAs of
/// ConfigMap or Secret `holder`: they are translated again when it changes.
pub(crate) fn gateways_trusting(
    ix: &Index,
    holder: &ResourceKey,
    out: &mut std::collections::BTreeSet<ResourceKey>,
) {
    let kind = holder.kind.as_str();
    for p in super::policies_in(ix, &holder.cluster, Kind::ClientTrafficPolicy) {
        let names_it = p
            .spec
            .pointer("/tls/clientValidation/caCertificateRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
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

pub(crate) mod xds;

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
