//! Assembles the long-running components from the library crates: one function per
//! subcommand, one cancellation token for all, and a non-zero exit when a critical task dies.

use crate::api_auth::ApiAuth;
use crate::cli::{Command, EdgeArgs, IngestArgs, NatsArgs, StandaloneArgs, StoreArgs};
use crate::serve::{
    bind, client_facing, limits, load_tls, main_limit, plain, secured, supervise,
    ADMIN_CONNECTIONS, API_CONNECTIONS, STORE_GRPC_CONNECTIONS,
};
use anyhow::{anyhow, bail, Context, Result};
use flotilla_ingest::{FileSource, NatsPublisher, Publisher, Refusals};
use flotilla_model::ResourceEvent;
use flotilla_net::{ClientAuth, PeerAuth, ProxyAuth, ProxyKey, Role, ServerSecurity, Tls};
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
    // Thousands of connections, log and data files: never fail at the default 1,024.
    let nofile = flotilla_net::limits::raise_nofile();
    info!(nofile, "open file limit");
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
            Command::Ratelimit(a) => crate::ratelimit_cmd::run(a, shutdown).await,
            Command::Bootstrap(_)
            | Command::Translate(_)
            | Command::Ctl(_)
            | Command::Token(_)
            | Command::Certs(_)
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

/// Runs an edge (xDS on `xds`) and its admin server (on `admin`) as tasks of `tasks`.
fn spawn_edge(
    tasks: &mut JoinSet<Result<()>>,
    edge: Edge,
    xds: TcpListener,
    admin: TcpListener,
    admin_security: ServerSecurity,
    shutdown: &CancellationToken,
) {
    let run = edge.run(xds, shutdown.clone());
    tasks.spawn(async move { run.await.map_err(anyhow::Error::from) });
    tasks.spawn(crate::telemetry::serve_admin(
        admin,
        admin_security,
        edge,
        shutdown.clone(),
    ));
}

/// How a part that calls stores dials them.
fn store_client(tls: Option<&Tls>) -> flotilla_net::ClientSecurity {
    flotilla_net::ClientSecurity {
        token: None,
        connector: match tls {
            Some(t) => flotilla_net::Connector::tls(t.clone(), Some(Role::Store)),
            None => flotilla_net::Connector::plain(),
        },
    }
}

fn proxy_auth(key: Option<&std::path::Path>, certs: bool) -> Result<ProxyAuth> {
    Ok(ProxyAuth {
        key: key.map(ProxyKey::load).transpose()?,
        certs,
    })
}

