//! A BackendTrafficPolicy's spec → typed, validated settings (Envoy Gateway's
//! `translateBackendTrafficPolicy*` and the `build*` helpers it calls): the route-level
//! settings a rule's Envoy routes carry and the cluster-level settings its clusters are built
//! with. Every value Envoy would refuse is refused here, with Envoy Gateway's message where its
//! corpus shows one, so that an invalid policy gets a status condition and never reaches Envoy.
//! `rateLimit` is translated elsewhere.

use super::FieldErrors;
use crate::index::Index;
use crate::ir::cluster::*;
use crate::ir::route::*;
use crate::values::{parse_go_duration, parse_quantity};
use flotilla_model::{Kind, Object, ResourceKey};
use serde_json::Value;
use std::sync::Arc;

/// A BackendTrafficPolicy, translated.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BackendPolicy {
    pub route: RouteSettings,
    pub cluster: Option<Arc<ClusterSettings>>,
}

/// Translates the spec of policy `key`; the errors are Envoy Gateway's sections and messages.
pub(crate) fn translate(
    ix: &Index,
    key: &ResourceKey,
    spec: &Value,
) -> Result<BackendPolicy, FieldErrors> {
    let mut e = FieldErrors::default();
    let mut p = Parser { spec, e: &mut e };
    let route = RouteSettings {
        retry: p.retry(),
        request_timeout: p.duration("/timeout/http/requestTimeout", "Timeout", "RequestTimeout"),
        fault: p.fault(),
        response_overrides: p.response_overrides(ix, key),
        compressors: p.compressors(),
        request_buffer: p.quantity_u32("/requestBuffer/limit", "RequestBuffer", "limit"),
        upgrades: p.upgrades(),
        connect: p.connect(),
        bandwidth_limit: p.bandwidth_limit(),
        tracing: p.tracing(),
        stat_name: p.route_stat_name(),
        admission_control: p.admission_control(),
    };
    let cluster = ClusterSettings {
        load_balancer: p.load_balancer(),
        circuit_breaker: p.circuit_breaker(),
        active_health_check: p.active_health_check(),
        outlier_detection: p.outlier_detection(),
        buffer_limit: p.quantity_u32(
            "/connection/bufferLimit",
            "BackendConnection",
            "BufferLimit",
        ),
        socket_buffer_limit: p.quantity_u32(
            "/connection/socketBufferLimit",
            "BackendConnection",
            "SocketBufferLimit",
        ),
        tcp_keepalive: p.tcp_keepalive(),
        proxy_protocol: match p.str("/proxyProtocol/version") {
            None => None,
            Some("V1") => Some(ProxyProtocolVersion::V1),
            Some("V2") => Some(ProxyProtocolVersion::V2),
            Some(v) => {
                p.err("ProxyProtocol", format!("unsupported version {v}"));
                None
            }
        },
        dns: p.dns(),
        http2: p.http2(),
        connect_timeout: p.duration("/timeout/tcp/connectTimeout", "Timeout", "ConnectTimeout"),
        idle_timeout: p.duration(
            "/timeout/http/connectionIdleTimeout",
            "Timeout",
            "ConnectionIdleTimeout",
        ),
        max_connection_duration: p.duration(
            "/timeout/http/maxConnectionDuration",
            "Timeout",
            "MaxConnectionDuration",
        ),
        use_client_protocol: p
            .spec
            .pointer("/useClientProtocol")
            .and_then(Value::as_bool)
            == Some(true),
        preconnect: p.preconnect(),
        service_routing: p.service_routing(),
    };
    if e.message().is_some() {
        return Err(e);
    }
    Ok(BackendPolicy {
        route,
        cluster: (!cluster.is_empty()).then(|| Arc::new(cluster)),
    })
}

struct Parser<'a> {
    spec: &'a Value,
    e: &'a mut FieldErrors,
}

/// Gateway API's `PreciseHostname`: a lowercase RFC 1123 subdomain, no wildcard.
fn is_precise_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The number of a gRPC status code by its name in Envoy Gateway's API (`GRPCSuccessCode`).
fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "Ok",
        "Cancelled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    CODES.iter().position(|c| *c == name).map(|i| i as u32)
}

/// Envoy's `google.protobuf.Duration` must be positive where these durations go.
fn positive(n: i64) -> bool {
    n > 0
}

impl<'a> Parser<'a> {
    fn err(&mut self, section: &'static str, msg: String) {
        self.e.add(section, msg);
    }

