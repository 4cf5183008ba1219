//! Test helpers: free ports, nodes on 127.0.0.1, a real nats-server, event builders.
#![allow(dead_code)]

use flotilla_model::{EventBody, ResourceEvent};
use flotilla_store::{EventSource, StoreConfig, StoreNode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "flotilla_store=info,openraft=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec: {ports: [{name: http, port: 80}]}
"#;

pub const GATEWAY_ID: &str = "c1/infra/gw";

pub fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: web, port: 80}}]\n"
    )
}

/// Upsert events for every document of `text`, in cluster `c1`.
pub fn events(text: &str) -> TestResult<Vec<ResourceEvent>> {
    events_in("c1", text)
}

/// Upsert events for every document of `text`, in `cluster`.
pub fn events_in(cluster: &str, text: &str) -> TestResult<Vec<ResourceEvent>> {
    let (rs, errs) = flotilla_model::parse_documents("test.yaml", text, cluster);
    if !errs.is_empty() {
        return Err(format!("{errs:?}").into());
    }
    Ok(rs
        .into_iter()
        .map(|r| ResourceEvent {
            cluster: cluster.into(),
            source: "test".into(),
            body: EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: None,
            },
        })
        .collect())
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct TestNode {
    pub node: StoreNode,
    pub shutdown: CancellationToken,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl TestNode {
    pub async fn stop(&self) -> TestResult {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.node.stopped()).await??;
        Ok(())
    }
}

/// Binds `n` listeners on free loopback ports; returns them with the peer map (ids 1..=n).
pub async fn listeners(n: u64) -> TestResult<(Vec<TcpListener>, BTreeMap<u64, String>)> {
    let mut ls = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        peers.insert(id, l.local_addr()?.to_string());
        ls.push(l);
    }
    Ok((ls, peers))
}

pub async fn start_node<S: EventSource>(
    id: u64,
    listener: TcpListener,
    peers: &BTreeMap<u64, String>,
    dir: &Path,
    source: S,
) -> TestResult<TestNode> {
    let addr = listener.local_addr()?;
    let cfg = StoreConfig::new(id, dir.to_path_buf(), addr, peers.clone());
    let shutdown = CancellationToken::new();
    let node = StoreNode::start_with_listener(cfg, listener, source, shutdown.clone()).await?;
    Ok(TestNode {
        node,
        shutdown,
        addr,
        dir: dir.to_path_buf(),
    })
}

/// Three nodes fed by `nats`, each on its own temp data dir (kept alive by the returned dirs).
pub async fn start_cluster(
    nats: &NatsServer,
    stream: &str,
) -> TestResult<(Vec<tempfile::TempDir>, Vec<TestNode>, BTreeMap<u64, String>)> {
    let (ls, peers) = listeners(3).await?;
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let src = flotilla_store::NatsSource::connect(&nats.url, stream).await?;
        nodes.push(start_node(i as u64 + 1, l, &peers, dir.path(), src).await?);
        dirs.push(dir);
    }
    Ok((dirs, nodes, peers))
}

/// One standalone node (a one-member cluster) on its own temp data dir, fed by `bus`.
pub async fn start_single(
    bus: &std::sync::Arc<flotilla_store::EmbeddedBus>,
) -> TestResult<(tempfile::TempDir, TestNode, BTreeMap<u64, String>)> {
    let dir = tempfile::tempdir()?;
    let (mut ls, peers) = listeners(1).await?;
    let l = ls.pop().ok_or("no listener")?;
    let node = start_node(1, l, &peers, dir.path(), bus.clone()).await?;
    Ok((dir, node, peers))
}

/// Rebinds a node's old address (after a stop) and starts it again on the same data dir.
pub async fn restart_node<S: EventSource>(
    id: u64,
    old: &TestNode,
    peers: &BTreeMap<u64, String>,
    source: S,
) -> TestResult<TestNode> {
    let mut last_err = None;
    for _ in 0..50 {
        match TcpListener::bind(old.addr).await {
            Ok(l) => return start_node(id, l, peers, &old.dir, source).await,
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(format!("rebinding {}: {last_err:?}", old.addr).into())
}

/// The leader all running nodes agree on.
pub fn agreed_leader(nodes: &[&TestNode]) -> Option<u64> {
    let first = nodes.first()?.node.leader()?;
    nodes
        .iter()
        .all(|n| n.node.leader() == Some(first))
        .then_some(first)
}

/// A free loopback port (bound then released).
pub fn free_port() -> TestResult<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A nats-server with JetStream on a free port, killed on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

const NATS_SERVER: &str = "/usr/sbin/nats-server";

fn nats_server_bin() -> TestResult<&'static str> {
    if !Path::new(NATS_SERVER).exists() {
        return Err(format!(
            "{NATS_SERVER} is missing: install it with `apt-get install -y nats-server` (see TOOLCHAIN.md)"
        )
        .into());
    }
    Ok(NATS_SERVER)
}

impl NatsServer {
    /// No authorization, JetStream in a temp dir.
    pub async fn start() -> TestResult<Self> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let child = Command::new(nats_server_bin()?)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Self::wait(child, port, Some(dir)).await
    }

    /// Runs the configuration `conf`, which listens on 127.0.0.1:`port`; the server's log goes
    /// to `nats-server.log` beside it.
    pub async fn start_with_config(conf: &Path, port: u16) -> TestResult<Self> {
        let log = conf.with_file_name("nats-server.log");
        let child = Command::new(nats_server_bin()?)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Self::wait(child, port, None).await
    }

    async fn wait(child: Child, port: u16, dir: Option<tempfile::TempDir>) -> TestResult<Self> {
        let url = format!("nats://127.0.0.1:{port}");
        let server = NatsServer {
            child,
            url,
            _dir: dir,
        };
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("nats-server did not listen on {addr}").into())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes events to `flotilla.events.c1` through JetStream; returns their sequences.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    evs: &[ResourceEvent],
) -> TestResult<Vec<u64>> {
    let mut seqs = Vec::new();
    for ev in evs {
        let payload = serde_json::to_vec(ev)?;
        let ack = js
            .publish("flotilla.events.c1", payload.into())
            .await?
            .await?;
        seqs.push(ack.sequence);
    }
    Ok(seqs)
}
