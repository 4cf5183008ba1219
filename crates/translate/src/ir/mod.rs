//! Protocol-neutral values between meaning (Gateway API and Envoy Gateway resources) and
//! encoding (Envoy xDS): what a translated resource means, typed, before any protobuf.

pub(crate) mod client;
pub(crate) mod cluster;
pub(crate) mod route;
