//! Small encodings every part of [`super`] shares: durations, wrapped integers, a share in
//! millionths, and an HTTP filter disabled until a route enables it.

use crate::ir::cluster::*;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent};
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};

pub(super) fn nanos(n: Nanos) -> Duration {
    crate::values::GoDuration::from_nanos(n).to_proto()
}

pub(super) fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

pub(super) fn per_million(n: Option<u32>) -> FractionalPercent {
    FractionalPercent {
        numerator: n.unwrap_or(1_000_000),
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

pub(super) fn disabled_filter(
    name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        disabled: true,
        ..Default::default()
    }
}
