//! How a rule's clusters are built (Envoy Gateway's cluster.go): the upstream HTTP protocol
//! options, and the cluster-level settings (circuit breaker, health checks, outlier detection,
//! buffers, keepalive, proxy protocol, DNS, timeouts, preconnect) applied to a built cluster.

use super::encode::{nanos, u32v};
use super::health_check::health_check;
use super::load_balancer::apply_lb;
use crate::envoy::{any, any_of};
use crate::ir::cluster::*;
use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier,
    UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    socket_option, transport_socket, BindConfig, Http2ProtocolOptions,
    HttpProtocolOptions as CoreHttpOptions, ProxyProtocolConfig, SocketOption,
    TcpKeepalive as EnvoyKeepalive, TransportSocket,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::BoolValue;

/// The key of a cluster's upstream HTTP protocol options.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// How a cluster talks HTTP upstream, before BackendTrafficPolicy settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamHttp {
    Http1,
    Http2,
}

/// Builds the cluster's upstream HTTP protocol options from its protocol and the settings;
/// `None` when Envoy's defaults (HTTP/1.1, no limits) are what is wanted.
pub fn protocol_options(
    proto: UpstreamHttp,
    s: Option<&ClusterSettings>,
) -> Option<HttpProtocolOptions> {
    let h2 = || {
        let h = s.and_then(|s| s.http2.as_ref());
        Http2ProtocolOptions {
            initial_stream_window_size: h.and_then(|h| h.initial_stream_window_size).map(u32v),
            initial_connection_window_size: h
                .and_then(|h| h.initial_connection_window_size)
                .map(u32v),
            max_concurrent_streams: h.and_then(|h| h.max_concurrent_streams).map(u32v),
            override_stream_error_on_invalid_http_message: h
                .and_then(|h| h.terminate_stream_on_invalid)
                .map(|value| BoolValue { value }),
            ..Default::default()
        }
    };
    let common = CoreHttpOptions {
        idle_timeout: s.and_then(|s| s.idle_timeout).map(nanos),
        max_connection_duration: s.and_then(|s| s.max_connection_duration).map(nanos),
        max_requests_per_connection: s
            .and_then(|s| s.circuit_breaker.as_ref())
            .and_then(|c| c.max_requests_per_connection)
            .map(u32v),
        ..Default::default()
    };
    let client = s.is_some_and(|s| s.use_client_protocol);
    let has_common = common != CoreHttpOptions::default();
    if proto == UpstreamHttp::Http1 && !client && !has_common {
        return None;
    }
    let upstream = if client {
        UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
            http2_protocol_options: Some(h2()),
            ..Default::default()
        })
    } else {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(match proto {
                UpstreamHttp::Http2 => {
                    explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2())
                }
                UpstreamHttp::Http1 => {
                    explicit_http_config::ProtocolConfig::HttpProtocolOptions(Default::default())
                }
            }),
        })
    };
    Some(HttpProtocolOptions {
        common_http_protocol_options: has_common.then_some(common),
        upstream_protocol_options: Some(upstream),
        ..Default::default()
    })
}

/// Sets the protocol options on `c` (the only entry of its map: deterministic encoding).
pub fn set_protocol_options(c: &mut Cluster, opts: Option<HttpProtocolOptions>) {
    c.typed_extension_protocol_options.clear();
    if let Some(o) = opts {
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS.to_string(),
            any(&format!("type.googleapis.com/{HTTP_OPTIONS}"), &o),
        );
    }
}

