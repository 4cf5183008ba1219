//! Admission control (Envoy Gateway's admission_control.go): the connection manager's
//! composite filter, and a route's matcher that runs an admission control filter with its
//! settings.

use super::encode::{disabled_filter, nanos};
use crate::envoy::any_of;
use crate::ir::route::*;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::v3::Percent;

/// The admission control filter. Envoy takes no per-route config of
/// `envoy.filters.http.admission_control` (it refuses the route configuration: "doesn't
/// support virtual host or route specific configurations"), so the connection manager holds a
/// composite filter under a matcher instead, and a route that has admission control gives that
/// filter a per-route matcher whose action runs an admission control filter with the route's
/// settings. Each route's filter is its own (its own sampling window and success rate), as a
/// per-route config would be.
pub const ADMISSION_CONTROL_FILTER: &str = "envoy.filters.http.admission_control";

/// Runtime keys of the admission control settings (Envoy requires one; no runtime layer sets
/// them, so each value is the route's).
const ADMISSION_RUNTIME_PREFIX: &str = "flotilla.admission_control";

/// The connection manager's admission control filter: a composite filter under a matcher that
/// matches nothing, until a route's matcher (see [`ADMISSION_CONTROL_FILTER`]) says which
/// filter to run.
pub(super) fn admission_control_filter() -> HttpFilter {
    use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcher;
    use envoy_types::pb::envoy::extensions::filters::http::composite::v3::Composite;
    disabled_filter(
        ADMISSION_CONTROL_FILTER,
        any_of(&ExtensionWithMatcher {
            xds_matcher: Some(Default::default()),
            extension_config: Some(TypedExtensionConfig {
                name: "envoy.filters.http.composite".into(),
                typed_config: Some(any_of(&Composite::default())),
            }),
            ..Default::default()
        }),
    )
}

/// A route's admission control: the composite filter's per-route matcher, which always runs an
/// admission control filter with these settings (Envoy Gateway's `buildAdmissionControlConfig`
/// values; its defaults are Envoy's).
pub(super) fn admission_control_per_route(
    a: &AdmissionControl,
) -> envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcherPerRoute {
    use envoy_types::pb::envoy::config::core::v3::{RuntimeDouble, RuntimePercent, RuntimeUInt32};
    use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcherPerRoute;
    use envoy_types::pb::envoy::extensions::filters::http::admission_control::v3::{
        admission_control::{success_criteria, EvaluationCriteria, SuccessCriteria},
        AdmissionControl as EnvoyAdmission,
    };
    use envoy_types::pb::envoy::extensions::filters::http::composite::v3::ExecuteFilterAction;
    use envoy_types::pb::envoy::r#type::v3::Int32Range;
    use envoy_types::pb::xds::r#type::matcher::v3::{matcher, Matcher};
    let key = |k: &str| format!("{ADMISSION_RUNTIME_PREFIX}.{k}");
    let percent = |k: &str, v: u32| RuntimePercent {
        default_value: Some(Percent {
            value: f64::from(v),
        }),
        runtime_key: key(k),
    };
    let config = EnvoyAdmission {
        sampling_window: a.sampling_window.map(nanos),
        aggression: a.rejection_aggression.map(|v| RuntimeDouble {
            default_value: f64::from(v),
            runtime_key: key("aggression"),
        }),
        sr_threshold: a.min_success_rate.map(|v| percent("sr_threshold", v)),
        rps_threshold: a.min_request_rate.map(|v| RuntimeUInt32 {
            default_value: v,
            runtime_key: key("rps_threshold"),
        }),
        max_rejection_probability: a
            .max_rejection_percent
            .map(|v| percent("max_rejection_probability", v)),
        // Envoy requires the criteria; empty lists are Envoy's defaults.
        evaluation_criteria: Some(EvaluationCriteria::SuccessCriteria(SuccessCriteria {
            http_criteria: (!a.http_success.is_empty()).then(|| success_criteria::HttpCriteria {
                http_success_status: a
                    .http_success
                    .iter()
                    .map(|c| Int32Range {
                        start: *c as i32,
                        end: *c as i32 + 1,
                    })
                    .collect(),
            }),
            grpc_criteria: (!a.grpc_success.is_empty()).then(|| success_criteria::GrpcCriteria {
                grpc_success_status: a.grpc_success.clone(),
            }),
        })),
        ..Default::default()
    };
    let action = ExecuteFilterAction {
        typed_config: Some(TypedExtensionConfig {
            name: ADMISSION_CONTROL_FILTER.into(),
            typed_config: Some(any_of(&config)),
        }),
        ..Default::default()
    };
    ExtensionWithMatcherPerRoute {
        // No matcher, only the action taken when nothing matches: always.
        xds_matcher: Some(Matcher {
            matcher_type: None,
            on_no_match: Some(Box::new(matcher::OnMatch {
                on_match: Some(matcher::on_match::OnMatch::Action(
                    envoy_types::pb::xds::core::v3::TypedExtensionConfig {
                        name: "admission-control".into(),
                        typed_config: Some(any_of(&action)),
                    },
                )),
                keep_matching: false,
            })),
        }),
    }
}
