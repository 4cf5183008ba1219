//! The identity of an Envoy cluster: the backend it reaches and the cluster-level settings of a
//! BackendTrafficPolicy it is built with. Rules whose effective settings are equal share one
//! cluster; a rule whose settings differ gets its own (Envoy Gateway builds one cluster per
//! rule; sharing keeps the connection pools and health checks shared where nothing differs).

use crate::envoy::EndpointAddr;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What a cluster reaches: the backend a backendRef resolved to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum BackendId {
    /// A Service port.
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
    /// A Multi-Cluster Services ServiceImport port.
    ServiceImport {
        namespace: String,
        name: String,
        port: i32,
    },
    /// An Envoy Gateway Backend (the port a backendRef names, if any).
    Backend {
        namespace: String,
        name: String,
        port: Option<i32>,
    },
    /// Anything else (a UDPRoute rule's merged endpoints), by the name it is given.
    Named(String),
}

impl BackendId {
    /// The Envoy cluster name of the backend's own cluster.
    pub fn name(&self) -> String {
        match self {
            BackendId::Service {
                namespace,
                name,
                port,
            } => format!("{namespace}/{name}/{port}"),
            BackendId::ServiceImport {
                namespace,
                name,
                port,
            } => format!("serviceimport/{namespace}/{name}/{port}"),
            BackendId::Backend {
                namespace,
                name,
                port: Some(p),
            } => format!("backend/{namespace}/{name}/{p}"),
            BackendId::Backend {
                namespace, name, ..
            } => format!("backend/{namespace}/{name}/-"),
            BackendId::Named(n) => n.clone(),
        }
    }
}

/// The backends a gateway's routes use, by their own cluster's name: what each is and its
/// endpoints.
pub(crate) type Backends = std::collections::BTreeMap<String, (BackendId, Endpoints)>;

/// A backend's endpoints as one resolution found them, shared (never copied) by the resolution
/// cache, the routes naming the backend, the gateway's memo and its cluster resources.
pub(crate) type Endpoints = std::sync::Arc<[EndpointAddr]>;

/// One Envoy cluster: a backend and the settings it is built with (`None`: Flotilla's
/// defaults).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ClusterKey {
    pub backend: BackendId,
    pub settings: Option<Arc<ClusterSettings>>,
}

impl ClusterKey {
    pub fn new(backend: BackendId, settings: Option<Arc<ClusterSettings>>) -> Self {
        ClusterKey { backend, settings }
    }

    /// The Envoy cluster name: the backend's, followed by a short content hash of the settings
    /// when there are any (equal settings, equal name; no name is ever parsed back).
    pub fn name(&self) -> String {
        match &self.settings {
            None => self.backend.name(),
            Some(s) => format!("{}/btp-{}", self.backend.name(), s.digest()),
        }
    }
}

/// Durations in nanoseconds (hashable, ordered).
pub(crate) type Nanos = i64;

/// Cluster-level settings of a BackendTrafficPolicy, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ClusterSettings {
    pub load_balancer: Option<LoadBalancer>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub active_health_check: Option<ActiveHealthCheck>,
    pub outlier_detection: Option<OutlierDetection>,
    /// `connection.bufferLimit`: per-connection buffer limit, bytes.
    pub buffer_limit: Option<u32>,
    /// `connection.socketBufferLimit`: SO_SNDBUF/SO_RCVBUF of upstream sockets, bytes.
    pub socket_buffer_limit: Option<u32>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    pub dns: Option<Dns>,
    pub http2: Option<Http2>,
    pub connect_timeout: Option<Nanos>,
    /// `timeout.http.connectionIdleTimeout`.
    pub idle_timeout: Option<Nanos>,
    /// `timeout.http.maxConnectionDuration`.
    pub max_connection_duration: Option<Nanos>,
    /// `useClientProtocol`: speak upstream the protocol the client spoke.
    pub use_client_protocol: bool,
    /// `connection.preconnect`: per-endpoint and predictive ratios, in percent.
    pub preconnect: Option<(Option<u32>, Option<u32>)>,
    /// `routingType: Service`: a Service backend is reached through its cluster IP (a
    /// ServiceImport's, through its IPs) and the backendRef's port, not its endpoints; a
    /// headless one (no cluster IP) through its endpoints still, as Envoy Gateway does.
    pub service_routing: bool,
}

impl ClusterSettings {
    /// 8 hex digits of a SHA-256 of the settings' (deterministic) debug form.
    pub fn digest(&self) -> String {
        let d = Sha256::digest(format!("{self:?}").as_bytes());
        hex::encode(&d[..4])
    }

