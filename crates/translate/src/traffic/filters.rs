//! The HTTP filters a connection manager holds for BackendTrafficPolicy routes (Envoy
//! Gateway's `newOrderedHTTPFilter` order): their names, and their place in the filter list,
//! each disabled until a route's per-filter config enables it.

use super::admission::admission_control_filter;
use super::encode::{disabled_filter, u32v};
use crate::envoy::any_of;
use crate::ir::route::*;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::filters::http::bandwidth_limit::v3::BandwidthLimit as BandwidthLimitFilter;
use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::Buffer;
use envoy_types::pb::envoy::extensions::filters::http::custom_response::v3::CustomResponse;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

pub const CUSTOM_RESPONSE_FILTER: &str = "envoy.filters.http.custom_response";

pub const BUFFER_FILTER: &str = "envoy.filters.http.buffer";

/// Two instances of the bandwidth limit filter, one per direction (Envoy Gateway's names): a
/// route's config of one instance sets one direction's limit.
pub const BANDWIDTH_REQUEST_FILTER: &str = "envoy.filters.http.bandwidth_limit/request";

pub const BANDWIDTH_RESPONSE_FILTER: &str = "envoy.filters.http.bandwidth_limit/response";

pub(super) const BANDWIDTH_STAT_PREFIX: &str = "http_bandwidth_limiter";

/// Inserts the filters BackendTrafficPolicy routes enable into a connection manager's list,
/// each (but the custom response filter, see there) disabled until a route's per-filter config
/// enables it, where Envoy Gateway's
/// `newOrderedHTTPFilter` puts it: custom response and fault before CORS, the request buffer
/// after session persistence, the compressors just before the router.
pub fn insert_http_filters(filters: &mut Vec<HttpFilter>) {
    let at = |filters: &Vec<HttpFilter>, name: &str| filters.iter().position(|f| f.name == name);
    let cors = at(filters, crate::envoy::CORS_FILTER).unwrap_or(0);
    filters.splice(
        cors..cors,
        [
            // Enabled, with no matcher (it answers nothing itself): a response override that
            // redirects sends the request again through whatever route matches the new URL,
            // and it is this filter on that stream that applies the redirect's status, even
            // where that route configures no override of its own.
            HttpFilter {
                name: CUSTOM_RESPONSE_FILTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any_of(
                    &CustomResponse::default(),
                ))),
                ..Default::default()
            },
            disabled_filter(FAULT_FILTER, any_of(&HttpFault::default())),
        ],
    );
    let session =
        at(filters, crate::session::STATEFUL_SESSION_FILTER).map_or(filters.len(), |i| i + 1);
    filters.insert(session, buffer_filter());
    // The bandwidth limits after the buffer: a buffered request is limited when it is sent on.
    filters.splice(
        session + 1..session + 1,
        [BANDWIDTH_REQUEST_FILTER, BANDWIDTH_RESPONSE_FILTER].map(|name| {
            disabled_filter(
                name,
                any_of(&BandwidthLimitFilter {
                    stat_prefix: BANDWIDTH_STAT_PREFIX.to_string(),
                    ..Default::default()
                }),
            )
        }),
    );
    let router = at(filters, "envoy.filters.http.router").unwrap_or(filters.len());
    filters.splice(
        router..router,
        std::iter::once(admission_control_filter()).chain(compressor_filters()),
    );
}

/// The request buffer filter.
fn buffer_filter() -> HttpFilter {
    disabled_filter(
        BUFFER_FILTER,
        any_of(&Buffer {
            // Required by Envoy; each route that enables the filter sets its own limit.
            max_request_bytes: Some(u32v(1 << 20)),
        }),
    )
}

/// The compressor filters (Envoy Gateway orders them just before the router, by name).
fn compressor_filters() -> Vec<HttpFilter> {
    use envoy_types::pb::envoy::extensions::compression::brotli::compressor::v3::Brotli;
    use envoy_types::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
    use envoy_types::pb::envoy::extensions::compression::zstd::compressor::v3::Zstd;
    use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::Compressor;
    CompressorKind::ALL
        .into_iter()
        .map(|k| {
            let (name, lib) = match k {
                CompressorKind::Brotli => (
                    "envoy.compression.brotli.compressor",
                    any_of(&Brotli::default()),
                ),
                CompressorKind::Gzip => (
                    "envoy.compression.gzip.compressor",
                    any_of(&Gzip::default()),
                ),
                CompressorKind::Zstd => (
                    "envoy.compression.zstd.compressor",
                    any_of(&Zstd::default()),
                ),
            };
            disabled_filter(
                k.filter_name(),
                any_of(&Compressor {
                    compressor_library: Some(TypedExtensionConfig {
                        name: name.to_string(),
                        typed_config: Some(lib),
                    }),
                    ..Default::default()
                }),
            )
        })
        .collect()
}
