//! A BackendTrafficPolicy's spec → typed, validated settings (Envoy Gateway's
//! `translateBackendTrafficPolicy*` and the `build*` helpers it calls): the route-level
//! settings a rule's Envoy routes carry and the cluster-level settings its clusters are built
//! with. Every value Envoy would refuse is refused here, with Envoy Gateway's message where its
//! corpus shows one, so that an invalid policy gets a status condition and never reaches Envoy.
//! `rateLimit` is translated elsewhere.
//!
//! [`translate`] reads the fields in Envoy Gateway's order (the order of the sections in a
//! status message) through one [`parser::Parser`], whose readers the parts share:
//! - route-level ([`crate::ir::route`]): [`route`] (retry, fault, compression, HTTP
//!   upgrades, bandwidth), [`response_override`], [`telemetry`] (tracing, route stat
//!   name, admission control);
//! - cluster-level ([`crate::ir::cluster`]): [`load_balancer`], [`health_check`] (active and
//!   passive), [`cluster`] (circuit breaker, connection, DNS, HTTP/2, routing type).
//!
//! The parts depend on `parser` only, never on each other or on this module.

mod cluster;
mod health_check;
mod load_balancer;
mod parser;
mod response_override;
mod route;
mod telemetry;

use super::FieldErrors;
use crate::index::Index;
use crate::ir::cluster::*;
use crate::ir::route::*;
use flotilla_model::ResourceKey;
use parser::Parser;
use serde_json::Value;
use std::sync::Arc;

/// A BackendTrafficPolicy, translated.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct BackendPolicy {
    pub route: RouteSettings,
    pub cluster: Option<Arc<ClusterSettings>>,
}

/// Translates the spec of policy `key`; the errors are Envoy Gateway's sections and messages.
pub(crate) fn translate(
    ix: &Index,
    key: &ResourceKey,
    spec: &Value,
) -> Result<BackendPolicy, FieldErrors> {
    let mut e = FieldErrors::default();
    let mut p = Parser { spec, e: &mut e };
    let route = RouteSettings {
        retry: p.retry(),
        request_timeout: p.duration("/timeout/http/requestTimeout", "Timeout", "RequestTimeout"),
        fault: p.fault(),
        response_overrides: p.response_overrides(ix, key),
        compressors: p.compressors(),
        request_buffer: p.quantity_u32("/requestBuffer/limit", "RequestBuffer", "limit"),
        upgrades: p.upgrades(),
        connect: p.connect(),
        bandwidth_limit: p.bandwidth_limit(),
        tracing: p.tracing(),
        stat_name: p.route_stat_name(),
        admission_control: p.admission_control(),
    };
    let cluster = ClusterSettings {
        load_balancer: p.load_balancer(),
        circuit_breaker: p.circuit_breaker(),
        active_health_check: p.active_health_check(),
        outlier_detection: p.outlier_detection(),
        buffer_limit: p.quantity_u32(
            "/connection/bufferLimit",
            "BackendConnection",
            "BufferLimit",
        ),
        socket_buffer_limit: p.quantity_u32(
            "/connection/socketBufferLimit",
            "BackendConnection",
            "SocketBufferLimit",
        ),
        tcp_keepalive: p.tcp_keepalive(),
        proxy_protocol: match p.str("/proxyProtocol/version") {
            None => None,
            Some("V1") => Some(ProxyProtocolVersion::V1),
            Some("V2") => Some(ProxyProtocolVersion::V2),
            Some(v) => {
                p.err("ProxyProtocol", format!("unsupported version {v}"));
                None
            }
        },
        dns: p.dns(),
        http2: p.http2(),
        connect_timeout: p.duration("/timeout/tcp/connectTimeout", "Timeout", "ConnectTimeout"),
        idle_timeout: p.duration(
            "/timeout/http/connectionIdleTimeout",
            "Timeout",
            "ConnectionIdleTimeout",
        ),
        max_connection_duration: p.duration(
            "/timeout/http/maxConnectionDuration",
            "Timeout",
            "MaxConnectionDuration",
        ),
        use_client_protocol: p
            .spec
            .pointer("/useClientProtocol")
            .and_then(Value::as_bool)
            == Some(true),
        preconnect: p.preconnect(),
        service_routing: p.service_routing(),
    };
    if e.message().is_some() {
        return Err(e);
    }
    Ok(BackendPolicy {
        route,
        cluster: (!cluster.is_empty()).then(|| Arc::new(cluster)),
    })
}
