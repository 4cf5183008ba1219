//! A cluster's load balancing policy (Envoy Gateway's cluster.go): round robin, least request,
//! random, Maglev for consistent hash, client-side weighted round robin for backend
//! utilization; slow start and zone-aware routing.

use super::encode::nanos;
use crate::envoy::any_of;
use crate::ir::cluster::*;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{BoolValue, UInt64Value};

/// The load balancing policy extension of `loadBalancer.type: BackendUtilization`.
const CSWRR_POLICY: &str = "envoy.load_balancing_policies.client_side_weighted_round_robin";

pub(super) fn apply_lb(c: &mut Cluster, lb: &LoadBalancer) {
    use cluster::LbConfig as L;
    let slow_start = lb.slow_start_window.map(|w| cluster::SlowStartConfig {
        slow_start_window: Some(nanos(w)),
        ..Default::default()
    });
    match &lb.policy {
        LbPolicy::RoundRobin => {
            c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
            c.lb_config = slow_start.map(|s| {
                L::RoundRobinLbConfig(cluster::RoundRobinLbConfig {
                    slow_start_config: Some(s),
                })
            });
        }
        LbPolicy::LeastRequest => {
            c.lb_policy = cluster::LbPolicy::LeastRequest as i32;
            c.lb_config = slow_start.map(|s| {
                L::LeastRequestLbConfig(cluster::LeastRequestLbConfig {
                    slow_start_config: Some(s),
                    ..Default::default()
                })
            });
        }
        LbPolicy::Random => c.lb_policy = cluster::LbPolicy::Random as i32,
        LbPolicy::ConsistentHash { table_size, .. } => {
            c.lb_policy = cluster::LbPolicy::Maglev as i32;
            c.lb_config = table_size.map(|t| {
                L::MaglevLbConfig(cluster::MaglevLbConfig {
                    table_size: Some(UInt64Value { value: t }),
                })
            });
        }
        LbPolicy::BackendUtilization(bu) => {
            c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
            c.lb_config = None;
            c.load_balancing_policy = Some(envoy_types::pb::envoy::config::cluster::v3::LoadBalancingPolicy {
                policies: vec![envoy_types::pb::envoy::config::cluster::v3::load_balancing_policy::Policy {
                    typed_extension_config: Some(TypedExtensionConfig {
                        name: CSWRR_POLICY.into(),
                        typed_config: Some(any_of(&client_side_weighted_round_robin(
                            bu,
                            lb.slow_start_window,
                        ))),
                    }),
                }],
            });
        }
    }
    if let Some(z) = &lb.zone_aware {
        let common = c.common_lb_config.get_or_insert_with(Default::default);
        common.locality_config_specifier = Some(
            cluster::common_lb_config::LocalityConfigSpecifier::ZoneAwareLbConfig(
                cluster::common_lb_config::ZoneAwareLbConfig {
                    routing_enabled: z.percentage_enabled.map(|p| Percent {
                        value: f64::from(p),
                    }),
                    min_cluster_size: z.min_endpoints_threshold.map(|value| UInt64Value { value }),
                    ..Default::default()
                },
            ),
        );
    }
}

/// Envoy Gateway's defaults for `backendUtilization` (Envoy's own, written out).
const DEFAULT_BLACKOUT_PERIOD: Nanos = 10_000_000_000;

const DEFAULT_WEIGHT_EXPIRATION_PERIOD: Nanos = 180_000_000_000;

const DEFAULT_WEIGHT_UPDATE_PERIOD: Nanos = 1_000_000_000;

/// `loadBalancer.type: BackendUtilization` (Envoy Gateway's `buildClientSideWeightedRoundRobin`
/// in cluster.go).
fn client_side_weighted_round_robin(
    bu: &BackendUtilization,
    slow_start_window: Option<Nanos>,
) -> envoy_types::pb::envoy::extensions::load_balancing_policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin{
    use envoy_types::pb::envoy::extensions::load_balancing_policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin;
    use envoy_types::pb::envoy::extensions::load_balancing_policies::common::v3::{
        OrcaOobReportingConfig, SlowStartConfig,
    };
    use envoy_types::pb::google::protobuf::FloatValue;
    let oob = bu.out_of_band.as_ref();
    ClientSideWeightedRoundRobin {
        enable_oob_load_report: oob.map(|_| BoolValue { value: true }),
        oob_reporting_period: oob.and_then(|o| o.reporting_period).map(nanos),
        oob_reporting_config: oob
            .filter(|o| o.port.is_some() || o.authority.is_some())
            .map(|o| OrcaOobReportingConfig {
                port_value: o.port.unwrap_or_default(),
                authority: o.authority.clone().unwrap_or_default(),
                ..Default::default()
            }),
        blackout_period: Some(nanos(bu.blackout_period.unwrap_or(DEFAULT_BLACKOUT_PERIOD))),
        weight_expiration_period: Some(nanos(
            bu.weight_expiration_period
                .unwrap_or(DEFAULT_WEIGHT_EXPIRATION_PERIOD),
        )),
        weight_update_period: Some(nanos(
            bu.weight_update_period
                .unwrap_or(DEFAULT_WEIGHT_UPDATE_PERIOD),
        )),
        error_utilization_penalty: bu.error_utilization_penalty_percent.map(|p| FloatValue {
            value: p as f32 / 100.0,
        }),
        metric_names_for_computing_utilization: bu.metric_names.clone(),
        slow_start_config: slow_start_window.map(|w| SlowStartConfig {
            slow_start_window: Some(nanos(w)),
            ..Default::default()
        }),
    }
}

/// The response headers an endpoint reports its load in (ORCA, text/JSON and binary forms).
pub(super) const ORCA_HEADERS: [&str; 2] = ["endpoint-load-metrics", "endpoint-load-metrics-bin"];