    /// The settings that apply to a TCP proxy's cluster (Envoy Gateway's TCP routes take no
    /// HTTP settings).
    pub fn for_tcp(&self) -> ClusterSettings {
        let mut s = self.clone();
        s.idle_timeout = None;
        s.max_connection_duration = None;
        s.http2 = None;
        s.use_client_protocol = false;
        if let Some(cb) = &mut s.circuit_breaker {
            cb.max_requests_per_connection = None;
        }
        s
    }

    /// The settings that apply to a UDP proxy's cluster: load balancing and DNS only.
    pub fn for_udp(&self) -> ClusterSettings {
        ClusterSettings {
            load_balancer: self.load_balancer.clone(),
            dns: self.dns.clone(),
            ..Default::default()
        }
    }

    /// No setting differs from Flotilla's defaults.
    pub fn is_empty(&self) -> bool {
        *self == ClusterSettings::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum LbPolicy {
    RoundRobin,
    Random,
    LeastRequest,
    /// Maglev over the hash of the request's `HashPolicy`.
    ConsistentHash {
        /// What the route hashes (several: hashed together).
        hash: Vec<HashOn>,
        table_size: Option<u64>,
    },
    /// `BackendUtilization`: Envoy's client-side weighted round robin, weights from the
    /// endpoints' ORCA load reports.
    BackendUtilization(BackendUtilization),
}

/// `loadBalancer.backendUtilization` (Envoy Gateway's `BackendUtilization`); unset durations
/// take Envoy Gateway's defaults when encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct BackendUtilization {
    pub blackout_period: Option<Nanos>,
    pub weight_expiration_period: Option<Nanos>,
    pub weight_update_period: Option<Nanos>,
    /// Envoy's `error_utilization_penalty` × 100.
    pub error_utilization_penalty_percent: Option<u32>,
    pub metric_names: Vec<String>,
    /// `keepResponseHeaders`: pass the ORCA load report headers on to the client (default:
    /// they are removed).
    pub keep_response_headers: bool,
    pub out_of_band: Option<OutOfBandReports>,
}

/// `backendUtilization.outOfBand`: load reports over a separate ORCA stream to each endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OutOfBandReports {
    pub reporting_period: Option<Nanos>,
    /// Another port of the endpoint serving the stream.
    pub port: Option<u32>,
    /// The stream's `:authority`.
    pub authority: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum HashOn {
    SourceIp,
    Header(String),
    /// Cookie name, TTL (a missing cookie is generated with it), path.
    Cookie {
        name: String,
        ttl: Option<Nanos>,
    },
    QueryParameter(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LoadBalancer {
    pub policy: LbPolicy,
    pub slow_start_window: Option<Nanos>,
    /// Zone-aware routing: minimum endpoints in a zone, percentage enabled.
    pub zone_aware: Option<ZoneAware>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ZoneAware {
    pub min_endpoints_threshold: Option<u64>,
    pub percentage_enabled: Option<u32>,
    pub force_min_endpoints_in_zone: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct CircuitBreaker {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_parallel_requests: Option<u32>,
    pub max_parallel_retries: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ActiveHealthCheck {
    pub timeout: Nanos,
    pub interval: Nanos,
    pub initial_jitter: Option<Nanos>,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub kind: HealthCheckKind,
}

/// A payload to send or expect: text or bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum HealthCheckKind {
    Http {
        path: String,
        host: Option<String>,
        method: Option<String>,
        /// Expected statuses as [start, end) ranges; empty: 200.
        expected: Vec<(u32, u32)>,
        retriable: Vec<(u32, u32)>,
        response: Option<Payload>,
        request: Option<Payload>,
    },
    Tcp {
        send: Option<Payload>,
        receive: Option<Payload>,
    },
    Grpc {
        service: Option<String>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OutlierDetection {
    pub split_external_local_origin_errors: Option<bool>,
    pub interval: Option<Nanos>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_5xx: Option<u32>,
    pub base_ejection_time: Option<Nanos>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TcpKeepalive {
    pub probes: Option<u32>,
    pub idle_time: Option<u32>,
    pub interval: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ProxyProtocolVersion {
    V1,
    V2,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Dns {
    pub refresh_rate: Option<Nanos>,
    pub respect_ttl: Option<bool>,
    /// IPv4, IPv6, IPv4AndIPv6 ... (Envoy Gateway's `lookupFamily`).
    pub lookup_family: Option<DnsFamily>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum DnsFamily {
    V4Only,
    V6Only,
    V4Preferred,
    V6Preferred,
    All,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Http2 {
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    /// `onInvalidMessage: TerminateStream`.
    pub terminate_stream_on_invalid: Option<bool>,
}