/// Applies the cluster-level settings to `c` (a built EDS, STRICT_DNS or dynamic forward proxy
/// cluster; its protocol options are set by [`set_protocol_options`]).
pub fn apply_cluster(c: &mut Cluster, s: &ClusterSettings) {
    let provided_lb = c.lb_policy == cluster::LbPolicy::ClusterProvided as i32;
    if let (Some(lb), false) = (&s.load_balancer, provided_lb) {
        apply_lb(c, lb);
    }
    if let Some(cb) = &s.circuit_breaker {
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_connections: cb.max_connections.map(u32v),
                max_pending_requests: cb.max_pending_requests.map(u32v),
                max_requests: cb.max_parallel_requests.map(u32v),
                max_retries: cb.max_parallel_retries.map(u32v),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if let Some(hc) = &s.active_health_check {
        c.health_checks = vec![health_check(hc)];
    }
    if let Some(o) = &s.outlier_detection {
        c.outlier_detection = Some(EnvoyOutlier {
            consecutive_5xx: o.consecutive_5xx.map(u32v),
            consecutive_gateway_failure: o.consecutive_gateway_errors.map(u32v),
            consecutive_local_origin_failure: o.consecutive_local_origin_failures.map(u32v),
            split_external_local_origin_errors: o
                .split_external_local_origin_errors
                .unwrap_or(false),
            interval: o.interval.map(nanos),
            base_ejection_time: o.base_ejection_time.map(nanos),
            max_ejection_percent: o.max_ejection_percent.map(u32v),
            ..Default::default()
        });
    }
    if let Some(b) = s.buffer_limit {
        c.per_connection_buffer_limit_bytes = Some(u32v(b));
    }
    if let Some(b) = s.socket_buffer_limit {
        // SOL_SOCKET / SO_SNDBUF and SO_RCVBUF (Linux), set before the socket connects.
        let opt = |name: i64, description: &str| SocketOption {
            description: description.into(),
            level: 1,
            name,
            value: Some(socket_option::Value::IntValue(i64::from(b))),
            state: socket_option::SocketState::StatePrebind as i32,
            ..Default::default()
        };
        c.upstream_bind_config = Some(BindConfig {
            socket_options: vec![opt(7, "SO_SNDBUF"), opt(8, "SO_RCVBUF")],
            ..Default::default()
        });
    }
    if let Some(k) = &s.tcp_keepalive {
        c.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(EnvoyKeepalive {
                keepalive_probes: k.probes.map(u32v),
                keepalive_time: k.idle_time.map(u32v),
                keepalive_interval: k.interval.map(u32v),
            }),
            ..Default::default()
        });
    }
    if let Some(v) = s.proxy_protocol {
        c.transport_socket = Some(proxy_protocol_socket(v, c.transport_socket.take()));
    }
    let dns = c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
    if let (Some(d), true) = (&s.dns, dns) {
        // Envoy deprecates these in favour of a DNS cluster extension, but still takes them
        // (as Envoy Gateway writes them).
        #[allow(deprecated)]
        {
            c.dns_refresh_rate = d.refresh_rate.map(nanos);
            if let Some(t) = d.respect_ttl {
                c.respect_dns_ttl = t;
            }
        }
        if let Some(f) = d.lookup_family {
            c.dns_lookup_family = match f {
                DnsFamily::V4Only => cluster::DnsLookupFamily::V4Only,
                DnsFamily::V6Only => cluster::DnsLookupFamily::V6Only,
                DnsFamily::V4Preferred => cluster::DnsLookupFamily::V4Preferred,
                DnsFamily::V6Preferred => cluster::DnsLookupFamily::Auto,
                DnsFamily::All => cluster::DnsLookupFamily::All,
            } as i32;
        }
    }
    if let Some(t) = s.connect_timeout {
        c.connect_timeout = Some(nanos(t));
    }
    if let Some((per, predictive)) = s.preconnect {
        use envoy_types::pb::google::protobuf::DoubleValue;
        let ratio = |p: u32| DoubleValue {
            value: f64::from(p) / 100.0,
        };
        c.preconnect_policy = Some(cluster::PreconnectPolicy {
            per_upstream_preconnect_ratio: per.map(ratio),
            predictive_preconnect_ratio: predictive.map(ratio),
            ..Default::default()
        });
    }
}

fn proxy_protocol_socket(
    v: ProxyProtocolVersion,
    inner: Option<TransportSocket>,
) -> TransportSocket {
    use envoy_types::pb::envoy::config::core::v3::proxy_protocol_config::Version;
    use envoy_types::pb::envoy::extensions::transport_sockets::proxy_protocol::v3::ProxyProtocolUpstreamTransport;
    use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
    let inner = inner.unwrap_or_else(|| TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            &RawBuffer::default(),
        ))),
    });
    TransportSocket {
        name: "envoy.transport_sockets.upstream_proxy_protocol".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            &ProxyProtocolUpstreamTransport {
                config: Some(ProxyProtocolConfig {
                    version: match v {
                        ProxyProtocolVersion::V1 => Version::V1,
                        ProxyProtocolVersion::V2 => Version::V2,
                    } as i32,
                    ..Default::default()
                }),
                transport_socket: Some(inner),
                ..Default::default()
            },
        ))),
    }
}
