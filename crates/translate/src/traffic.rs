//! Envoy encoding of BackendTrafficPolicy settings (Envoy Gateway's `internal/xds/translator`
//! route.go, cluster.go, fault.go, custom_response.go, compressor.go, buffer.go,
//! bandwidth_limit.go, admission_control.go): what a
//! rule's routes carry and how its clusters are built, from the typed settings of
//! [`crate::ir`]. Also the HTTP filters the connection manager holds for them, disabled until a
//! route's per-filter config enables them.
//!
//! - [`route`]: a rule's routes ([`apply_route`]), with [`custom_response`] (response
//!   overrides) and [`admission`] (admission control) for the per-route configs that need
//!   more than a few lines;
//! - [`cluster`]: a rule's clusters ([`apply_cluster`], [`protocol_options`]), with
//!   [`load_balancer`] and [`health_check`];
//! - [`filters`]: the connection manager's filters ([`insert_http_filters`]) and their names;
//! - [`encode`]: the small encodings all of them share.
//!
//! Dependencies go one way: `route` uses `filters` (the names), `admission`,
//! `custom_response` and `load_balancer`; `cluster` uses `load_balancer` and `health_check`;
//! `filters` uses `admission`; every part uses `encode`, which uses none. This module only
//! declares them and re-exports what the rest of the crate calls.

mod admission;
mod cluster;
mod custom_response;
mod encode;
mod filters;
mod health_check;
mod load_balancer;
mod route;

pub use cluster::{apply_cluster, protocol_options, set_protocol_options, UpstreamHttp};
pub use filters::insert_http_filters;
pub use route::apply_route;
// The filter names, for the tests that check a connection manager's filter list.
#[cfg(test)]
pub use admission::ADMISSION_CONTROL_FILTER;
#[cfg(test)]
pub use filters::{
    BANDWIDTH_REQUEST_FILTER, BANDWIDTH_RESPONSE_FILTER, BUFFER_FILTER, CUSTOM_RESPONSE_FILTER,
    FAULT_FILTER,
};

#[cfg(test)]
mod tests;
