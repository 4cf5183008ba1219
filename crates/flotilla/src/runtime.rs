//! Assembles the long-running components from the library crates: one function per
//! subcommand, one cancellation token for all, and a non-zero exit when a critical task dies.

use crate::cli::{Command, EdgeArgs, IngestArgs, NatsArgs, StandaloneArgs, StoreArgs};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_ingest::{FileSource, NatsPublisher, Publisher, Refusals};
use flotilla_model::ResourceEvent;
use flotilla_store::{EmbeddedBus, NatsSource, StoreConfig, StoreNode};
use flotilla_xds_edge::{Edge, EdgeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

pub fn run_async(cmd: Command) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match cmd {
            Command::Ingest(a) => ingest(a, shutdown).await,
            Command::Store(a) => store(a, shutdown).await,
            Command::Edge(a) => edge(a, shutdown).await,
            Command::Standalone(a) => standalone(a, shutdown).await,
            Command::Bootstrap(_)
            | Command::Translate(_)
            | Command::Ctl(_)
            | Command::NatsConfig(_) => {
                bail!("not a long-running command")
            }
        }
    })
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    info!("shutting down");
    shutdown.cancel();
}

/// Runs every task until shutdown; the first task to fail (or to end before shutdown) stops
/// the others and makes the process exit non-zero.
async fn supervise(mut tasks: JoinSet<Result<()>>, shutdown: CancellationToken) -> Result<()> {
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let outcome: Result<()> = match done {
            Ok(Ok(())) if shutdown.is_cancelled() => continue,
            Ok(Ok(())) => Err(anyhow!("a critical task ended unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow!("a critical task panicked: {e}")),
        };
        if let Err(e) = outcome {
            tracing::error!("{e:#}");
            first_error.get_or_insert(e);
            shutdown.cancel();
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} address {addr}"))
}

async fn ingest(a: IngestArgs, shutdown: CancellationToken) -> Result<()> {
    flotilla_ingest::validate_cluster(&a.cluster)?;
    let (client, refusals) = connect_nats(&a.nats, &shutdown).await?;
    let js = async_nats::jetstream::new(client);
    // An agent's user may not use the JetStream API (see `flotilla nats-config`): then the
    // stores create the stream.
    flotilla_ingest::nats::ensure_stream_if_allowed(&js, &refusals).await?;
    let source = FileSource::new(a.cluster.clone(), a.dir.clone());
    info!(cluster = %a.cluster, dir = %a.dir.display(), "ingesting files");
    source
        .run(NatsPublisher::new(js).with_refusals(refusals), shutdown)
        .await?;
    Ok(())
}

/// Connects with the `--nats-*` options: waits for an unreachable server (until shutdown),
/// fails at once on a bad file, refused credentials or failed TLS.
async fn connect_nats(
    a: &NatsArgs,
    shutdown: &CancellationToken,
) -> Result<(async_nats::Client, Refusals)> {
    let cfg = a.client_config();
    tokio::select! {
        r = cfg.connect() => Ok(r?),
        _ = shutdown.cancelled() => bail!("shut down while connecting to NATS at {}", a.nats),
    }
}

fn parse_peers(peers: &[String]) -> Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for p in peers {
        let (id, addr) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--peers entry {p:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--peers entry {p:?}: bad id"))?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            bail!("--peers names node {id} twice");
        }
    }
    Ok(out)
}

async fn store(a: StoreArgs, shutdown: CancellationToken) -> Result<()> {
    let peers = parse_peers(&a.peers)?;
    let (client, _refusals) = connect_nats(&a.nats, &shutdown).await?;
    let source = NatsSource::new(client, flotilla_ingest::nats::STREAM)
        .await
        .with_context(|| format!("using the event stream on NATS at {}", a.nats.nats))?;
    let cfg = StoreConfig {
        node_id: a.id,
        data_dir: a.data_dir.clone(),
        grpc_addr: a.grpc,
        peers,
    };
    let node = StoreNode::start(cfg, source, shutdown.clone()).await?;
    info!(node = a.id, grpc = %a.grpc, api = %a.api, "store node started");
    let api = bind(a.api, "API").await?;
    let mut tasks = JoinSet::new();
    tasks.spawn(
        serve_api(api, node.clone(), shutdown.clone()).instrument(tracing::info_span!("api")),
    );
    let n = node.clone();
    tasks.spawn(async move { n.stopped().await.map_err(anyhow::Error::from) });
    supervise(tasks, shutdown).await
}

/// The API's view of a store node.
struct NodeReader(StoreNode);

impl flotilla_api::StateReader for NodeReader {
    fn state(&self) -> flotilla_api::ApiState {
        let st = self.0.state();
        let c = st.counters();
        flotilla_api::ApiState {
            revision: st.revision(),
            view: st.view().clone(),
            counters: serde_json::json!({
                "epoch": st.position().epoch,
                "lastSeq": st.last_seq(),
                "eventsApplied": c.events_applied,
                "eventsRejected": c.events_rejected,
                "eventsMisattributed": c.events_misattributed,
                "sequencesMissing": c.sequences_missing,
                "batchesRefused": c.batches_refused,
            }),
            rejections: serde_json::to_value(st.rejections().collect::<Vec<_>>())
                .unwrap_or_default(),
        }
    }
    fn readiness(&self) -> Result<(), String> {
        self.0.readiness()
    }
    fn leader(&self) -> Option<u64> {
        self.0.leader()
    }
}

fn admin_err(e: flotilla_store::membership::Error) -> flotilla_api::AdminError {
    use flotilla_api::AdminError as A;
    use flotilla_store::membership::Error as E;
    match e {
        E::NotLeader { leader } => A::NotLeader { leader },
        E::Invalid(m) => A::Invalid(m),
        E::Conflict(m) => A::Conflict(m),
        E::Raft(m) => A::Failed(m),
    }
}

fn members_json(m: &flotilla_store::membership::Members) -> serde_json::Value {
    serde_json::to_value(m).unwrap_or_default()
}

impl flotilla_api::Admin for NodeReader {
    fn members(&self) -> serde_json::Value {
        members_json(&self.0.members())
    }
    fn add_learner(&self, id: u64, addr: String) -> flotilla_api::AdminFuture<'_> {
        Box::pin(async move {
            let m = self.0.add_learner(id, &addr).await.map_err(admin_err)?;
            Ok(members_json(&m))
        })
    }
    fn promote(&self, id: u64) -> flotilla_api::AdminFuture<'_> {
        Box::pin(async move {
            let m = self.0.promote(id).await.map_err(admin_err)?;
            Ok(members_json(&m))
        })
    }
    fn remove(&self, id: u64) -> flotilla_api::AdminFuture<'_> {
        Box::pin(async move {
            let m = self.0.remove(id).await.map_err(admin_err)?;
            Ok(members_json(&m))
        })
    }
    fn snapshot(&self, purge: bool) -> flotilla_api::AdminFuture<'_> {
        Box::pin(async move {
            let index = self.0.snapshot(purge).await.map_err(admin_err)?;
            Ok(serde_json::json!({"snapshotIndex": index, "purged": purge}))
        })
    }
}

