//! Test harness: a fake store (a real tonic Watch server on 127.0.0.1:0, fed by the test), an
//! edge on 127.0.0.1:0 and ADS clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use flotilla_proto::watch::watch_server::{Watch, WatchServer};
use flotilla_proto::watch::{GatewayResources, WatchRequest, WatchResponse, XdsResource};
use flotilla_xds_edge::{Edge, EdgeConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const GW: &str = "east/ns/gw";

pub const WAIT: Duration = Duration::from_secs(5);
pub const QUIET: Duration = Duration::from_millis(300);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "flotilla_xds_edge=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

// ---------- fake store ----------

pub struct Conn {
    pub req: WatchRequest,
    pub tx: mpsc::Sender<Result<WatchResponse, Status>>,
}

impl Conn {
    pub async fn send(&self, resp: WatchResponse) {
        self.tx
            .send(Ok(resp))
            .await
            .expect("edge dropped watch stream");
    }
}

struct FakeWatch {
    conns: mpsc::Sender<Conn>,
}

#[tonic::async_trait]
impl Watch for FakeWatch {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;
    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let _ = self
            .conns
            .send(Conn {
                req: req.into_inner(),
                tx,
            })
            .await;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub struct FakeStore {
    pub url: String,
    pub conns: mpsc::Receiver<Conn>,
    pub stop: CancellationToken,
}

impl FakeStore {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(WatchServer::new(FakeWatch { conns: tx }))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), s.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}"),
            conns,
            stop,
        }
    }

    pub async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("no watch connection")
            .expect("store closed")
    }
}

// ---------- state builders ----------

/// `(type_url, name, version)`; body = "name@version".
pub fn gw(id: &str, res: &[(&str, &str, &str)]) -> GatewayResources {
    GatewayResources {
        gateway: id.into(),
        resources: res
            .iter()
            .map(|(t, n, v)| XdsResource {
                type_url: (*t).into(),
                name: (*n).into(),
                version: (*v).into(),
                body: Bytes::from(format!("{n}@{v}")),
            })
            .collect(),
    }
}

pub fn full(revision: u64, gateways: Vec<GatewayResources>) -> WatchResponse {
    WatchResponse {
        revision,
        full_state: true,
        gateways,
        removed_gateways: vec![],
    }
}

pub fn delta(revision: u64, gateways: Vec<GatewayResources>) -> WatchResponse {
    WatchResponse {
        revision,
        full_state: false,
        gateways,
        removed_gateways: vec![],
    }
}

// ---------- edge ----------

pub struct TestEdge {
    pub edge: Edge,
    pub addr: SocketAddr,
    pub stop: CancellationToken,
}

impl TestEdge {
    pub async fn start(stores: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let edge = Edge::new(EdgeConfig::new(addr, stores, "test-edge")).unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(edge.run(listener, stop.clone()));
        Self { edge, addr, stop }
    }

    pub async fn client(&self) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
        AggregatedDiscoveryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    pub async fn wait_revision(&self, rev: u64) {
        tokio::time::timeout(WAIT, async {
            while self.edge.stats().revision < rev {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("edge did not reach revision");
    }
}

impl TestEdge {
    /// Waits until the stats satisfy `f` (ACKs are counted asynchronously).
    pub async fn wait_stats(&self, f: impl Fn(&flotilla_xds_edge::EdgeStats) -> bool) {
        let ok = tokio::time::timeout(WAIT, async {
            while !f(&self.edge.stats()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(ok.is_ok(), "stats never matched: {:?}", self.edge.stats());
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn node(cluster: &str) -> Option<Node> {
    Some(Node {
        id: "proxy-1".into(),
        cluster: cluster.into(),
        ..Default::default()
    })
}

// ---------- delta client ----------

pub struct Delta {
    pub tx: mpsc::Sender<DeltaDiscoveryRequest>,
    pub rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    pub async fn open(e: &TestEdge) -> Self {
        let mut c = e.client().await;
        let (tx, rx) = mpsc::channel(16);
        let rx = c
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    pub async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    pub async fn subscribe(&self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            node: node(GW),
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    pub async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    pub async fn nack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad resource".into(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no delta response in time")
            .expect("delta stream error")
            .expect("delta stream ended")
    }

    pub async fn recv_err(&mut self) -> Status {
        match tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no answer in time")
        {
            Err(s) => s,
            Ok(m) => panic!("expected an error, got {m:?}"),
        }
    }

    /// Receives and ACKs.
    pub async fn recv_ack(&mut self) -> DeltaDiscoveryResponse {
        let r = self.recv().await;
        self.ack(&r).await;
        r
    }

    pub async fn expect_quiet(&mut self) {
        if let Ok(m) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {m:?}");
        }
    }
}

/// `name -> version` of a delta response.
pub fn names(r: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    r.resources
        .iter()
        .map(|x| (x.name.clone(), x.version.clone()))
        .collect()
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ---------- sotw client ----------

pub struct Sotw {
    pub tx: mpsc::Sender<DiscoveryRequest>,
    pub rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    pub async fn open(e: &TestEdge) -> Self {
        let mut c = e.client().await;
        let (tx, rx) = mpsc::channel(16);
        let rx = c
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    pub async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    pub async fn request(&self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.send(DiscoveryRequest {
            node: node(GW),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("no sotw response in time")
            .expect("sotw stream error")
            .expect("sotw stream ended")
    }

    pub async fn expect_quiet(&mut self) {
        if let Ok(m) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {m:?}");
        }
    }
}

/// Bodies ("name@version") of a SotW response.
pub fn bodies(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
        .collect()
}
