//! Builders for the Envoy resources Flotilla emits, and their encoding. Everything here is
//! deterministic: prost encodes `HashMap`s in iteration order, which would make two replicas
//! produce different bytes for the same input, so map-typed fields hold at most one entry,
//! except a route's `typed_per_filter_config`, which [`encode_route`] writes in key order.
//!
//! A leaf: it imports nothing of the crate (the crate root re-exports [`XdsResource`] and
//! [`type_url`]). The connection manager and the listeners, which the policies configure, are
//! built above it, in `crate::listener::xds`.

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, HealthStatus, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::Message;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Type URLs of the resources Flotilla serves.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
}

/// One encoded Envoy resource. Encoded once per version and shared (behind `Arc`) by every
/// edge stream that sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsResource {
    pub type_url: String,
    pub name: String,
    /// Content hash of `body` (`flotilla_model::digest::xds_version`): the same bytes always
    /// carry the same version.
    pub version: String,
    /// The encoded resource message (not wrapped in `Any`).
    pub body: Bytes,
}

/// Encodes `msg` once and names its version by content hash.
pub fn encode<M: Message>(type_url: &str, name: &str, msg: &M) -> Arc<XdsResource> {
    resource(type_url, name, msg.encode_to_vec())
}

fn resource(type_url: &str, name: &str, body: Vec<u8>) -> Arc<XdsResource> {
    let version = flotilla_model::digest::xds_version(false, &body);
    Arc::new(XdsResource {
        type_url: type_url.to_string(),
        name: name.to_string(),
        version,
        body: Bytes::from(body),
    })
}

/// `msg` as an `Any` of its own type.
pub fn any_of<M: Message + prost::Name>(msg: &M) -> Any {
    any(&M::type_url(), msg)
}

pub fn any<M: Message>(type_url: &str, msg: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// Name of the CORS HTTP filter; routes name it in `typed_per_filter_config`.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
/// Type URL of the per-route CORS policy.
pub const CORS_POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";

/// `hcm` as the `envoy.filters.network.http_connection_manager` network filter.
pub(crate) fn hcm_network_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            hcm,
        ))),
    }
}

/// The route configuration, with each route's `typed_per_filter_config` entries in key order.
// Field numbers of envoy.config.route.v3 (route_components.proto, route.proto).
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u32 = 2;
const VIRTUAL_HOST_ROUTES: u32 = 3;

