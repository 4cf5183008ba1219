//! The route-level settings a rule's Envoy routes carry, read from the spec: retries, fault
//! injection, compression, HTTP upgrades (CONNECT among them) and bandwidth limits. Response
//! overrides are in [`super::response_override`], tracing and admission control in
//! [`super::telemetry`].

use super::parser::Parser;
use crate::ir::route::*;
use crate::values::parse_quantity;
use serde_json::Value;

impl Parser<'_> {
    /// `bandwidthLimit`, per direction in KiB/s as Envoy Gateway's `bandwidthToKibps` computes
    /// it (bytes per unit / (seconds per unit × 1024), rounded down, at least 1).
    pub(super) fn bandwidth_limit(&mut self) -> Option<BandwidthLimit> {
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

    pub(super) fn retry(&mut self) -> Option<Retry> {
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

    pub(super) fn fault(&mut self) -> Option<Fault> {
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

    pub(super) fn compressors(&mut self) -> Vec<CompressorKind> {
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

    pub(super) fn upgrades(&mut self) -> Vec<String> {
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
    pub(super) fn connect(&mut self) -> Option<Connect> {
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
}