async fn ingest(a: IngestArgs, shutdown: CancellationToken) -> Result<()> {
    flotilla_ingest::validate_cluster(&a.cluster)?;
    let (client, refusals) = connect_nats(&a.nats, &shutdown).await?;
    // Status write-back reads the store's statuses through the same connection.
    let nats = client.clone();
    let js = async_nats::jetstream::new(client);
    // An agent's user may not use the JetStream API (see `flotilla nats-config`): then the
    // stores create the stream.
    flotilla_ingest::nats::ensure_stream_if_allowed(&js, &refusals).await?;
    let publisher = NatsPublisher::new(js).with_refusals(refusals);
    if a.kubernetes {
        let config = a.kube.source_config();
        let client = flotilla_ingest::kube::client(&config).await?;
        info!(cluster = %a.cluster, "ingesting from the Kubernetes API");
        let source = flotilla_ingest::KubeSource::new(a.cluster.clone(), client);
        // Status write-back beside the source, on the same client and shutdown: the
        // replica holding the cluster's Lease writes the store's statuses to Kubernetes.
        let status = tokio::spawn(
            flotilla_ingest::kube::status::run(
                source.client(),
                nats,
                a.cluster.clone(),
                a.kube.lease(),
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("status_writeback")),
        );
        let ran = source.run(publisher, shutdown.clone()).await;
        // The source ended (shutdown or failure): the writer steps down and releases the
        // Lease before the agent exits.
        shutdown.cancel();
        match status.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "status write-back failed"),
            Err(e) => tracing::error!(error = %e, "status write-back panicked"),
        }
        ran?;
        return Ok(());
    }
    let source = FileSource::new(a.cluster.clone(), a.dir.clone());
    info!(cluster = %a.cluster, dir = %a.dir.display(), "ingesting files");
    source.run(publisher, shutdown).await?;
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
    let auth = ApiAuth::load(&a.api_auth, a.api)?;
    let (client, _refusals) = connect_nats(&a.nats, &shutdown).await?;
    let source = NatsSource::new(client.clone(), flotilla_ingest::nats::STREAM)
        .await
        .with_context(|| format!("using the event stream on NATS at {}", a.nats.nats))?;
    let tls = load_tls(&a.listen, &[Role::Store], &shutdown)?;
    let grpc = bind(a.grpc, "store gRPC (Raft, watch)", &a.listen, tls.is_some())?;
    let api = bind(a.api, "API", &a.listen, tls.is_some())?;
    let grpc_limit = main_limit(&a.listen, API_CONNECTIONS)?.min(STORE_GRPC_CONNECTIONS);
    let mut cfg = StoreConfig::new(a.id, a.data_dir.clone(), a.grpc, peers);
    // With certificates, only stores speak Raft and only edges and stores watch; without,
    // the port is open to whoever reaches it (loopback, or --insecure).
    let peer_auth = if tls.is_some() {
        PeerAuth::Tls
    } else {
        PeerAuth::Open
    };
    cfg.server = secured(
        tls.as_ref(),
        ClientAuth::Required,
        peer_auth,
        limits(&a.listen, grpc_limit),
    );
    cfg.client = store_client(tls.as_ref());
    cfg.translate.rate_limit_service = a.ratelimit_service.clone();
    cfg.translate.rate_limit_service_ca = read_service_ca(a.ratelimit_service_ca.as_deref())?;
    cfg.translate.rate_limit_fail_closed = a.ratelimit_fail_closed;
    let node = StoreNode::start_with_listener(cfg, grpc, source, shutdown.clone()).await?;
    info!(node = a.id, grpc = %a.grpc, api = %a.api, "store node started");
    // While this node leads, the computed statuses go to the NATS KV bucket the agents
    // write back from; the task ends with `shutdown`.
    node.publish_statuses(client, shutdown.clone());
    let api_security = client_facing(tls.as_ref(), limits(&a.listen, API_CONNECTIONS));
    let mut tasks = JoinSet::new();
    if let Some(reload) = auth.reloader(shutdown.clone()) {
        tasks.spawn(reload.instrument(tracing::info_span!("api-tokens")));
    }
    let api_auth = if tls.is_some() {
        auth.auth.with_client_certs()
    } else {
        auth.auth
    };
    tasks.spawn(
        serve_api(api, api_security, node.clone(), api_auth, shutdown.clone())
            .instrument(tracing::info_span!("api")),
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
        let l = self.0.listen_counters();
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
                "grpcCallsDenied": self.0.denied_calls(),
                "grpcConnections": l.active,
                "grpcHandshakesFailed": l.handshake_failed + l.handshake_timeouts + l.evicted,
                "grpcAcceptErrors": l.accept_errors,
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
    security: ServerSecurity,
    node: StoreNode,
    auth: flotilla_api::Auth,
    shutdown: CancellationToken,
) -> Result<()> {
    let reader = Arc::new(NodeReader(node));
    let app = flotilla_api::router(reader.clone(), Some(reader), auth);
    let listener = flotilla_net::server::HttpListener::new(
        listener,
        &security,
        Arc::new(flotilla_net::ListenStats::default()),
        shutdown.clone(),
    )?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<flotilla_net::ConnInfo>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .context("API server")
}

async fn edge(a: EdgeArgs, shutdown: CancellationToken) -> Result<()> {
    let stores = a.stores.iter().map(|s| with_scheme(s)).collect();
    let tls = load_tls(&a.listen, &[Role::Edge], &shutdown)?;
    let xds = bind(a.xds, "xDS", &a.listen, tls.is_some())?;
    let admin = bind(a.admin, "admin", &a.listen, tls.is_some())?;
    let mut cfg = EdgeConfig::new(a.xds, stores, a.id.clone());
    // Proxies may present a certificate or a token: the certificate is optional at the TLS
    // layer and the gateway check decides.
    cfg.server = client_facing(
        tls.as_ref(),
        limits(&a.listen, main_limit(&a.listen, ADMIN_CONNECTIONS)?),
    );
    cfg.client = store_client(tls.as_ref());
    cfg.proxy_auth = proxy_auth(a.proxy_token_key.as_deref(), tls.is_some())?;
    warn_open_proxies(&cfg.proxy_auth, a.xds);
    let edge = Edge::new(cfg)?;
    info!(xds = %a.xds, admin = %a.admin, "edge started");
    let mut tasks = JoinSet::new();
    spawn_edge(
        &mut tasks,
        edge,
        xds,
        admin,
        client_facing(tls.as_ref(), limits(&a.listen, ADMIN_CONNECTIONS)),
        &shutdown,
    );
    supervise(tasks, shutdown).await
}

