//! Decoding of received xDS resources, once per distinct (type, name, version) and shared by
//! every proxy that receives it: a Listener tells which route configurations to subscribe to
//! (RDS), a Cluster which load assignment (EDS), a RouteConfiguration which change markers it
//! contains.

use crate::intern::{Interner, Sym};
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{route_match, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, HttpConnectionManager,
};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The four resource types a simulated proxy tracks, in Envoy's push order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ResType {
    Cluster = 0,
    Endpoint = 1,
    Listener = 2,
    Route = 3,
}

impl ResType {
    pub const ALL: [ResType; 4] = [
        ResType::Cluster,
        ResType::Endpoint,
        ResType::Listener,
        ResType::Route,
    ];

    pub fn from_url(url: &str) -> Option<ResType> {
        match url {
            CDS => Some(ResType::Cluster),
            EDS => Some(ResType::Endpoint),
            LDS => Some(ResType::Listener),
            RDS => Some(ResType::Route),
            _ => None,
        }
    }

    pub fn url(self) -> &'static str {
        match self {
            ResType::Cluster => CDS,
            ResType::Endpoint => EDS,
            ResType::Listener => LDS,
            ResType::Route => RDS,
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            ResType::Cluster => "CDS",
            ResType::Endpoint => "EDS",
            ResType::Listener => "LDS",
            ResType::Route => "RDS",
        }
    }

    /// Subscribed to by name (not wildcard).
    pub fn by_name(self) -> bool {
        matches!(self, ResType::Endpoint | ResType::Route)
    }
}

/// A change marker found in a route's path: `/lt/<route>/<seq>` (see [`marker_path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Marker {
    pub route: u32,
    pub seq: u64,
}

/// The path prefix that carries a change marker.
pub fn marker_path(route: u32, seq: u64) -> String {
    format!("/lt/{route}/{seq}")
}

/// Parses a path made by [`marker_path`] (a trailing `/...` is tolerated).
pub fn parse_marker(path: &str) -> Option<Marker> {
    let rest = path.strip_prefix("/lt/")?;
    let mut parts = rest.split('/');
    let route = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    Some(Marker { route, seq })
}

/// What a proxy needs to know about one resource version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Route configuration names the listener's HTTP connection managers load over RDS.
    Listener { rds: Vec<Sym> },
    /// The EDS service name of an EDS cluster (`None`: not an EDS cluster).
    Cluster { eds: Option<Sym> },
    /// Markers in the route configuration, sorted.
    Routes { markers: Vec<Marker> },
    /// Sorted `p<priority> <address>:<port>` of every endpoint, joined by `,`: what a proxy
    /// would route to (compared with Envoy's config dump, which has no EDS versions).
    Endpoints { summary: Sym },
    /// The bytes are not a valid message of the type: a real Envoy would NACK it.
    Invalid(String),
}

type Key = (ResType, Sym, Sym);

/// Shared decode results, keyed by (type, name, version).
#[derive(Debug)]
pub struct DecodeCache {
    interner: Arc<Interner>,
    map: RwLock<HashMap<Key, Arc<Decoded>>>,
    /// SotW: content version -> resource name (SotW responses carry bare bodies).
    sotw_names: RwLock<HashMap<(ResType, Sym), Sym>>,
}

impl DecodeCache {
    pub fn new(interner: Arc<Interner>) -> Self {
        Self {
            interner,
            map: RwLock::new(HashMap::new()),
            sotw_names: RwLock::new(HashMap::new()),
        }
    }

    pub fn interner(&self) -> &Arc<Interner> {
        &self.interner
    }

