//! `loadBalancer`: the cluster's load balancing policy (round robin, least request, random,
//! consistent hash, backend utilization), slow start and zone-aware routing.

use super::parser::Parser;
use crate::ir::cluster::*;
use serde_json::Value;

impl Parser<'_> {
    pub(super) fn load_balancer(&mut self) -> Option<LoadBalancer> {
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
}