/// Protobuf parsers accept a message's fields in any order and append repeated fields in the
/// order they come, so a message may be written as its other fields followed by the repeated
/// field's elements (and a map as its entries, one at a time): route configurations are
/// assembled from virtual hosts encoded once, and those from routes encoded once.
/// One route's encoding, its per-filter configs written in key order (see the module doc).
pub fn encode_route(mut r: Route) -> Vec<u8> {
    let map = std::mem::take(&mut r.typed_per_filter_config);
    let mut body = r.encode_to_vec();
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for entry in entries {
        // A route holding only this entry encodes as exactly that map entry.
        body.extend(
            Route {
                typed_per_filter_config: [entry].into_iter().collect(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
    }
    body
}

/// A virtual host's encoding: `vh` (whose own routes are left out) followed by `routes`, each
/// an [`encode_route`] output.
pub fn encode_virtual_host<'a>(
    vh: &envoy_types::pb::envoy::config::route::v3::VirtualHost,
    routes: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = if vh.routes.is_empty() {
        vh.encode_to_vec()
    } else {
        let mut bare = vh.clone();
        bare.routes.clear();
        bare.encode_to_vec()
    };
    for r in routes {
        put_message(VIRTUAL_HOST_ROUTES, r, &mut out);
    }
    out
}

/// A virtual host encoded once, with its content hash: a RouteConfiguration is assembled from
/// these without encoding (or hashing) its virtual hosts again.
#[derive(Clone, Debug)]
pub struct EncodedVirtualHost {
    pub body: Bytes,
    pub digest: [u8; 32],
}

impl EncodedVirtualHost {
    pub fn new(body: Vec<u8>) -> Self {
        let digest = Sha256::digest(&body).into();
        EncodedVirtualHost {
            body: Bytes::from(body),
            digest,
        }
    }
}

/// A RouteConfiguration from `rc` (its own virtual hosts left out) and `vhosts`, already
/// encoded. Its version hashes `rc`'s fields and the virtual hosts' hashes: exactly
/// `flotilla_model::digest::xds_version` of the body (a function of the bytes), computed
/// without reading every byte again.
pub fn route_configuration_from(
    rc: &RouteConfiguration,
    vhosts: &[&EncodedVirtualHost],
) -> Arc<XdsResource> {
    debug_assert!(rc.virtual_hosts.is_empty());
    let mut body = rc.encode_to_vec();
    let mut hash = Sha256::new();
    hash.update(&body);
    let len: usize = vhosts.iter().map(|v| v.body.len() + 16).sum();
    body.reserve(len);
    for v in vhosts {
        put_message(ROUTE_CONFIGURATION_VIRTUAL_HOSTS, &v.body, &mut body);
        hash.update(v.digest);
    }
    let digest = hash.finalize();
    Arc::new(XdsResource {
        type_url: type_url::ROUTE.to_string(),
        name: rc.name.clone(),
        version: hex::encode(&digest[..8]),
        body: Bytes::from(body),
    })
}

fn put_message(tag: u32, body: &[u8], out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// An EDS cluster named `name` whose endpoints come as the ClusterLoadAssignment `service`.
pub fn eds_cluster_message(name: &str, service: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: service.to_string(),
        }),
        connect_timeout: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// One endpoint address of a backend. Ordered by priority and locality first, so a sorted
/// list is grouped as the ClusterLoadAssignment needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointAddr {
    /// Envoy priority: 0 for the gateway's own cluster, 1 for the endpoints other clusters
    /// export (Multi-Cluster Services), which take traffic when the local ones are unhealthy.
    pub priority: u32,
    /// The Kubernetes cluster the endpoint lives in, when not the gateway's own ("" local):
    /// the Envoy locality's zone.
    pub locality: String,
    pub ip: String,
    pub port: u32,
    pub ready: bool,
}

impl EndpointAddr {
    /// A local endpoint (priority 0, no locality).
    pub fn local(ip: impl Into<String>, port: u32, ready: bool) -> Self {
        EndpointAddr {
            ip: ip.into(),
            port,
            ready,
            ..Default::default()
        }
    }
}

fn zone_of(g: &LocalityLbEndpoints) -> &str {
    g.locality.as_ref().map_or("", |l| l.zone.as_str())
}

pub fn load_assignment(name: &str, endpoints: &[EndpointAddr]) -> Arc<XdsResource> {
    encode(
        type_url::ENDPOINT,
        name,
        &cluster_load_assignment(name, endpoints, true),
    )
}

/// The endpoints grouped by (priority, locality); with `health` each carries its readiness
/// as its EDS health status (a STRICT_DNS cluster's resolved hosts take none).
pub fn cluster_load_assignment(
    name: &str,
    endpoints: &[EndpointAddr],
    health: bool,
) -> ClusterLoadAssignment {
    let mut sorted: Vec<&EndpointAddr> = endpoints.iter().collect();
    sorted.sort();
    let mut groups: Vec<LocalityLbEndpoints> = Vec::new();
    for e in sorted {
        let lb = LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&e.ip, e.port)),
                ..Default::default()
            })),
            health_status: match (health, e.ready) {
                (false, _) => HealthStatus::Unknown as i32,
                (true, true) => HealthStatus::Healthy as i32,
                (true, false) => HealthStatus::Unhealthy as i32,
            },
            ..Default::default()
        };
        match groups.last_mut() {
            Some(g) if g.priority == e.priority && zone_of(g) == e.locality => {
                g.lb_endpoints.push(lb)
            }
            _ => groups.push(LocalityLbEndpoints {
                locality: (!e.locality.is_empty()).then(|| Locality {
                    zone: e.locality.clone(),
                    ..Default::default()
                }),
                priority: e.priority,
                lb_endpoints: vec![lb],
                ..Default::default()
            }),
        }
    }
    if groups.is_empty() {
        groups.push(LocalityLbEndpoints::default());
    }
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: groups,
        ..Default::default()
    }
}

/// A network filter with a typed config.
pub(crate) fn network_filter<M: prost::Message>(name: &str, type_url: &str, msg: &M) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(any(type_url, msg))),
    }
}