    /// The decoded form of `body`, decoding only if this (type, name, version) is new.
    pub fn get(&self, ty: ResType, name: Sym, version: Sym, body: &[u8]) -> Arc<Decoded> {
        let key = (ty, name, version);
        if let Some(d) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return d.clone();
        }
        let decoded = Arc::new(decode(ty, body, &self.interner));
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(decoded)
            .clone()
    }

    /// Already decoded, without the body.
    pub fn lookup(&self, ty: ResType, name: Sym, version: Sym) -> Option<Arc<Decoded>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(ty, name, version))
            .cloned()
    }

    /// SotW: (name, content version, decoded) of a body, decoding once per distinct content.
    pub fn get_sotw(&self, ty: ResType, body: &[u8]) -> (Sym, Sym, Arc<Decoded>) {
        let version = self.interner.intern(&content_version(ty, body));
        let known = self
            .sotw_names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(ty, version))
            .copied();
        if let Some(name) = known {
            if let Some(d) = self.lookup(ty, name, version) {
                return (name, version, d);
            }
        }
        let name = self
            .interner
            .intern(&resource_name(ty, body).unwrap_or_default());
        let d = self.get(ty, name, version, body);
        self.sotw_names
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((ty, version), name);
        (name, version, d)
    }

    /// Distinct versions decoded so far.
    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The version Flotilla gives a resource of type `ty` (translate's `XdsResource::version`, see
/// `flotilla_model::digest::xds_version`). Used for SotW, whose responses carry no
/// per-resource version.
pub fn content_version(ty: ResType, body: &[u8]) -> String {
    flotilla_model::digest::xds_version(ty == ResType::Route, body)
}

pub fn decode(ty: ResType, body: &[u8], interner: &Interner) -> Decoded {
    match ty {
        ResType::Listener => match Listener::decode(body) {
            Ok(l) => {
                let mut rds = Vec::new();
                let chains = l.filter_chains.iter().chain(l.default_filter_chain.iter());
                for f in chains.flat_map(|c| c.filters.iter()) {
                    if let Some(name) = rds_name(f) {
                        let s = interner.intern(&name);
                        if !rds.contains(&s) {
                            rds.push(s);
                        }
                    }
                }
                Decoded::Listener { rds }
            }
            Err(e) => Decoded::Invalid(format!("Listener: {e}")),
        },
        ResType::Cluster => match Cluster::decode(body) {
            Ok(c) => {
                let eds = matches!(
                    c.cluster_discovery_type,
                    Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32
                );
                let eds = eds.then(|| {
                    let svc = c
                        .eds_cluster_config
                        .as_ref()
                        .map(|e| e.service_name.as_str())
                        .filter(|s| !s.is_empty())
                        .unwrap_or(c.name.as_str());
                    interner.intern(svc)
                });
                Decoded::Cluster { eds }
            }
            Err(e) => Decoded::Invalid(format!("Cluster: {e}")),
        },
        ResType::Route => match RouteConfiguration::decode(body) {
            Ok(rc) => {
                let mut markers: Vec<Marker> = rc
                    .virtual_hosts
                    .iter()
                    .flat_map(|vh| vh.routes.iter())
                    .filter_map(|r| r.r#match.as_ref()?.path_specifier.as_ref())
                    .filter_map(|p| match p {
                        route_match::PathSpecifier::Prefix(s)
                        | route_match::PathSpecifier::Path(s)
                        | route_match::PathSpecifier::PathSeparatedPrefix(s) => parse_marker(s),
                        _ => None,
                    })
                    .collect();
                markers.sort();
                markers.dedup();
                Decoded::Routes { markers }
            }
            Err(e) => Decoded::Invalid(format!("RouteConfiguration: {e}")),
        },
        ResType::Endpoint => {
            match envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(body)
            {
                Ok(cla) => {
                    let mut eps: Vec<String> = cla
                        .endpoints
                        .iter()
                        .flat_map(|l| {
                            l.lb_endpoints.iter().filter_map(move |e| {
                                use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
                                use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
                                let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                                    return None;
                                };
                                let Some(address::Address::SocketAddress(sa)) =
                                    ep.address.as_ref()?.address.as_ref()
                                else {
                                    return None;
                                };
                                let port = match sa.port_specifier {
                                    Some(socket_address::PortSpecifier::PortValue(p)) => p,
                                    _ => 0,
                                };
                                Some(endpoint_key(l.priority, &sa.address, port))
                            })
                        })
                        .collect();
                    eps.sort();
                    Decoded::Endpoints {
                        summary: interner.intern(&eps.join(",")),
                    }
                }
                Err(e) => Decoded::Invalid(format!("ClusterLoadAssignment: {e}")),
            }
        }
    }
}

/// The name inside an encoded resource (SotW responses name nothing outside the body).
pub fn resource_name(ty: ResType, body: &[u8]) -> Option<String> {
    match ty {
        ResType::Listener => Listener::decode(body).ok().map(|l| l.name),
        ResType::Cluster => Cluster::decode(body).ok().map(|c| c.name),
        ResType::Route => RouteConfiguration::decode(body).ok().map(|r| r.name),
        ResType::Endpoint => {
            envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(body)
                .ok()
                .map(|c| c.cluster_name)
        }
    }
}

/// One endpoint in an endpoints summary (see [`Decoded::Endpoints`]).
pub fn endpoint_key(priority: u32, address: &str, port: u32) -> String {
    format!("p{priority} {address}:{port}")
}

fn rds_name(f: &Filter) -> Option<String> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
        return None;
    };
    if any.type_url != HCM_TYPE {
        return None;
    }
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).ok()?;
    match hcm.route_specifier? {
        http_connection_manager::RouteSpecifier::Rds(r) => Some(r.route_config_name),
        _ => None,
    }
}