/// Without proxy credentials any client may name any gateway: fine for a dev loop on
/// loopback, said once at start.
fn warn_open_proxies(auth: &ProxyAuth, addr: SocketAddr) {
    if auth.open() {
        tracing::warn!(
            %addr,
            "proxies are not authenticated (no --proxy-token-key, no TLS): any client of the \
             xDS port receives any gateway it names, private keys included"
        );
    }
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
    let auth = ApiAuth::load(&a.api_auth, a.api)?;
    let (_tmp, data_dir) = match &a.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::tempdir().context("creating a temporary data dir")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let bus = Arc::new(EmbeddedBus::new());
    // The one-node store's port serves only this process's edge: other local users, who can
    // reach loopback ports too, are kept out by a secret that never leaves the process.
    let internal = flotilla_net::server::ClientSecurity {
        token: Some(flotilla_net::auth::random_secret().into()),
        ..Default::default()
    };
    // Certificates serve proxies and API clients; the internal port stays plaintext on
    // loopback, behind the in-process secret.
    let tls = load_tls(&a.listen, &[Role::Edge, Role::Store], &shutdown)?;
    let internal_addr = if a.grpc.ip().is_loopback() {
        a.grpc
    } else {
        bail!(
            "--grpc {}: the standalone store's internal port must be on loopback",
            a.grpc
        )
    };
    let grpc = bind(internal_addr, "internal store gRPC", &a.listen, false)?;
    let grpc_addr = grpc.local_addr()?;
    let xds = bind(a.xds, "xDS", &a.listen, tls.is_some())?;
    let api = bind(a.api, "API", &a.listen, tls.is_some())?;
    let admin = bind(a.admin, "admin", &a.listen, tls.is_some())?;
    let mut cfg = StoreConfig::new(
        1,
        data_dir,
        grpc_addr,
        BTreeMap::from([(1, grpc_addr.to_string())]),
    );
    cfg.server = plain(
        PeerAuth::Token(internal.token.clone().unwrap_or_default()),
        limits(&a.listen, 64),
    );
    cfg.client = internal.clone();
    cfg.translate.rate_limit_fail_closed = a.ratelimit_fail_closed;
    // The rate limit service: embedded, unless --ratelimit-service names others.
    let embedded_ratelimit = if a.ratelimit_service.is_empty() {
        let l = bind(a.ratelimit, "rate limit", &a.listen, false)?;
        let mut told = l.local_addr()?;
        if told.ip().is_unspecified() {
            told.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        cfg.translate.rate_limit_service = vec![told.to_string()];
        Some((l, told))
    } else {
        cfg.translate.rate_limit_service = a.ratelimit_service.clone();
        cfg.translate.rate_limit_service_ca = read_service_ca(a.ratelimit_service_ca.as_deref())?;
        None
    };
    let node = StoreNode::start_with_listener(cfg, grpc, bus.clone(), shutdown.clone()).await?;
    let mut edge_cfg = EdgeConfig::new(a.xds, vec![format!("http://{grpc_addr}")], "standalone");
    edge_cfg.server = client_facing(
        tls.as_ref(),
        limits(
            &a.listen,
            main_limit(&a.listen, API_CONNECTIONS + ADMIN_CONNECTIONS + 64)?,
        ),
    );
    edge_cfg.client = internal;
    edge_cfg.proxy_auth = proxy_auth(a.proxy_token_key.as_deref(), tls.is_some())?;
    warn_open_proxies(&edge_cfg.proxy_auth, a.xds);
    let edge = Edge::new(edge_cfg)?;

    let mut tasks = JoinSet::new();
    let n = node.clone();
    tasks.spawn(async move { n.stopped().await.map_err(anyhow::Error::from) });
    if let Some(reload) = auth.reloader(shutdown.clone()) {
        tasks.spawn(reload.instrument(tracing::info_span!("api-tokens")));
    }
    let auth_banner = auth.describe();
    let api_auth = if tls.is_some() {
        auth.auth.with_client_certs()
    } else {
        auth.auth
    };
    tasks.spawn(
        serve_api(
            api,
            client_facing(tls.as_ref(), limits(&a.listen, API_CONNECTIONS)),
            node.clone(),
            api_auth,
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("api")),
    );
    spawn_edge(
        &mut tasks,
        edge,
        xds,
        admin,
        client_facing(tls.as_ref(), limits(&a.listen, ADMIN_CONNECTIONS)),
        &shutdown,
    );
    let ratelimit_banner = match embedded_ratelimit {
        Some((listener, addr)) => {
            crate::ratelimit_cmd::spawn_embedded(
                &mut tasks,
                listener,
                a.ratelimit_redis.as_deref(),
                &a.listen,
                node.subscribe(),
                &shutdown,
            )?;
            format!("embedded on {addr}")
        }
        None => a.ratelimit_service.join(","),
    };
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
    println!("  API authentication: {auth_banner}");
    println!("  rate limit service: {ratelimit_banner}");
    println!(
        "  Envoy bootstrap: flotilla bootstrap --gateway {}/NAMESPACE/NAME --xds {} > envoy.json && envoy -c envoy.json",
        a.cluster, a.xds
    );
    supervise(tasks, shutdown).await
}

/// The rate limit services' CA bundle (`--ratelimit-service-ca`), checked before any
/// translation uses it.
fn read_service_ca(path: Option<&std::path::Path>) -> Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("--ratelimit-service-ca {}", path.display()))?;
    let options = flotilla_translate::TranslateOptions {
        rate_limit_service_ca: Some(pem.clone()),
        ..Default::default()
    };
    options
        .check()
        .map_err(|e| anyhow!("--ratelimit-service-ca {}: {e}", path.display()))?;
    Ok(Some(pem))
}
