//! What a ClientTrafficPolicy sets, checked ([`ClientSettings`]): the typed settings that
//! `crate::policy::client` parses from the spec and the Envoy listener building applies. Plain
//! data: it imports only values.

use crate::values::GoDuration;
use envoy_types::pb::envoy::config::core::v3::http_protocol_options;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::tls_parameters;

/// TCP keepalive probes (Envoy Gateway's `buildTCPSocketOptions`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Keepalive {
    pub probes: Option<u32>,
    /// Seconds (Envoy Gateway truncates the duration to whole seconds).
    pub idle_time: Option<u32>,
    pub interval: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConnectionLimit {
    pub max: u64,
    pub close_delay: Option<GoDuration>,
}

/// How the client address is found (`clientIPDetection`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ClientIp {
    /// The address `hops` entries from the right of X-Forwarded-For.
    Xff { hops: u32 },
    /// The rightmost X-Forwarded-For address not in a trusted range.
    XffTrusted { cidrs: Vec<(String, u32)> },
    /// A header holding the address; `fail_closed` refuses a request without a valid one.
    Header { name: String, fail_closed: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestId {
    PreserveOrGenerate,
    Preserve,
    Generate,
    Disable,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Xfcc {
    /// Envoy's `ForwardClientCertDetails`.
    pub mode: http_connection_manager::ForwardClientCertDetails,
    /// `certDetailsToAdd` (AppendForward and SanitizeSet only).
    pub details: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Http1 {
    pub trailers: bool,
    pub preserve_case: bool,
    /// HTTP/1.0 accepted.
    pub http10: bool,
    /// `http10.useDefaultHost`: requests without a Host get the listener's hostname.
    pub use_default_host: bool,
    /// That hostname, set per listener (see [`for_listener`](crate::policy::client::for_listener)).
    pub default_host: Option<String>,
    /// `ignoredUpgradeTypes`: HTTP/1.1 upgrades Envoy ignores (passes on as plain requests).
    pub ignored_upgrades: Vec<StrMatch>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Http2 {
    pub stream_window: Option<u32>,
    pub connection_window: Option<u32>,
    pub max_streams: Option<u32>,
    /// `onInvalidMessage: TerminateStream` (true) or `TerminateConnection` (false).
    pub reset_stream_on_error: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Tls {
    /// Client certificates validated against these CAs (PEM); `optional` lets a client
    /// without one in.
    pub client_ca: Option<ClientCa>,
    pub min: Option<tls_parameters::TlsProtocol>,
    pub max: Option<tls_parameters::TlsProtocol>,
    pub ciphers: Vec<String>,
    pub ecdh_curves: Vec<String>,
    pub signature_algorithms: Vec<String>,
    pub alpn: Option<Vec<String>>,
    pub stateless_resumption: bool,
    pub stateful_resumption: bool,
    /// `fingerprints`: the TLS inspector computes the client hello's JA3 / JA4 fingerprint.
    pub ja3: bool,
    pub ja4: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClientCa {
    pub pem: Vec<u8>,
    pub optional: bool,
    /// `spkiHashes`, `certificateHashes`: a client certificate must match one of each list set.
    pub spki_hashes: Vec<String>,
    pub cert_hashes: Vec<String>,
    /// `subjectAltNames`: (Envoy SAN type, match, OID for otherNames).
    pub sans: Vec<(SanType, StrMatch, String)>,
    /// `allowExpiredCertificate`: an expired client certificate is still accepted.
    pub allow_expired: bool,
    /// `crl`: revoked client certificates are refused.
    pub crl: Option<Crl>,
}

/// `clientValidation.crl`: the revocation lists (PEM, concatenated) Envoy checks client
/// certificates against.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Crl {
    pub pem: Vec<u8>,
    /// `onlyVerifyLeafCertificate`: only the client certificate itself is checked, not its
    /// intermediates (which then need no CRL of their own).
    pub only_leaf: bool,
}

/// A Gateway API style string match (`type`: Exact, Prefix, Suffix, RegularExpression).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

/// What a ClientTrafficPolicy sets, checked. `None` / empty is "not set": Envoy Gateway's
/// defaults (or ours, where we have none) apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClientSettings {
    pub keepalive: Option<Keepalive>,
    pub buffer_limit: Option<u32>,
    pub connection_limit: Option<ConnectionLimit>,
    /// PROXY protocol required (`Some(false)`) or optional (`Some(true)`).
    pub proxy_protocol: Option<bool>,
    pub tcp_idle_timeout: Option<GoDuration>,
    pub request_timeout: Option<GoDuration>,
    /// `timeout.http.requestHeadersReceivedTimeout`.
    pub request_headers_timeout: Option<GoDuration>,
    /// `headers.maxRequestHeaderLimit`, in KiB.
    pub max_request_headers_kb: Option<u32>,
    /// `connection.maxAcceptPerSocketEvent` (0: no limit, Envoy's default).
    pub max_accept_per_socket_event: Option<u32>,
    pub http_idle_timeout: Option<GoDuration>,
    pub stream_idle_timeout: Option<GoDuration>,
    pub client_ip: Option<ClientIp>,
    /// `xForwardedFor.disableXForwardedForAppend`: the peer is not appended to XFF.
    pub skip_xff_append: bool,
    /// `headers.host.stripTrailingHostDot`.
    pub strip_trailing_host_dot: bool,
    pub enable_envoy_headers: bool,
    /// `headers.disableRateLimitHeaders`: the global rate limit filter adds no
    /// `x-ratelimit-*` headers.
    pub disable_rate_limit_headers: bool,
    pub with_underscores: http_protocol_options::HeadersWithUnderscoresAction,
    pub request_id: Option<RequestId>,
    pub xfcc: Option<Xfcc>,
    pub merge_slashes: bool,
    pub escaped_slashes: http_connection_manager::PathWithEscapedSlashesAction,
    pub http1: Option<Http1>,
    pub http2: Http2,
    pub health_check_path: Option<String>,
    /// `grpc.enableWeb`: gRPC-Web requests are translated to gRPC.
    pub grpc_web: bool,
    /// `scheme: MatchBackend`: the `:scheme` sent upstream is the backend connection's
    /// (`MatchRequest`, the default, keeps the client's).
    pub scheme_match_backend: bool,
    /// `http3`: HTTPS listeners also serve HTTP/3 (QUIC) on their port, unless they validate
    /// client certificates (see [`for_listener`](crate::policy::client::for_listener)).
    pub http3: bool,
    /// `headers.earlyRequestHeaders`: applied before routing.
    pub early_request_headers: Vec<HeaderOp>,
    /// `headers.lateResponseHeaders`: applied to every response, last.
    pub late_response_headers: Vec<HeaderOp>,
    pub tls: Tls,
}

/// One header mutation of a header filter (set, add, addIfAbsent, remove), in that order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HeaderOp {
    Set(String, String),
    Add(String, String),
    AddIfAbsent(String, String),
    Remove(String),
    /// Removes the headers whose name matches.
    RemoveOnMatch(StrMatch),
}
