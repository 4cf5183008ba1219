//! `telemetry` (tracing, the route stat name) and `admissionControl`: route-level settings
//! that observe or shed a route's traffic rather than shape its requests.

use super::parser::Parser;
use crate::ir::route::*;
use serde_json::Value;

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

impl Parser<'_> {
    /// `telemetry.tracing` (Envoy Gateway's `Tracing`: a sampling fraction, `customTags` of
    /// type Literal, Environment or RequestHeader, and `tags` with command operators).
    pub(super) fn tracing(&mut self) -> Option<RouteTracing> {
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
    pub(super) fn route_stat_name(&mut self) -> Option<RouteStatName> {
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
    pub(super) fn admission_control(&mut self) -> Option<AdmissionControl> {
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
}
