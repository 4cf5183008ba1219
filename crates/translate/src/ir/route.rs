//! Route-level settings of a BackendTrafficPolicy, validated: what a rule's Envoy routes carry
//! (retries, timeout, fault injection, response overrides, compression, buffering, upgrades,
//! bandwidth limits, tracing, admission control).

use super::cluster::Nanos;

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RouteSettings {
    pub retry: Option<Retry>,
    /// `timeout.http.requestTimeout`.
    pub request_timeout: Option<Nanos>,
    pub fault: Option<Fault>,
    pub response_overrides: Vec<ResponseOverride>,
    pub compressors: Vec<CompressorKind>,
    /// `requestBuffer.limit`, bytes.
    pub request_buffer: Option<u32>,
    /// `httpUpgrade` types (Envoy upgrade types, e.g. `websocket`, `spdy/3.1`), CONNECT aside.
    pub upgrades: Vec<String>,
    /// `httpUpgrade` of type CONNECT.
    pub connect: Option<Connect>,
    pub bandwidth_limit: Option<BandwidthLimit>,
    /// `telemetry.tracing`.
    pub tracing: Option<RouteTracing>,
    /// `telemetry.metrics.routeStatName`.
    pub stat_name: Option<RouteStatName>,
    /// `admissionControl`.
    pub admission_control: Option<AdmissionControl>,
}

/// `telemetry.tracing`: the route's share of sampled requests and the tags its spans carry
/// (Envoy Gateway's `buildRouteTracing`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RouteTracing {
    /// `samplingFraction` (or `samplingRate`), in millionths; `None`: Envoy's default (all).
    pub sampling_per_million: Option<u32>,
    /// By tag name (a `tags` entry replaces a `customTags` one of the same name).
    pub tags: std::collections::BTreeMap<String, TracingTag>,
}

/// `telemetry.metrics.routeStatName`: the template of the `stat_prefix` of each Envoy route
/// the policy applies to (Envoy Gateway's `buildRouteStatName`), its operators checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RouteStatName(pub String);

/// The route (and rule) an Envoy route was made from, as a route stat name names it.
pub(crate) struct RouteOrigin<'a> {
    /// `HTTPRoute` or `GRPCRoute` (Envoy Gateway's resource metadata kind, as written).
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub rule: Option<&'a str>,
}

impl RouteStatName {
    /// The operators a route stat name may use (Envoy Gateway's `StatFormatterRoute*`).
    pub const OPERATORS: [&'static str; 4] = [
        "%ROUTE_NAME%",
        "%ROUTE_NAMESPACE%",
        "%ROUTE_KIND%",
        "%ROUTE_RULE_NAME%",
    ];

    /// The stat prefix of a route made from `o`: each operator replaced, in Envoy Gateway's
    /// order; an unnamed rule is `-`.
    pub fn render(&self, o: &RouteOrigin<'_>) -> String {
        self.0
            .replace("%ROUTE_NAME%", o.name)
            .replace("%ROUTE_NAMESPACE%", o.namespace)
            .replace("%ROUTE_KIND%", o.kind)
            .replace("%ROUTE_RULE_NAME%", o.rule.unwrap_or("-"))
    }
}

/// Where a span tag's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TracingTag {
    Literal(String),
    /// An environment variable of the proxy, with a default.
    Environment {
        name: String,
        default: String,
    },
    /// A request header, with a default.
    RequestHeader {
        name: String,
        default: String,
    },
    /// `tags`: a value with access-log command operators (`%REQUEST_HEADER(x)%`).
    Formatted(String),
}

/// `admissionControl` (Envoy Gateway's `AdmissionControl`): Envoy rejects a share of requests
/// while the success rate of the sampling window is below `min_success_rate`. Unset fields take
/// Envoy's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AdmissionControl {
    pub sampling_window: Option<Nanos>,
    /// Percent, 1 to 100.
    pub min_success_rate: Option<u32>,
    /// At least 1.
    pub rejection_aggression: Option<u32>,
    /// Requests per second.
    pub min_request_rate: Option<u32>,
    /// Percent, 0 to 100.
    pub max_rejection_percent: Option<u32>,
    /// HTTP statuses that count as success (empty: Envoy's, below 500).
    pub http_success: Vec<u32>,
    /// gRPC status codes that count as success (empty: Envoy's).
    pub grpc_success: Vec<u32>,
}

/// An `httpUpgrade` of type CONNECT: Envoy either terminates the tunnel itself (answers the
/// CONNECT and sends the payload upstream as a TCP stream) or passes the CONNECT request on.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Connect {
    /// `connect.terminate`.
    pub terminate: bool,
}

/// `bandwidthLimit`: each direction's limit in KiB/s (Envoy's `limit_kbps`, at least 1).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BandwidthLimit {
    pub request_kibps: Option<u64>,
    pub response: Option<ResponseBandwidth>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ResponseBandwidth {
    pub kibps: u64,
    /// `responseTrailers`: the filter reports its delays in trailers, their names prefixed
    /// with `Some(prefix)` when given.
    pub trailers: Option<Option<String>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Retry {
    pub num_retries: Option<u32>,
    pub triggers: Vec<String>,
    pub status_codes: Vec<u32>,
    pub per_try_timeout: Option<Nanos>,
    /// Base and (optional) maximum interval.
    pub backoff: Option<(Nanos, Option<Nanos>)>,
    /// `numAttemptsPerPriority`: attempts per priority before the next is tried.
    pub attempts_per_priority: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Fault {
    pub abort: Option<FaultAbort>,
    pub delay: Option<FaultDelay>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AbortWith {
    Http(u32),
    Grpc(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FaultAbort {
    pub with: AbortWith,
    /// Share of requests, in millionths (None: all).
    pub per_million: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FaultDelay {
    pub fixed: Nanos,
    pub per_million: Option<u32>,
}

/// A response status to match: one code or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum StatusMatch {
    Value(u32),
    Range(u32, u32),
}

/// How a response header value is matched.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ValueMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ResponseOverride {
    /// Any of these statuses (none: any status).
    pub statuses: Vec<StatusMatch>,
    /// All of these response headers (name, value match).
    pub headers: Vec<(String, ValueMatch)>,
    pub content_type: Option<String>,
    pub body: Option<String>,
    pub status: Option<u32>,
    /// `redirect`: the request is redirected instead of answered with a local response.
    pub redirect: Option<Redirect>,
}

/// A response override's `redirect` (Envoy Gateway v1.5+, `CustomRedirect`): Envoy's custom
/// response redirect policy sends the request again, internally, to the URL these parts make
/// (each unset part kept from the original request), and answers with that response under
/// `status`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    /// `path.replaceFullPath`.
    pub path: Option<String>,
    pub port: Option<u32>,
    /// 301 or 302 (Envoy Gateway's default: 302).
    pub status: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CompressorKind {
    Brotli,
    Gzip,
    Zstd,
}

impl CompressorKind {
    pub const ALL: [CompressorKind; 3] = [
        CompressorKind::Brotli,
        CompressorKind::Gzip,
        CompressorKind::Zstd,
    ];

    /// The HTTP filter's name (Envoy Gateway's `envoy.filters.http.compressor.<type>`).
    pub fn filter_name(self) -> &'static str {
        match self {
            CompressorKind::Brotli => "envoy.filters.http.compressor.brotli",
            CompressorKind::Gzip => "envoy.filters.http.compressor.gzip",
            CompressorKind::Zstd => "envoy.filters.http.compressor.zstd",
        }
    }
}

/// Which route kind the filters belong to: GRPCRoute allows fewer filter types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    Http,
    Grpc,
}
