//! The Envoy listeners a gateway's programmed listeners become: one per port and transport,
//! with the HTTP connection manager (and the rate limit, ClientTrafficPolicy and
//! BackendTrafficPolicy filters in it) for HTTP, filter chains per SNI name for HTTPS, TLS and
//! TCP, QUIC for HTTP/3, and UDP. Above [`crate::policy`] and [`crate::ratelimit`]; the listener
//! validation and status below it know nothing of Envoy.

use crate::envoy::{self, any};
use crate::ir::client::ClientSettings;
use crate::policy::client;
use crate::tls::{downstream_tls_context, tls_transport_socket, ClientValidation, ServingCerts};
use crate::XdsResource;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, SocketAddress};
use envoy_types::pb::envoy::config::listener::v3::{
    listener_filter, Filter, FilterChain, FilterChainMatch, Listener as EnvoyListener,
    ListenerFilter, UdpListenerConfig,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::envoy::{ads, any_of, encode, hcm_network_filter, socket_address, CORS_FILTER};
use crate::hostnames::sni_names;
use crate::listener::state::{has, port_of, route_config_name, ListenerState};
use crate::type_url;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::stateful_session::v3::StatefulSession;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::Duration;

/// One filter chain to serve on a TCP-family port, before de-duplication.
pub(crate) struct Chain {
    /// SNI names to match; empty matches any (the default chain).
    pub server_names: Vec<String>,
    pub tls: Option<Arc<ServingCerts>>,
    pub alpn: &'static [&'static str],
    pub client: Option<ClientValidation>,
    pub filters: Vec<Filter>,
    /// The ClientTrafficPolicy settings of the listener the chain serves.
    pub ctp: Option<Arc<ClientSettings>>,
}

/// What the routes produced for Envoy, per listener index.
#[derive(Default)]
pub(crate) struct L4Chains {
    /// TCP-family chains per listener (TLS passthrough by SNI, TCP, TLS terminate).
    pub chains: BTreeMap<usize, Vec<Chain>>,
    /// UDP listeners: the udp_proxy listener filter per listener.
    pub udp: BTreeMap<usize, ListenerFilter>,
    /// Clusters the chains need besides the backends' (dynamic forward proxies).
    pub resources: Vec<Arc<XdsResource>>,
}