    fn get(&self, pointer: &str) -> Option<&'a Value> {
        let spec: &'a Value = self.spec;
        spec.pointer(pointer).filter(|v| !v.is_null())
    }

    fn str(&self, pointer: &str) -> Option<&'a str> {
        self.get(pointer).and_then(Value::as_str)
    }

    fn bool(&self, pointer: &str) -> Option<bool> {
        self.get(pointer).and_then(Value::as_bool)
    }

    /// A non-negative integer that fits a u32.
    fn u32(&mut self, pointer: &str, section: &'static str, name: &str) -> Option<u32> {
        let v = self.get(pointer)?;
        match v.as_i64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.err(section, format!("invalid {name} value {v}"));
                None
            }
        }
    }

    /// A Go duration (Envoy Gateway's `invalid <Name> value <v>` when it does not parse).
    fn duration(&mut self, pointer: &str, section: &'static str, name: &str) -> Option<Nanos> {
        let v = self.str(pointer)?.to_string();
        match parse_go_duration(&v) {
            Ok(d) if d.as_nanos() >= 0 => Some(d.as_nanos()),
            _ => {
                self.err(section, format!("invalid {name} value {v}"));
                None
            }
        }
    }

    /// A duration that must be above zero (Envoy refuses zero where it goes).
    fn positive_duration(
        &mut self,
        pointer: &str,
        section: &'static str,
        name: &str,
    ) -> Option<Nanos> {
        let d = self.duration(pointer, section, name)?;
        if !positive(d) {
            self.err(section, format!("{name} must be greater than zero"));
            return None;
        }
        Some(d)
    }

    /// A Kubernetes quantity that fits a u32 (bytes).
    fn quantity_u32(&mut self, pointer: &str, section: &'static str, name: &str) -> Option<u32> {
        let v = self.get(pointer)?;
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        match parse_quantity(&text) {
            Some(q) if q.fract() == 0.0 && (0.0..=4_294_967_295.0).contains(&q) => Some(q as u32),
            Some(q) if q.fract() == 0.0 => {
                self.err(section, format!("{name} value {text} is out of range"));
                None
            }
            _ => {
                self.err(section, format!("invalid {name} value {text}"));
                None
            }
        }
    }

    /// A percentage (0 to 100) as millionths.
    fn percent(&mut self, pointer: &str, section: &'static str) -> Option<u32> {
        let v = self.get(pointer)?;
        match v.as_f64() {
            Some(p) if (0.0..=100.0).contains(&p) => Some((p * 10_000.0).round() as u32),
            _ => {
                self.err(section, format!("invalid percentage {v}"));
                None
            }
        }
    }

    /// `bandwidthLimit`, per direction in KiB/s as Envoy Gateway's `bandwidthToKibps` computes
    /// it (bytes per unit / (seconds per unit × 1024), rounded down, at least 1).
    fn bandwidth_limit(&mut self) -> Option<BandwidthLimit> {
        let mut out = BandwidthLimit::default();
        for dir in ["request", "response"] {
            let Some(v) = self.get(&format!("/bandwidthLimit/{dir}/limit/value")) else {
                continue;
            };
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let unit = self
                .str(&format!("/bandwidthLimit/{dir}/limit/unit"))
                .unwrap_or("Second")
                .to_string();
            let per_unit: f64 = match unit.as_str() {
                "Minute" => 60.0,
                "Hour" => 3600.0,
                _ => 1.0,
            };
            match parse_quantity(&text) {
                Some(q) if q >= 0.0 && (q / (per_unit * 1024.0)).floor() >= 1.0 => {
                    let kibps = (q / (per_unit * 1024.0)).floor() as u64;
                    if dir == "request" {
                        out.request_kibps = Some(kibps);
                    } else {
                        let trailers = self.get("/bandwidthLimit/response/responseTrailers").map(
                            |t| t.get("prefix").and_then(Value::as_str).map(str::to_string),
                        );
                        out.response = Some(ResponseBandwidth { kibps, trailers });
                    }
                }
                Some(q) if q >= 0.0 => self.err(
                    "BandwidthLimit",
                    format!(
                        "{dir}: bandwidth limit of {q} bytes per {unit} is below the minimum of 1 KiB/s"
                    ),
                ),
                _ => self.err(
                    "BandwidthLimit",
                    format!("{dir}: invalid bandwidth limit {text}"),
                ),
            }
        }
        (out != BandwidthLimit::default()).then_some(out)
    }

    fn retry(&mut self) -> Option<Retry> {
        self.get("/retry")?;
        let mut r = Retry {
            num_retries: self.u32("/retry/numRetries", "Retry", "NumRetries"),
            ..Default::default()
        };
        if let Some(ts) = self
            .get("/retry/retryOn/triggers")
            .and_then(Value::as_array)
        {
            for t in ts {
                match t.as_str() {
                    Some(
                        s @ ("5xx"
                        | "gateway-error"
                        | "reset"
                        | "reset-before-request"
                        | "connect-failure"
                        | "retriable-4xx"
                        | "refused-stream"
                        | "retriable-status-codes"
                        | "cancelled"
                        | "deadline-exceeded"
                        | "internal"
                        | "resource-exhausted"
                        | "unavailable"),
                    ) => r.triggers.push(s.to_string()),
                    _ => self.err("Retry", format!("unsupported retry trigger {t}")),
                }
            }
        }
        if let Some(cs) = self
            .get("/retry/retryOn/httpStatusCodes")
            .and_then(Value::as_array)
        {
            for c in cs {
                match c.as_u64().filter(|c| (100..=599).contains(c)) {
                    Some(c) => r.status_codes.push(c as u32),
                    None => self.err("Retry", format!("invalid HTTPStatusCode value {c}")),
                }
            }
        }
        r.attempts_per_priority = self.u32(
            "/retry/numAttemptsPerPriority",
            "Retry",
            "NumAttemptsPerPriority",
        );
        r.per_try_timeout =
            self.positive_duration("/retry/perRetry/timeout", "Retry", "PerRetry Timeout");
        let base = self.duration(
            "/retry/perRetry/backOff/baseInterval",
            "Retry",
            "BaseInterval",
        );
        let max = self.duration(
            "/retry/perRetry/backOff/maxInterval",
            "Retry",
            "MaxInterval",
        );
        match (base, max) {
            (Some(0), _) => self.err("Retry", "baseInterval cannot be set to 0s".into()),
            (Some(b), Some(m)) if m < b => self.err(
                "Retry",
                "maxInterval cannot be less than baseInterval".into(),
            ),
            (Some(b), m) => r.backoff = Some((b, m)),
            (None, _) => {}
        }
        Some(r)
    }

    fn fault(&mut self) -> Option<Fault> {
        self.get("/faultInjection")?;
        let mut f = Fault::default();
        if self.get("/faultInjection/abort").is_some() {
            let http = self.u32(
                "/faultInjection/abort/httpStatus",
                "FaultInjection",
                "HTTPStatus",
            );
            let grpc = self.u32(
                "/faultInjection/abort/grpcStatus",
                "FaultInjection",
                "GRPCStatus",
            );
            let with = match (http, grpc) {
                (Some(h), None) if (200..600).contains(&h) => Some(AbortWith::Http(h)),
                (Some(h), None) => {
                    self.err(
                        "FaultInjection",
                        format!("invalid abort HTTPStatus value {h}"),
                    );
                    None
                }
                (None, Some(g)) => Some(AbortWith::Grpc(g)),
                _ => {
                    self.err(
                        "FaultInjection",
                        "abort must set exactly one of httpStatus and grpcStatus".into(),
                    );
                    None
                }
            };
            let per_million = self.percent("/faultInjection/abort/percentage", "FaultInjection");
            f.abort = with.map(|with| FaultAbort { with, per_million });
        }
        if self.get("/faultInjection/delay").is_some() {
            let fixed = self.duration(
                "/faultInjection/delay/fixedDelay",
                "FaultInjection",
                "FixedDelay",
            );
            let per_million = self.percent("/faultInjection/delay/percentage", "FaultInjection");
            match fixed {
                Some(fixed) => f.delay = Some(FaultDelay { fixed, per_million }),
                None => self.err("FaultInjection", "delay needs a fixedDelay".into()),
            }
        }
        if f.abort.is_none() && f.delay.is_none() {
            return None;
        }
        Some(f)
    }

    fn response_overrides(&mut self, ix: &Index, key: &ResourceKey) -> Vec<ResponseOverride> {
        let Some(list) = self.get("/responseOverride").and_then(Value::as_array) else {
            return vec![];
        };
        let mut out = Vec::new();
        for ro in list {
            let mut o = ResponseOverride::default();
            for s in ro
                .pointer("/match/statusCodes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let code = |p: &str| {
                    s.pointer(p)
                        .and_then(Value::as_u64)
                        .and_then(|c| u32::try_from(c).ok())
                        .filter(|c| (100..=599).contains(c))
                };
                match s.get("type").and_then(Value::as_str).unwrap_or("Value") {
                    "Range" => match (code("/range/start"), code("/range/end")) {
                        (Some(a), Some(b)) if a <= b => o.statuses.push(StatusMatch::Range(a, b)),
                        _ => self.err("ResponseOverride", format!("invalid status range {s}")),
                    },
                    _ => match code("/value") {
                        Some(c) => o.statuses.push(StatusMatch::Value(c)),
                        None => self.err("ResponseOverride", format!("invalid status code {s}")),
                    },
                }
            }
            for h in ro
                .pointer("/match/responseHeaders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = h.get("name").and_then(Value::as_str).unwrap_or_default();
                let value = h
                    .pointer("/value/value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let m = match h.pointer("/value/type").and_then(Value::as_str) {
                    None | Some("Exact") => ValueMatch::Exact(value),
                    Some("Prefix") => ValueMatch::Prefix(value),
                    Some("Suffix") => ValueMatch::Suffix(value),
                    Some("RegularExpression") => {
                        if let Err(e) = crate::values::check_regex(&value) {
                            self.err("ResponseOverride", e);
                            continue;
                        }
                        ValueMatch::Regex(value)
                    }
                    Some(t) => {
                        self.err("ResponseOverride", format!("unsupported match type {t}"));
                        continue;
                    }
                };
                if name.is_empty() {
                    self.err(
                        "ResponseOverride",
                        "a response header match needs a name".into(),
                    );
                    continue;
                }
                o.headers.push((name.to_ascii_lowercase(), m));
            }
            if o.statuses.is_empty() && o.headers.is_empty() {
                continue;
            }
            if let Some(r) = ro.get("redirect").filter(|r| !r.is_null()) {
                if ro.get("response").is_some_and(|r| !r.is_null()) {
                    self.err(
                        "ResponseOverride",
                        "exactly one of response or redirect must be specified".into(),
                    );
                    continue;
                }
                if let Some(r) = self.redirect(r) {
                    o.redirect = Some(r);
                    out.push(o);
                }
                continue;
            }
            o.content_type = ro
                .pointer("/response/contentType")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.status = ro
                .pointer("/response/statusCode")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok());
            if let Some(c) = ro.pointer("/response/statusCode") {
                if !o.status.is_some_and(|c| (200..=599).contains(&c)) {
                    self.err("ResponseOverride", format!("invalid statusCode {c}"));
                }
            }
            if let Some(b) = ro.pointer("/response/body") {
                match b.get("type").and_then(Value::as_str).unwrap_or("Inline") {
                    "ValueRef" => {
                        let name = b
                            .pointer("/valueRef/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let ns = &key.namespace;
                        let cm = ResourceKey::new(&key.cluster, Kind::ConfigMap, ns, name);
                        match ix.resources.get(&cm).map(|r| &r.object) {
                            Some(Object::ConfigMap(c)) => {
                                match c.data.as_ref().and_then(|d| d.get("response.body")) {
                                    Some(v) => o.body = Some(v.clone()),
                                    None => self.err(
                                        "ResponseOverride",
                                        format!(
                                            "can't find the key response.body in the referenced configmap {name}"
                                        ),
                                    ),
                                }
                            }
                            _ => self.err(
                                "ResponseOverride",
                                format!("can't find the referenced configmap {ns}/{name}"),
                            ),
                        }
                    }
                    _ => {
                        o.body = b.get("inline").and_then(Value::as_str).map(str::to_string);
                    }
                }
            }
            out.push(o);
        }
        out
    }

    /// A response override's `redirect`, checked as Envoy Gateway's CRD checks it (scheme
    /// `http` or `https`, a precise hostname, `ReplaceFullPath` only, a port, 301 or 302).
    fn redirect(&mut self, r: &Value) -> Option<Redirect> {
        let mut errs: Vec<String> = Vec::new();
        let text = |f: &str| r.pointer(f).filter(|v| !v.is_null());
        let scheme = match text("/scheme") {
            None => None,
            Some(Value::String(s)) if s == "http" || s == "https" => Some(s.clone()),
            Some(v) => {
                errs.push(format!("unsupported scheme {v}, must be http or https"));
                None
            }
        };
        let hostname = match text("/hostname") {
            None => None,
            Some(Value::String(h)) if is_precise_hostname(h) => Some(h.clone()),
            Some(v) => {
                errs.push(format!("invalid hostname {v}"));
                None
            }
        };
        let path = match text("/path") {
            None => None,
            Some(p) => match (
                p.get("type").and_then(Value::as_str),
                p.get("replaceFullPath").and_then(Value::as_str),
            ) {
                // A path of visible ASCII that starts with `/`: anything else makes no URL.
                (Some("ReplaceFullPath"), Some(f))
                    if f.starts_with('/') && f.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Some(f.to_string())
                }
                (Some("ReplaceFullPath"), f) => {
                    errs.push(format!("invalid replaceFullPath {f:?}"));
                    None
                }
                _ => {
                    errs.push("only ReplaceFullPath is supported for path.type".into());
                    None
                }
            },
        };
        let port = match text("/port") {
            None => None,
            Some(v) => match v.as_u64().filter(|p| (1..=65_535).contains(p)) {
                Some(p) => Some(p as u32),
                None => {
                    errs.push(format!("invalid port {v}"));
                    None
                }
            },
        };
        let status = match text("/statusCode") {
            // Envoy Gateway's CRD default.
            None => 302,
            Some(v) => match v.as_u64().filter(|c| *c == 301 || *c == 302) {
                Some(c) => c as u32,
                None => {
                    errs.push(format!("unsupported statusCode {v}, must be 301 or 302"));
                    302
                }
            },
        };
        if !errs.is_empty() {
            for e in errs {
                self.err("ResponseOverride", format!("redirect: {e}"));
            }
            return None;
        }
        Some(Redirect {
            scheme,
            hostname,
            path,
            port,
            status,
        })
    }

    fn compressors(&mut self) -> Vec<CompressorKind> {
        let mut out = Vec::new();
        for p in ["/compression", "/compressor"] {
            for c in self.get(p).and_then(Value::as_array).into_iter().flatten() {
                let kind = match c.get("type").and_then(Value::as_str) {
                    Some("Gzip") => CompressorKind::Gzip,
                    Some("Brotli") => CompressorKind::Brotli,
                    Some("Zstd") => CompressorKind::Zstd,
                    _ => {
                        self.e
                            .add("Compression", format!("unsupported compressor {c}"));
                        continue;
                    }
                };
                if !out.contains(&kind) {
                    out.push(kind);
                }
            }
        }
        out
    }

    fn upgrades(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for u in self
            .get("/httpUpgrade")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match u.get("type").and_then(Value::as_str) {
                // See `connect`.
                Some(t) if t.eq_ignore_ascii_case("connect") => {}
                Some(t) if !t.is_empty() => out.push(t.to_string()),
                _ => self.err("HTTPUpgrade", format!("unsupported upgrade {u}")),
            }
        }
        out
    }

    /// The `httpUpgrade` of type CONNECT, if any (Envoy Gateway's `connect.terminate`, false
    /// when unset: the CONNECT request is passed on).
    fn connect(&mut self) -> Option<Connect> {
        let mut out = None;
        for u in self
            .get("/httpUpgrade")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let is_connect = u
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("connect"));
            let settings = u.get("connect").filter(|c| !c.is_null());
            if !is_connect {
                if settings.is_some() {
                    self.err(
                        "HTTPUpgrade",
                        "connect settings are only allowed with the CONNECT upgrade type".into(),
                    );
                }
                continue;
            }
            let terminate = match settings.map(|c| c.get("terminate")) {
                None | Some(None) | Some(Some(Value::Null)) => false,
                Some(Some(Value::Bool(b))) => *b,
                Some(Some(v)) => {
                    self.err(
                        "HTTPUpgrade",
                        format!("invalid connect terminate value {v}"),
                    );
                    false
                }
            };
            if out.is_some() {
                self.err("HTTPUpgrade", "the CONNECT upgrade is listed twice".into());
            }
            out = Some(Connect { terminate });
        }
        out
    }

    /// `telemetry.tracing` (Envoy Gateway's `Tracing`: a sampling fraction, `customTags` of
    /// type Literal, Environment or RequestHeader, and `tags` with command operators).
    fn tracing(&mut self) -> Option<RouteTracing> {
        self.get("/telemetry/tracing")?;
        let section = "Telemetry";
        let mut out = RouteTracing::default();
        let fraction = self.get("/telemetry/tracing/samplingFraction");
        let rate = self.get("/telemetry/tracing/samplingRate");
        if fraction.is_some() && rate.is_some() {
            self.err(
                section,
                "only one of samplingRate or samplingFraction can be specified".into(),
            );
        }
        if let Some(f) = fraction {
            let num = f.get("numerator").and_then(Value::as_u64);
            // Gateway API's Fraction: the denominator defaults to 100.
            let den = match f.get("denominator") {
                None | Some(Value::Null) => Some(100),
                Some(d) => d.as_u64(),
            };
            match (num, den) {
                (Some(n), Some(d)) if d > 0 && n <= d => {
                    out.sampling_per_million =
                        Some(((n as f64) * 1_000_000.0 / (d as f64)).round() as u32);
                }
                _ => self.err(
                    section,
                    format!("invalid samplingFraction {f}: the numerator must be at most a denominator above zero"),
                ),
            }
        }
        if let Some(r) = rate {
            match r.as_u64().filter(|r| *r <= 100) {
                Some(r) => out.sampling_per_million = Some(r as u32 * 10_000),
                None => self.err(section, format!("invalid samplingRate {r}")),
            }
        }
        let custom = self
            .get("/telemetry/tracing/customTags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (tag, c) in custom {
            let text = |p: &str| c.pointer(p).and_then(Value::as_str).map(str::to_string);
            let t = c.get("type").and_then(Value::as_str).unwrap_or("Literal");
            let value = match t {
                "Literal" => text("/literal/value").map(TracingTag::Literal),
                "Environment" => text("/environment/name").map(|name| TracingTag::Environment {
                    name,
                    default: text("/environment/defaultValue").unwrap_or_default(),
                }),
                "RequestHeader" => {
                    text("/requestHeader/name").map(|name| TracingTag::RequestHeader {
                        name,
                        default: text("/requestHeader/defaultValue").unwrap_or_default(),
                    })
                }
                other => {
                    // Envoy Gateway's `buildTracingTags`; it takes no metadata tags.
                    self.err(section, format!("unknown custom tag type: {other}"));
                    continue;
                }
            };
            match value {
                Some(v) => {
                    out.tags.insert(tag, v);
                }
                None => self.err(
                    section,
                    format!("custom tag {tag} of type {t} is missing its settings"),
                ),
            }
        }
        let tags = self
            .get("/telemetry/tracing/tags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (tag, v) in tags {
            match v.as_str() {
                Some(v) => {
                    out.tags.insert(tag, TracingTag::Formatted(v.to_string()));
                }
                None => self.err(section, format!("invalid value of tag {tag}: {v}")),
            }
        }
        Some(out)
    }

    /// `telemetry.metrics.routeStatName`. Envoy Gateway's `validateTelemetry` refuses an
    /// operator (`%...%`, as its regex `%[^%]*%` finds them) it does not replace; an empty
    /// name is no name.
    fn route_stat_name(&mut self) -> Option<RouteStatName> {
        let name = self.str("/telemetry/metrics/routeStatName")?;
        if name.is_empty() {
            return None;
        }
        let mut valid = true;
        let mut rest = name;
        while let Some(start) = rest.find('%') {
            let Some(len) = rest[start + 1..].find('%') else {
                break;
            };
            let op = &rest[start..start + len + 2];
            if !RouteStatName::OPERATORS.contains(&op) {
                // Envoy Gateway's wording for a cluster stat name's (`validateClusterStatName`).
                self.err(
                    "Telemetry",
                    format!("unable to configure Route Stat Name with unsupported operator: {op}"),
                );
                valid = false;
            }
            rest = &rest[start + len + 2..];
        }
        valid.then(|| RouteStatName(name.to_string()))
    }

    /// `admissionControl`, with the bounds of Envoy Gateway's CRD (which Envoy's own are).
    fn admission_control(&mut self) -> Option<AdmissionControl> {
        self.get("/admissionControl")?;
        let section = "AdmissionControl";
        let f = |field: &str| format!("/admissionControl/{field}");
        let sampling_window = self.duration(&f("samplingWindow"), section, "SamplingWindow");
        if sampling_window.is_some_and(|w| w < 1_000_000_000) {
            self.err(section, "samplingWindow must be at least 1s".into());
        }
        let bounded =
            |p: &mut Self, field: &str, name: &str, range: std::ops::RangeInclusive<u32>| {
                let v = p.u32(&f(field), section, name)?;
                if !range.contains(&v) {
                    p.err(
                        section,
                        format!(
                            "{field} must be between {} and {}",
                            range.start(),
                            range.end()
                        ),
                    );
                    return None;
                }
                Some(v)
            };
        let min_success_rate = bounded(self, "minSuccessRate", "MinSuccessRate", 1..=100);
        let rejection_aggression = bounded(
            self,
            "rejectionAggression",
            "RejectionAggression",
            1..=u32::MAX,
        );
        let max_rejection_percent =
            bounded(self, "maxRejectionPercent", "MaxRejectionPercent", 0..=100);
        let min_request_rate = self.u32(&f("minRequestRate"), section, "MinRequestRate");
        let mut http_success = Vec::new();
        for c in self
            .get(&f("successCriteria/http/statusCodes"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            // Envoy takes [100, 600).
            match c.as_u64().filter(|c| (100..600).contains(c)) {
                Some(c) => http_success.push(c as u32),
                None => self.err(section, format!("invalid HTTP status code {c}")),
            }
        }
        let mut grpc_success = Vec::new();
        for c in self
            .get(&f("successCriteria/grpc/statusCodes"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            match c.as_str().and_then(grpc_code) {
                Some(n) => grpc_success.push(n),
                None => self.err(section, format!("unknown gRPC status code {c}")),
            }
        }
        Some(AdmissionControl {
            sampling_window,
            min_success_rate,
            rejection_aggression,
            min_request_rate,
            max_rejection_percent,
            http_success,
            grpc_success,
        })
    }

    /// `routingType`: `Service` routes to the Service's cluster IP (Envoy Gateway's
    /// `IsServiceRouting`); `Endpoint`, the default, to its endpoints.
    fn service_routing(&mut self) -> bool {
        match self.str("/routingType") {
            None | Some("Endpoint") => false,
            Some("Service") => true,
            Some(o) => {
                self.err("RoutingType", format!("unsupported routing type {o}"));
                false
            }
        }
    }

    /// `connection.preconnect`: Envoy takes ratios from 1 to 3 (100% to 300%).
    fn preconnect(&mut self) -> Option<(Option<u32>, Option<u32>)> {
        self.get("/connection/preconnect")?;
        let pct = |p: &mut Self, f: &str, name: &str| {
            let v = p.u32(
                &format!("/connection/preconnect/{f}"),
                "BackendConnection",
                name,
            )?;
            if !(100..=300).contains(&v) {
                p.err(
                    "BackendConnection",
                    format!("{name} value {v} is out of range, must be between 100 and 300"),
                );
                return None;
            }
            Some(v)
        };
        let per = pct(self, "perEndpointPercent", "PerEndpointPercent");
        let predictive = pct(self, "predictivePercent", "PredictivePercent");
        (per.is_some() || predictive.is_some()).then_some((per, predictive))
    }

    fn load_balancer(&mut self) -> Option<LoadBalancer> {
        let t = self.str("/loadBalancer/type")?.to_string();
        let policy = match t.as_str() {
            "RoundRobin" => LbPolicy::RoundRobin,
            "Random" => LbPolicy::Random,
            "LeastRequest" => LbPolicy::LeastRequest,
            "ConsistentHash" => {
                let ch = |f: &str| format!("/loadBalancer/consistentHash/{f}");
                let names = |p: &Self, f: &str| -> Vec<String> {
                    p.get(&ch(f))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|h| h.get("name").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect()
                };
                let hash: Vec<HashOn> = match self.str(&ch("type")) {
                    Some("SourceIP") => vec![HashOn::SourceIp],
                    Some("Header") => self
                        .str(&ch("header/name"))
                        .map(|h| HashOn::Header(h.to_ascii_lowercase()))
                        .into_iter()
                        .collect(),
                    // Several headers: one hash policy each, hashed together.
                    Some("Headers") => names(self, "headers")
                        .into_iter()
                        .map(|h| HashOn::Header(h.to_ascii_lowercase()))
                        .collect(),
                    Some("Cookie") => {
                        let ttl = self.duration(&ch("cookie/ttl"), "LoadBalancer", "Cookie TTL");
                        self.str(&ch("cookie/name"))
                            .map(|name| HashOn::Cookie {
                                name: name.to_string(),
                                ttl,
                            })
                            .into_iter()
                            .collect()
                    }
                    Some("QueryParams") => names(self, "queryParams")
                        .into_iter()
                        .map(HashOn::QueryParameter)
                        .collect(),
                    _ => vec![],
                };
                if hash.is_empty() {
                    self.err(
                        "LoadBalancer",
                        "ConsistentHash: the hash type's settings are missing".into(),
                    );
                    return None;
                }
                LbPolicy::ConsistentHash {
                    hash,
                    table_size: self.get(&ch("tableSize")).and_then(Value::as_u64),
                }
            }
            "BackendUtilization" => LbPolicy::BackendUtilization(self.backend_utilization()),
            other => {
                self.err(
                    "LoadBalancer",
                    format!("unsupported load balancer type {other}"),
                );
                return None;
            }
        };
        let slow_start_window = self.duration(
            "/loadBalancer/slowStart/window",
            "LoadBalancer",
            "SlowStart Window",
        );
        if slow_start_window.is_some()
            && matches!(policy, LbPolicy::Random | LbPolicy::ConsistentHash { .. })
        {
            self.err(
                "LoadBalancer",
                "slowStart is supported for RoundRobin and LeastRequest load balancers only".into(),
            );
        }
        let zone_aware = self
            .get("/loadBalancer/zoneAware/preferLocal")
            .map(|_| ZoneAware {
                min_endpoints_threshold: self
                    .get("/loadBalancer/zoneAware/preferLocal/minEndpointsThreshold")
                    .and_then(Value::as_u64),
                percentage_enabled: self
                    .get("/loadBalancer/zoneAware/preferLocal/percentageEnabled")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .map(|n| n.min(100)),
                force_min_endpoints_in_zone: self
                    .get("/loadBalancer/zoneAware/preferLocal/force/minEndpointsInZoneThreshold")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok()),
            });
        // Envoy takes no zone-aware routing with a load balancing policy extension.
        if zone_aware.is_some() && matches!(policy, LbPolicy::BackendUtilization(_)) {
            self.err(
                "LoadBalancer",
                "zoneAware.preferLocal is not supported with the BackendUtilization load balancer"
                    .into(),
            );
        }
        Some(LoadBalancer {
            policy,
            slow_start_window,
            zone_aware,
        })
    }

    /// `loadBalancer.backendUtilization` (every field optional).
    fn backend_utilization(&mut self) -> BackendUtilization {
        let f = |field: &str| format!("/loadBalancer/backendUtilization/{field}");
        let section = "LoadBalancer";
        let metric_names = match self.get(&f("metricNamesForComputingUtilization")) {
            None => vec![],
            Some(Value::Array(names))
                if names
                    .iter()
                    .all(|n| n.as_str().is_some_and(|n| !n.is_empty())) =>
            {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            }
            Some(v) => {
                self.err(
                    section,
                    format!("invalid MetricNamesForComputingUtilization value {v}"),
                );
                vec![]
            }
        };
        let out_of_band = self.get(&f("outOfBand")).map(|_| OutOfBandReports {
            reporting_period: self.positive_duration(
                &f("outOfBand/reportingPeriod"),
                section,
                "OutOfBand ReportingPeriod",
            ),
            port: self
                .u32(&f("outOfBand/port"), section, "OutOfBand Port")
                .and_then(|p| {
                    if (1..=65_535).contains(&p) {
                        Some(p)
                    } else {
                        self.err(section, format!("invalid OutOfBand Port value {p}"));
                        None
                    }
                }),
            authority: self.str(&f("outOfBand/authority")).map(str::to_string),
        });
        BackendUtilization {
            blackout_period: self.duration(&f("blackoutPeriod"), section, "BlackoutPeriod"),
            weight_expiration_period: self.positive_duration(
                &f("weightExpirationPeriod"),
                section,
                "WeightExpirationPeriod",
            ),
            weight_update_period: self.positive_duration(
                &f("weightUpdatePeriod"),
                section,
                "WeightUpdatePeriod",
            ),
            error_utilization_penalty_percent: self.u32(
                &f("errorUtilizationPenaltyPercent"),
                section,
                "ErrorUtilizationPenaltyPercent",
            ),
            metric_names,
            keep_response_headers: self.bool(&f("keepResponseHeaders")).unwrap_or(false),
            out_of_band,
        }
    }

    fn circuit_breaker(&mut self) -> Option<CircuitBreaker> {
        self.get("/circuitBreaker")?;
        let f = |p: &mut Self, field: &str, name: &str| {
            p.u32(&format!("/circuitBreaker/{field}"), "CircuitBreaker", name)
        };
        Some(CircuitBreaker {
            max_connections: f(self, "maxConnections", "MaxConnections"),
            max_pending_requests: f(self, "maxPendingRequests", "MaxPendingRequests"),
            max_parallel_requests: f(self, "maxParallelRequests", "MaxParallelRequests"),
            max_parallel_retries: f(self, "maxParallelRetries", "MaxParallelRetries"),
            max_requests_per_connection: f(
                self,
                "maxRequestsPerConnection",
                "MaxRequestsPerConnection",
            ),
        })
    }

    fn payload(&mut self, pointer: &str) -> Option<Payload> {
        let p = self.get(pointer)?.clone();
        match p.get("type").and_then(Value::as_str) {
            Some("Binary") => {
                use base64::Engine;
                let text = p.get("binary").and_then(Value::as_str).unwrap_or_default();
                match base64::engine::general_purpose::STANDARD.decode(text) {
                    Ok(b) => Some(Payload::Binary(b)),
                    Err(_) => {
                        self.err("HealthCheck", format!("invalid binary payload {text}"));
                        None
                    }
                }
            }
            _ => p
                .get("text")
                .and_then(Value::as_str)
                .map(|t| Payload::Text(t.to_string())),
        }
    }

    fn statuses(&mut self, pointer: &str) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for s in self
            .get(pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            match s.as_u64().filter(|c| (100..600).contains(c)) {
                Some(c) => out.push((c as u32, c as u32 + 1)),
                None => self.err("HealthCheck", format!("invalid status code {s}")),
            }
        }
        out
    }

    fn active_health_check(&mut self) -> Option<ActiveHealthCheck> {
        self.get("/healthCheck/active")?;
        let a = |f: &str| format!("/healthCheck/active/{f}");
        let timeout = self
            .positive_duration(&a("timeout"), "HealthCheck", "Timeout")
            .unwrap_or(1_000_000_000);
        let interval = self
            .positive_duration(&a("interval"), "HealthCheck", "Interval")
            .unwrap_or(3_000_000_000);
        let initial_jitter = self.duration(&a("initialJitter"), "HealthCheck", "InitialJitter");
        let unhealthy_threshold = self
            .u32(
                &a("unhealthyThreshold"),
                "HealthCheck",
                "UnhealthyThreshold",
            )
            .unwrap_or(3);
        let healthy_threshold = self
            .u32(&a("healthyThreshold"), "HealthCheck", "HealthyThreshold")
            .unwrap_or(1);
        let kind = match self.str(&a("type")).unwrap_or("HTTP") {
            "HTTP" => {
                let Some(path) = self.str(&a("http/path")).map(str::to_string) else {
                    self.err("HealthCheck", "HTTP health checker must have a path".into());
                    return None;
                };
                HealthCheckKind::Http {
                    path,
                    host: self.str(&a("http/hostname")).map(str::to_string),
                    method: self.str(&a("http/method")).map(str::to_ascii_uppercase),
                    expected: self.statuses(&a("http/expectedStatuses")),
                    retriable: self.statuses(&a("http/retriableStatuses")),
                    response: self.payload(&a("http/expectedResponse")),
                    request: self.payload(&a("http/requestBody")),
                }
            }
            "TCP" => HealthCheckKind::Tcp {
                send: self.payload(&a("tcp/send")),
                receive: self.payload(&a("tcp/receive")),
            },
            "GRPC" => HealthCheckKind::Grpc {
                service: self.str(&a("grpc/service")).map(str::to_string),
            },
            other => {
                self.err(
                    "HealthCheck",
                    format!("unsupported health checker type {other}"),
                );
                return None;
            }
        };
        if healthy_threshold == 0 || unhealthy_threshold == 0 {
            self.err("HealthCheck", "thresholds must be greater than zero".into());
        }
        Some(ActiveHealthCheck {
            timeout,
            interval,
            initial_jitter,
            unhealthy_threshold,
            healthy_threshold,
            kind,
        })
    }

    fn outlier_detection(&mut self) -> Option<OutlierDetection> {
        self.get("/healthCheck/passive")?;
        let p = |f: &str| format!("/healthCheck/passive/{f}");
        let max_ejection_percent = self.u32(
            &p("maxEjectionPercent"),
            "HealthCheck",
            "MaxEjectionPercent",
        );
        if max_ejection_percent.is_some_and(|m| m > 100) {
            self.err(
                "HealthCheck",
                "maxEjectionPercent must be at most 100".into(),
            );
        }
        Some(OutlierDetection {
            split_external_local_origin_errors: self.bool(&p("splitExternalLocalOriginErrors")),
            interval: self.positive_duration(&p("interval"), "HealthCheck", "Interval"),
            consecutive_local_origin_failures: self.u32(
                &p("consecutiveLocalOriginFailures"),
                "HealthCheck",
                "ConsecutiveLocalOriginFailures",
            ),
            consecutive_gateway_errors: self.u32(
                &p("consecutiveGatewayErrors"),
                "HealthCheck",
                "ConsecutiveGatewayErrors",
            ),
            consecutive_5xx: self.u32(
                &p("consecutive5XxErrors"),
                "HealthCheck",
                "Consecutive5xxErrors",
            ),
            base_ejection_time: self.positive_duration(
                &p("baseEjectionTime"),
                "HealthCheck",
                "BaseEjectionTime",
            ),
            max_ejection_percent,
        })
    }

    fn tcp_keepalive(&mut self) -> Option<TcpKeepalive> {
        self.get("/tcpKeepalive")?;
        let secs = |p: &mut Self, f: &str, name: &str| {
            let d = p.duration(&format!("/tcpKeepalive/{f}"), "TCPKeepalive", name)?;
            match u32::try_from(d / 1_000_000_000) {
                Ok(s) if s > 0 => Some(s),
                _ => {
                    p.err("TCPKeepalive", format!("{name} must be at least 1s"));
                    None
                }
            }
        };
        Some(TcpKeepalive {
            probes: self.u32("/tcpKeepalive/probes", "TCPKeepalive", "Probes"),
            idle_time: secs(self, "idleTime", "IdleTime"),
            interval: secs(self, "interval", "Interval"),
        })
    }

    fn dns(&mut self) -> Option<Dns> {
        self.get("/dns")?;
        let refresh_rate = self.duration("/dns/dnsRefreshRate", "DNS", "DNSRefreshRate");
        // Envoy takes a refresh rate above 1ms only.
        if refresh_rate.is_some_and(|d| d <= 1_000_000) {
            self.err("DNS", "dnsRefreshRate must be greater than 1ms".into());
        }
        let lookup_family = match self.str("/dns/lookupFamily") {
            None => None,
            Some("IPv4") => Some(DnsFamily::V4Only),
            Some("IPv6") => Some(DnsFamily::V6Only),
            Some("IPv4Preferred") => Some(DnsFamily::V4Preferred),
            Some("IPv6Preferred") => Some(DnsFamily::V6Preferred),
            Some("IPv4AndIPv6") => Some(DnsFamily::All),
            // Envoy Gateway takes any other value as unset.
            Some(_) => None,
        };
        Some(Dns {
            refresh_rate,
            respect_ttl: self.bool("/dns/respectDnsTtl"),
            lookup_family,
        })
    }

    fn http2(&mut self) -> Option<Http2> {
        self.get("/http2")?;
        // Envoy's bounds on HTTP/2 flow-control windows.
        let window = |p: &mut Self, f: &str, name: &str| {
            let w = p.quantity_u32(&format!("/http2/{f}"), "HTTP2", name)?;
            if !(65_535..=2_147_483_647).contains(&w) {
                p.err("HTTP2", format!("{name} value {w} is out of range"));
                return None;
            }
            Some(w)
        };
        let terminate_stream_on_invalid = match self.str("/http2/onInvalidMessage") {
            None => None,
            Some("TerminateStream") => Some(true),
            Some("TerminateConnection") => Some(false),
            Some(o) => {
                self.err("HTTP2", format!("unsupported onInvalidMessage {o}"));
                None
            }
        };
        Some(Http2 {
            initial_stream_window_size: window(
                self,
                "initialStreamWindowSize",
                "InitialStreamWindowSize",
            ),
            initial_connection_window_size: window(
                self,
                "initialConnectionWindowSize",
                "InitialConnectionWindowSize",
            ),
            max_concurrent_streams: self.u32(
                "/http2/maxConcurrentStreams",
                "HTTP2",
                "MaxConcurrentStreams",
            ),
            terminate_stream_on_invalid,
        })
    }
}
