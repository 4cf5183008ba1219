//! `healthCheck`: the cluster's active health checker (HTTP, TCP, gRPC) and its passive one
//! (outlier detection).

use super::parser::Parser;
use crate::ir::cluster::*;
use serde_json::Value;

impl Parser<'_> {
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

    pub(super) fn active_health_check(&mut self) -> Option<ActiveHealthCheck> {
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

    pub(super) fn outlier_detection(&mut self) -> Option<OutlierDetection> {
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
}