async fn serve_api(
    listener: TcpListener,
    node: StoreNode,
    shutdown: CancellationToken,
) -> Result<()> {
    let reader = Arc::new(NodeReader(node));
    let app = flotilla_api::router(reader.clone(), Some(reader));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("API server")
}

async fn edge(a: EdgeArgs, shutdown: CancellationToken) -> Result<()> {
    let stores = a.stores.iter().map(|s| with_scheme(s)).collect();
    let edge = Edge::new(EdgeConfig {
        xds_addr: a.xds,
        stores,
        edge_id: a.id.clone(),
    })?;
    let xds = bind(a.xds, "xDS").await?;
    let admin = bind(a.admin, "admin").await?;
    info!(xds = %a.xds, admin = %a.admin, "edge started");
    let mut tasks = JoinSet::new();
    let run = edge.run(xds, shutdown.clone());
    tasks.spawn(async move { run.await.map_err(anyhow::Error::from) });
    tasks.spawn(crate::telemetry::serve_admin(admin, edge, shutdown.clone()));
    supervise(tasks, shutdown).await
}

fn with_scheme(s: &str) -> String {
    if s.starts_with("http://") || s.starts_with("https://") {
        s.to_string()
    } else {
        format!("http://{s}")
    }
}

/// The embedded event bus as an ingest publisher (standalone mode: no NATS). It publishes on
/// its agent's cluster subject, as a NATS agent's credentials allow it to.
struct BusPublisher {
    bus: Arc<EmbeddedBus>,
    subject: String,
}

