//! The checks of a ClientTrafficPolicy spec before it is read: Envoy Gateway's duration and
//! range checks ([`invalid`]), the values its CRD schema or Envoy would refuse
//! ([`schema_errors`]), deprecated fields, and the small typed readers of the spec that
//! [`crate::policy::client`] parses with.

pub(crate) use crate::ir::client::StrMatch;
use crate::policy::FieldErrors;
use crate::values::{parse_go_duration, parse_quantity, GoDuration};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters;
use serde_json::Value;

pub(crate) fn str_match(m: &Value) -> Option<StrMatch> {
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

pub(crate) fn str_at<'a>(spec: &'a Value, p: &str) -> Option<&'a str> {
    spec.pointer(p).and_then(Value::as_str)
}

pub(crate) fn bool_at(spec: &Value, p: &str) -> Option<bool> {
    spec.pointer(p).and_then(Value::as_bool)
}

pub(crate) fn dur_at(spec: &Value, p: &str) -> Option<GoDuration> {
    str_at(spec, p).and_then(|s| parse_go_duration(s).ok())
}

pub(crate) fn u32_at(spec: &Value, p: &str) -> Option<u32> {
    spec.pointer(p)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// A Kubernetes quantity (a number or a string such as `32Ki`) as a whole number.
pub(crate) fn quantity_at(spec: &Value, p: &str) -> Option<f64> {
    let v = spec.pointer(p)?;
    match v {
        Value::String(s) => parse_quantity(s),
        other => parse_quantity(&other.to_string()),
    }
}

/// An address range `a.b.c.d/n` or `x::/n`, as Envoy's CidrRange takes it.
pub(crate) fn parse_cidr(s: &str) -> Option<(String, u32)> {
    let (ip, len) = s.split_once('/')?;
    let addr: std::net::IpAddr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then(|| (ip.to_string(), len))
}

pub(crate) fn tls_version(s: &str) -> Option<tls_parameters::TlsProtocol> {
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
        if let Some(crl) = cv.get("crl").filter(|c| !c.is_null()) {
            // The refs themselves are resolved with the CAs (`resolve_client_ca`).
            if !refs {
                // Envoy takes a CRL only with a trusted CA to check it against.
                out.push((
                    "TLS",
                    "crl requires caCertificateRefs to be set".to_string(),
                ));
            }
            if crl
                .get("refs")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
            {
                out.push(("TLS", "crl must have at least one ref".to_string()));
            }
            if let Some(v) = crl
                .get("onlyVerifyLeafCertificate")
                .filter(|v| !v.is_null() && !v.is_boolean())
            {
                out.push((
                    "TLS",
                    format!("invalid OnlyVerifyLeafCertificate value {}", text(v)),
                ));
            }
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
pub(crate) const CIPHERS: &[&str] = &[
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
pub(crate) const CURVES: &[&str] = &["P-256", "P-384", "P-521", "X25519", "X25519MLKEM768"];

/// The signature algorithms BoringSSL takes by name.
pub(crate) const SIGNATURE_ALGORITHMS: &[&str] = &[
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
pub(crate) fn known_tls_name(s: &str, known: &[&str], groups: bool) -> bool {
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
pub(crate) fn header_filter_errors(
    filter: &Value,
    what: &str,
    out: &mut Vec<(&'static str, String)>,
) {
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
pub(crate) fn valid_header_value(v: &str) -> bool {
    !v.contains(['\r', '\n', '\0']) && !v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t'])
}

pub(crate) fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// An HTTP header name (RFC 9110 token), lower or upper case.
pub(crate) fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why a policy's fields cannot be translated: Envoy Gateway's checks of durations and numeric
/// ranges while translating a listener, in its order, then the checks of
/// [`schema_errors`] (values Envoy Gateway's CRD schema or Envoy would refuse).
/// The CA references of client validation are checked by
/// [`resolve_client_ca`](crate::policy::client::resolve_client_ca), which needs the index.
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