/// Markers as a per-route map: the newest seq seen for each route in a route configuration.
pub fn newest_by_route(markers: &[Marker]) -> HashMap<u32, u64> {
    let mut m = HashMap::new();
    for mk in markers {
        let e = m.entry(mk.route).or_insert(mk.seq);
        *e = (*e).max(mk.seq);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain};
    use envoy_types::pb::envoy::config::route::v3::{Route, RouteMatch, VirtualHost};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn markers_round_trip() {
        assert_eq!(
            parse_marker(&marker_path(7, 42)),
            Some(Marker { route: 7, seq: 42 })
        );
        assert_eq!(
            parse_marker("/lt/7/42/"),
            Some(Marker { route: 7, seq: 42 })
        );
        assert_eq!(parse_marker("/lt/x/1"), None);
        assert_eq!(parse_marker("/app"), None);
    }

    #[test]
    fn listener_yields_its_rds_names_and_decodes_once() {
        let hcm = HttpConnectionManager {
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                route_config_name: "http-8080".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let l = Listener {
            name: "l".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(Any {
                        type_url: HCM_TYPE.into(),
                        value: hcm.encode_to_vec(),
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let i = Arc::new(Interner::new());
        let cache = DecodeCache::new(i.clone());
        let (n, v) = (i.intern("l"), i.intern("v1"));
        let d = cache.get(ResType::Listener, n, v, &l.encode_to_vec());
        assert_eq!(
            *d,
            Decoded::Listener {
                rds: vec![i.intern("http-8080")]
            }
        );
        // Second lookup does not decode: garbage bytes under the same key give the same answer.
        assert_eq!(cache.get(ResType::Listener, n, v, b"\xff\xff"), d);
        assert_eq!(cache.len(), 1);
        let bad = cache.get(ResType::Listener, n, i.intern("v2"), b"\xff\xff\xff");
        assert!(matches!(*bad, Decoded::Invalid(_)), "{bad:?}");
    }

    #[test]
    fn eds_cluster_names_its_service() {
        let i = Interner::new();
        let mut c = Cluster {
            name: "east/default/svc".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            ..Default::default()
        };
        assert_eq!(
            decode(ResType::Cluster, &c.encode_to_vec(), &i),
            Decoded::Cluster {
                eds: Some(i.intern("east/default/svc"))
            }
        );
        c.eds_cluster_config = Some(cluster::EdsClusterConfig {
            service_name: "svc-eds".into(),
            ..Default::default()
        });
        assert_eq!(
            decode(ResType::Cluster, &c.encode_to_vec(), &i),
            Decoded::Cluster {
                eds: Some(i.intern("svc-eds"))
            }
        );
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        ));
        assert_eq!(
            decode(ResType::Cluster, &c.encode_to_vec(), &i),
            Decoded::Cluster { eds: None }
        );
    }

    #[test]
    fn route_configuration_markers() {
        let route = |p: route_match::PathSpecifier| Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(p),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rc = RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![VirtualHost {
                routes: vec![
                    route(route_match::PathSpecifier::PathSeparatedPrefix(
                        "/lt/3/9".into(),
                    )),
                    route(route_match::PathSpecifier::Prefix("/lt/1/2/".into())),
                    route(route_match::PathSpecifier::Prefix("/other".into())),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = decode(ResType::Route, &rc.encode_to_vec(), &Interner::new());
        let Decoded::Routes { markers } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            markers,
            vec![Marker { route: 1, seq: 2 }, Marker { route: 3, seq: 9 }]
        );
        assert_eq!(newest_by_route(&markers).get(&3), Some(&9));
    }

    #[test]
    fn content_version_matches_translate() {
        // translate: hex of the first 8 bytes of SHA-256(body), a route configuration's by
        // virtual host.
        assert_eq!(content_version(ResType::Cluster, b""), "e3b0c44298fc1c14");
        let rc = [0x0a, 0x01, b'r', 0x12, 0x02, 0x0a, b'a'];
        assert_ne!(
            content_version(ResType::Route, &rc),
            content_version(ResType::Cluster, &rc)
        );
    }
}