impl Publisher for BusPublisher {
    async fn publish(
        &self,
        event: ResourceEvent,
        _dedup_id: String,
    ) -> flotilla_ingest::Result<()> {
        // The bus is in-process and cannot fail or redeliver, so the dedup id has nothing to do.
        // Events are encoded as an agent encodes them for NATS: the store decodes one format.
        event
            .validate()
            .map_err(flotilla_ingest::Error::InvalidEvent)?;
        self.bus
            .publish(self.subject.clone(), serde_json::to_vec(&event)?);
        Ok(())
    }
}

async fn standalone(a: StandaloneArgs, shutdown: CancellationToken) -> Result<()> {
    flotilla_ingest::validate_cluster(&a.cluster)?;
    let (_tmp, data_dir) = match &a.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::tempdir().context("creating a temporary data dir")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let bus = Arc::new(EmbeddedBus::new());
    let grpc = bind(a.grpc, "internal store gRPC").await?;
    let grpc_addr = grpc.local_addr()?;
    let cfg = StoreConfig {
        node_id: 1,
        data_dir,
        grpc_addr,
        peers: BTreeMap::from([(1, grpc_addr.to_string())]),
    };
    let node = StoreNode::start_with_listener(cfg, grpc, bus.clone(), shutdown.clone()).await?;
    let edge = Edge::new(EdgeConfig {
        xds_addr: a.xds,
        stores: vec![format!("http://{grpc_addr}")],
        edge_id: "standalone".into(),
    })?;
    let xds = bind(a.xds, "xDS").await?;
    let api = bind(a.api, "API").await?;
    let admin = bind(a.admin, "admin").await?;

    let mut tasks = JoinSet::new();
    let n = node.clone();
    tasks.spawn(async move { n.stopped().await.map_err(anyhow::Error::from) });
    tasks.spawn(
        serve_api(api, node.clone(), shutdown.clone()).instrument(tracing::info_span!("api")),
    );
    let run = edge.run(xds, shutdown.clone());
    tasks.spawn(async move { run.await.map_err(anyhow::Error::from) });
    tasks.spawn(crate::telemetry::serve_admin(admin, edge, shutdown.clone()));
    let source = FileSource::new(a.cluster.clone(), a.dir.clone());
    let cluster = a.cluster.clone();
    let sd = shutdown.clone();
    tasks.spawn(async move {
        source
            .run(
                BusPublisher {
                    subject: flotilla_model::events_subject(&cluster),
                    bus,
                },
                sd,
            )
            .await
            .map_err(anyhow::Error::from)
    });

    println!(
        "flotilla standalone: watching {} as cluster {:?}",
        a.dir.display(),
        a.cluster
    );
    println!(
        "  xDS listening on {} (delta and state-of-the-world ADS)",
        a.xds
    );
    println!(
        "  API on http://{}/api/v1/resources, edge admin on http://{}/stats",
        a.api, a.admin
    );
    println!(
        "  Envoy bootstrap: flotilla bootstrap --gateway {}/NAMESPACE/NAME --xds {} > envoy.json && envoy -c envoy.json",
        a.cluster, a.xds
    );
    supervise(tasks, shutdown).await
}