fn socket(ip: &str, port: u32, udp: bool) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            protocol: if udp {
                socket_address::Protocol::Udp as i32
            } else {
                socket_address::Protocol::Tcp as i32
            },
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// The Envoy listeners of every programmed listener: one per port and transport. A port
/// whose listeners are HTTP is served by the plain HTTP listener `http-PORT` (built by the
/// gateway); HTTPS, TLS and TCP listeners share `tcp-PORT` with one filter chain per SNI name;
/// UDP listeners become `udp-PORT`. ClientTrafficPolicy settings: the first listener of a port
/// configures the Envoy listener (and, for plain HTTP, its one HCM), each HTTPS or TLS
/// listener its own filter chains (see [`crate::policy::client`]).
pub(crate) fn envoy_listeners(
    ls: &[ListenerState],
    bind_ip: &str,
    l4: &mut L4Chains,
    rate_limits: crate::ratelimit::HcmRateLimits,
) -> Vec<Arc<XdsResource>> {
    let mut out = Vec::new();
    let mut ports: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut udp_ports: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, l) in ls.iter().enumerate().filter(|(_, l)| l.valid) {
        match l.protocol() {
            "HTTP" => {
                // The first HTTP listener of the port is kept below (a stable sort, then
                // dedup): its policy configures the port's one HCM.
                out.push(http_listener(
                    &format!("http-{}", port_of(l.spec)),
                    bind_ip,
                    port_of(l.spec),
                    &format!("http-{}", port_of(l.spec)),
                    rate_limits,
                    l.ctp.as_deref(),
                ));
            }
            "UDP" => {
                udp_ports.entry(port_of(l.spec)).or_insert(i);
            }
            _ => ports.entry(port_of(l.spec)).or_default().push(i),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    for (port, idx) in ports {
        let mut chains: Vec<Chain> = Vec::new();
        for &i in &idx {
            let l = &ls[i];
            if l.protocol() == "HTTPS" && !l.serving_certs().is_empty() {
                let certs = Arc::new(l.serving_certs());
                let coalescing = has(&l.conditions, "OverlappingTLSConfig");
                chains.push(Chain {
                    server_names: sni_names(l.spec.hostname.as_deref()),
                    tls: Some(certs),
                    alpn: if coalescing {
                        &["http/1.1"]
                    } else {
                        &["h2", "http/1.1"]
                    },
                    client: l.client.clone(),
                    filters: vec![hcm_filter(
                        &format!("https-{port}"),
                        &route_config_name(l),
                        rate_limits,
                        l.ctp.as_deref(),
                    )],
                    ctp: l.ctp.clone(),
                });
            }
            let l4_chains = l4.chains.remove(&i).unwrap_or_default();
            if l.ctp_invalid {
                continue;
            }
            chains.extend(l4_chains.into_iter().map(|mut c| {
                c.ctp = l.ctp.clone();
                c
            }));
        }
        // Envoy Gateway creates a port's Envoy listener from its first HTTPS listener (HTTP
        // listeners are translated before TCP ones), else its first listener.
        let first = idx
            .iter()
            .find(|&&i| ls[i].protocol() == "HTTPS")
            .or(idx.first())
            .and_then(|&i| ls[i].ctp.clone());
        // Envoy rejects two chains that match the same server name: the first keeps it.
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut filter_chains = Vec::new();
        for (n, mut c) in chains.into_iter().enumerate() {
            let key = |s: &str| s.to_ascii_lowercase();
            if c.server_names.is_empty() {
                if !taken.insert(String::new()) {
                    continue;
                }
            } else {
                c.server_names.retain(|s| taken.insert(key(s)));
                if c.server_names.is_empty() {
                    continue;
                }
            }
            let transport_socket = c.tls.as_ref().map(|certs| {
                let mut ctx = downstream_tls_context(certs, c.alpn, c.client.as_ref());
                if let Some(s) = &c.ctp {
                    client::xds::apply_tls(s, &mut ctx);
                }
                tls_transport_socket(&ctx)
            });
            let mut filters = c.filters;
            if let Some(s) = &c.ctp {
                client::xds::apply_chain_filters(s, &format!("tcp-{port}"), &mut filters);
            }
            filter_chains.push(FilterChain {
                name: format!("tcp-{port}/{n}"),
                filter_chain_match: (!c.server_names.is_empty()).then(|| FilterChainMatch {
                    server_names: c.server_names.clone(),
                    ..Default::default()
                }),
                transport_socket,
                filters,
                ..Default::default()
            });
        }
        if filter_chains.is_empty() {
            continue;
        }
        let needs_sni = filter_chains
            .iter()
            .any(|c| c.filter_chain_match.is_some() || c.transport_socket.is_some());
        let name = format!("tcp-{port}");
        let mut listener = EnvoyListener {
            name: name.clone(),
            address: Some(socket(bind_ip, port, false)),
            filter_chains,
            listener_filters: if needs_sni {
                vec![ListenerFilter {
                    name: "envoy.filters.listener.tls_inspector".into(),
                    config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                        &TlsInspector::default(),
                    ))),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            ..Default::default()
        };
        if let Some(s) = &first {
            client::xds::apply_listener(s, &mut listener);
        }
        out.push(envoy::encode(crate::type_url::LISTENER, &name, &listener));
        if let Some(quic) = quic_listener(ls, &idx, port, bind_ip, rate_limits) {
            out.push(quic);
        }
    }
    for (port, i) in udp_ports {
        let Some(filter) = l4.udp.remove(&i) else {
            continue;
        };
        let name = format!("udp-{port}");
        let listener = EnvoyListener {
            name: name.clone(),
            address: Some(socket(bind_ip, port, true)),
            udp_listener_config: Some(UdpListenerConfig::default()),
            listener_filters: vec![filter],
            ..Default::default()
        };
        out.push(envoy::encode(crate::type_url::LISTENER, &name, &listener));
    }
    out
}

/// Whether listener `i` also serves HTTP/3: an HTTPS listener whose ClientTrafficPolicy enables
/// it, that validates no client certificates (Envoy cannot over QUIC) and whose port no UDP
/// listener takes.
pub(crate) fn serves_http3(ls: &[ListenerState], i: usize) -> bool {
    let l = &ls[i];
    let port = port_of(l.spec);
    l.valid
        && l.protocol() == "HTTPS"
        && !l.ctp_invalid
        && l.client.is_none()
        && l.ctp.as_ref().is_some_and(|s| s.http3)
        && !l.serving_certs().is_empty()
        && !ls
            .iter()
            .any(|o| o.valid && o.protocol() == "UDP" && port_of(o.spec) == port)
}

/// The QUIC listener `quic-PORT` serving HTTP/3 for the HTTPS listeners `idx` of `port` that
/// enable it (Envoy Gateway's `buildXdsQuicListener`): one filter chain per listener, as on
/// the TCP listener, with the HCM speaking HTTP/3 over the QUIC transport socket.
fn quic_listener(
    ls: &[ListenerState],
    idx: &[usize],
    port: u32,
    bind_ip: &str,
    rate_limits: crate::ratelimit::HcmRateLimits,
) -> Option<Arc<XdsResource>> {
    use envoy_types::pb::envoy::config::core::v3::UdpSocketConfig;
    use envoy_types::pb::envoy::config::listener::v3::QuicProtocolOptions;
    let name = format!("quic-{port}");
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut chains = Vec::new();
    for (n, &i) in idx.iter().enumerate().filter(|(_, &i)| serves_http3(ls, i)) {
        let l = &ls[i];
        let Some(s) = l.ctp.as_deref() else {
            continue;
        };
        let mut names = sni_names(l.spec.hostname.as_deref());
        if names.is_empty() {
            if !taken.insert(String::new()) {
                continue;
            }
        } else {
            names.retain(|h| taken.insert(h.to_ascii_lowercase()));
            if names.is_empty() {
                continue;
            }
        }
        let mut ctx = downstream_tls_context(&l.serving_certs(), &["h3"], None);
        client::xds::apply_tls(s, &mut ctx);
        let mut hcm = hcm(
            &format!("https-{port}"),
            &route_config_name(l),
            rate_limits,
            Some(s),
        );
        client::xds::http3_hcm(&mut hcm);
        let mut filters = vec![envoy::hcm_network_filter(&hcm)];
        client::xds::apply_chain_filters(s, &name, &mut filters);
        chains.push(FilterChain {
            name: format!("{name}/{n}"),
            filter_chain_match: (!names.is_empty()).then(|| FilterChainMatch {
                server_names: names,
                ..Default::default()
            }),
            transport_socket: Some(client::xds::quic_transport_socket(ctx)),
            filters,
            ..Default::default()
        });
    }
    if chains.is_empty() {
        return None;
    }
    let listener = EnvoyListener {
        name: name.clone(),
        address: Some(socket(bind_ip, port, true)),
        udp_listener_config: Some(UdpListenerConfig {
            downstream_socket_config: Some(UdpSocketConfig::default()),
            quic_options: Some(QuicProtocolOptions::default()),
            ..Default::default()
        }),
        filter_chains: chains,
        ..Default::default()
    };
    Some(envoy::encode(crate::type_url::LISTENER, &name, &listener))
}

/// An HTTP listener on `ip:port` whose routes come from RDS resource `route_name`, with the
/// rate limit filters its routes need, configured by the ClientTrafficPolicy settings `client`
/// if any.
pub(crate) fn http_listener(
    name: &str,
    ip: &str,
    port: u32,
    route_name: &str,
    rate_limits: crate::ratelimit::HcmRateLimits,
    client: Option<&ClientSettings>,
) -> Arc<XdsResource> {
    let mut filters = vec![hcm_filter(name, route_name, rate_limits, client)];
    let mut listener = EnvoyListener {
        name: name.to_string(),
        address: Some(socket_address(ip, port)),
        ..Default::default()
    };
    if let Some(s) = client {
        crate::policy::client::xds::apply_chain_filters(s, name, &mut filters);
        crate::policy::client::xds::apply_listener(s, &mut listener);
    }
    listener.filter_chains = vec![FilterChain {
        filters,
        ..Default::default()
    }];
    encode(type_url::LISTENER, name, &listener)
}

/// The HTTP connection manager filter, routes from RDS resource `route_name`, with the rate
/// limit filters the gateway's routes need, configured by the ClientTrafficPolicy settings
/// `client` if any.
pub(crate) fn hcm_filter(
    stat_prefix: &str,
    route_name: &str,
    rate_limits: crate::ratelimit::HcmRateLimits,
    client: Option<&ClientSettings>,
) -> Filter {
    hcm_network_filter(&hcm(stat_prefix, route_name, rate_limits, client))
}

/// The HTTP connection manager [`hcm_filter`] wraps, for callers that adjust it.
pub(crate) fn hcm(
    stat_prefix: &str,
    route_name: &str,
    rate_limits: crate::ratelimit::HcmRateLimits,
    client: Option<&ClientSettings>,
) -> HttpConnectionManager {
    let mut http_filters = vec![
        // Routes carry their CORS policy as per-filter config; without one the filter
        // passes requests through.
        HttpFilter {
            name: CORS_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
                &envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors::default(),
            ))),
            ..Default::default()
        },
    ];
    // Envoy Gateway's order: after CORS, before the forward proxy.
    http_filters.extend(rate_limits.filters(!client.is_some_and(|c| c.disable_rate_limit_headers)));
    http_filters.extend([
        // Resolves the request host for routes to a dynamic forward proxy cluster (an Envoy
        // Gateway DynamicResolver Backend); every other route passes through untouched.
        HttpFilter {
            name: "envoy.filters.http.dynamic_forward_proxy".to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
                &dfp_filter_config(),
            ))),
            ..Default::default()
        },
        // Disabled unless a route enables it with its session persistence config.
        HttpFilter {
            name: crate::session::STATEFUL_SESSION_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any_of(
                &StatefulSession::default(),
            ))),
            disabled: true,
            ..Default::default()
        },
        HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                &Router::default(),
            ))),
            ..Default::default()
        },
    ]);
    let mut hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.to_string(),
        })),
        http_filters,
        // WebSocket upgrades are allowed on every route, as Envoy Gateway's HCM does
        // (HTTPRouteBackendProtocolWebSocket).
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // BackendTrafficPolicy's filters, each in its place in Envoy Gateway's order.
    crate::traffic::insert_http_filters(&mut hcm.http_filters);
    if let Some(s) = client {
        crate::policy::client::xds::apply_hcm(s, &mut hcm);
    }
    hcm
}

fn dfp_filter_config(
) -> envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::FilterConfig {
    use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
        filter_config, FilterConfig, SubClusterConfig,
    };
    FilterConfig {
        implementation_specifier: Some(filter_config::ImplementationSpecifier::SubClusterConfig(
            SubClusterConfig {
                cluster_init_timeout: Some(Duration {
                    seconds: 5,
                    nanos: 0,
                }),
            },
        )),
        ..Default::default()
    }
}
