//! [`StoreNode`]: wires log storage, state machine, Raft, the gRPC server (raft + watch), the
//! leader loop and cluster formation, and exposes the read interface the API crate uses.

use crate::log_store::LogStore;
use crate::network::{NetworkFactory, RaftService, MAX_PAYLOAD_ENTRIES};
use crate::source::EventSource;
use crate::state::ReadState;
use crate::state_machine::{Shared, StateMachine};
use crate::types::{NodeId, Raft, RaftMetrics};
use crate::watch::WatchService;
use flotilla_net::{ClientSecurity, ListenStats, ServerSecurity};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Raft heartbeat. With the election timeout below, a dead leader is replaced in well under a
/// second.
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// Build a snapshot every this many entries. Entries are batches, so this is up to ~5M events
/// of log between snapshots; restart replays at most this many entries.
pub const SNAPSHOT_EVERY: u64 = 5000;
/// Snapshot transfer chunk: a few round trips per MiB-sized snapshot, each message far below
/// the message size limit.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// A replica that has known no leader for this long stops being ready and ends its watch
/// streams, so edges move to a replica that still takes changes. Longer than an election
/// (at most a second with the timeouts above), so a normal failover does not flap readiness.
pub const NO_LEADER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

const LOG_FILE: &str = "raft-log.redb";
/// How long [`StoreNode::stopped`] waits for openraft's background tasks to release the log.
const LOG_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a store node runs.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// Raft + watch gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// id -> "host:port" gRPC address of every node, this one included.
    pub peers: BTreeMap<u64, String>,
    /// Who may call the gRPC port (Raft: stores; watch: stores and edges) and its limits.
    pub server: ServerSecurity,
    /// How this node proves itself to its peers.
    pub client: ClientSecurity,
    /// The translator's switches (the rate limit service's address): every node of a store
    /// must have the same, as they are part of the translated output.
    pub translate: flotilla_translate::TranslateOptions,
}

impl StoreConfig {
    /// A node with open, plaintext ports (loopback dev and tests) and default limits.
    pub fn new(
        node_id: u64,
        data_dir: PathBuf,
        grpc_addr: SocketAddr,
        peers: BTreeMap<u64, String>,
    ) -> Self {
        Self {
            node_id,
            data_dir,
            grpc_addr,
            peers,
            server: ServerSecurity::default(),
            client: ClientSecurity::default(),
            translate: flotilla_translate::TranslateOptions::default(),
        }
    }
}

/// Why a store node could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("peers do not include this node ({0})")]
    NotAPeer(u64),
    #[error(transparent)]
    Identity(#[from] crate::identity::Error),
    #[error(transparent)]
    Log(#[from] crate::log_store::Error),
    #[error(transparent)]
    StateMachine(#[from] crate::state_machine::Error),
    #[error("raft log: {0}")]
    Storage(String),
    #[error("raft config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("task failed: {0}")]
    Task(String),
    #[error("critical task stopped: {0}")]
    Failed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A summary of the node's Raft state, for the API and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMetrics {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub is_leader: bool,
    /// "Leader", "Follower", "Candidate", "Learner", "Shutdown".
    pub state: String,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub revision: u64,
    pub last_seq: u64,
    pub ready: bool,
}

/// A running store node. Clone-able handle; everything stops when the `shutdown` token given
/// to [`StoreNode::start`] is cancelled.
#[derive(Clone)]
pub struct StoreNode {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    raft: Raft,
    shared: Arc<Shared>,
    ready: watch::Receiver<bool>,
    watch_service: WatchService,
    tasks: TaskTracker,
    failure: Mutex<Option<String>>,
    local_addr: SocketAddr,
    /// Alive while any clone of the log store is (Raft's core, replication tasks).
    log_db: std::sync::Weak<redb::Database>,
    network: NetworkFactory,
    /// gRPC calls refused for their credentials.
    denials: Arc<flotilla_net::Denials>,
    listen_stats: Arc<ListenStats>,
}

/// Opens the log, waiting up to [`LOG_CLOSE_WAIT`] for a previous instance in this process
/// (a restart in place) to finish closing it.
fn open_log(path: &std::path::Path) -> Result<LogStore> {
    let deadline = std::time::Instant::now() + LOG_CLOSE_WAIT;
    loop {
        match LogStore::open(path) {
            Err(crate::log_store::Error::Open {
                source: redb::DatabaseError::DatabaseAlreadyOpen,
                ..
            }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

fn raft_config() -> Result<Config> {
    Config {
        cluster_name: "flotilla".to_string(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Config(e.to_string()))
}

impl StoreNode {
    /// Starts a node listening on `cfg.grpc_addr`. For standalone mode, give one peer (this
    /// node) and an `Arc<`[`crate::EmbeddedBus`]`>` as the source.
    pub async fn start<S: EventSource>(
        cfg: StoreConfig,
        source: S,
        shutdown: CancellationToken,
    ) -> Result<StoreNode> {
        let listener = flotilla_net::listen::bind(cfg.grpc_addr, cfg.server.limits.backlog)
            .map_err(|source| Error::Bind {
                addr: cfg.grpc_addr,
                source,
            })?;
        Self::start_with_listener(cfg, listener, source, shutdown).await
    }

    /// Like [`StoreNode::start`] on an already bound listener (tests bind `127.0.0.1:0`).
    pub async fn start_with_listener<S: EventSource>(
        cfg: StoreConfig,
        listener: TcpListener,
        source: S,
        shutdown: CancellationToken,
    ) -> Result<StoreNode> {
        let span = tracing::info_span!("store", node = cfg.node_id);
        Self::start_inner(cfg, listener, source, shutdown)
            .instrument(span)
            .await
    }

    async fn start_inner<S: EventSource>(
        cfg: StoreConfig,
        listener: TcpListener,
        source: S,
        shutdown: CancellationToken,
    ) -> Result<StoreNode> {
        if !cfg.peers.contains_key(&cfg.node_id) {
            return Err(Error::NotAPeer(cfg.node_id));
        }
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.grpc_addr,
            source,
        })?;
        crate::fsutil::create_private_dir(&cfg.data_dir).map_err(|source| Error::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        let identity = crate::identity::load_or_create(&cfg.data_dir, cfg.node_id)?;

        // Opening the log and loading the snapshot (which re-translates everything) are
        // blocking and can take a while: keep them off the runtime workers.
        let dir = cfg.data_dir.clone();
        let options = cfg.translate.clone();
        let (mut log, sm) = tokio::task::spawn_blocking(move || -> Result<_> {
            let log = open_log(&dir.join(LOG_FILE))?;
            let sm = StateMachine::open_with(&dir, options)?;
            Ok((log, sm))
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        let start_committed = {
            use openraft::storage::RaftLogStorage;
            log.read_committed()
                .await
                .map_err(|e| Error::Storage(e.to_string()))?
                .map(|l| l.index)
        };
        let shared = sm.shared();
        let log_db = log.open_handle();

        let network = NetworkFactory::new(cfg.client.clone());
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(raft_config()?),
            network.clone(),
            log,
            sm,
        )
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;

        let (ready_tx, ready_rx) = watch::channel(false);
        let denials = Arc::new(flotilla_net::Denials::default());
        let watch_service = WatchService::new(
            shared.clone(),
            ready_rx.clone(),
            shutdown.clone(),
            cfg.server.auth.clone(),
            denials.clone(),
        );
        let tasks = TaskTracker::new();
        let listen_stats = Arc::new(ListenStats::default());
        let inner = Arc::new(Inner {
            denials: denials.clone(),
            listen_stats: listen_stats.clone(),
            node_id: cfg.node_id,
            raft: raft.clone(),
            shared: shared.clone(),
            ready: ready_rx,
            watch_service: watch_service.clone(),
            tasks: tasks.clone(),
            failure: Mutex::new(None),
            local_addr,
            log_db,
            network: network.clone(),
        });
        let node = StoreNode { inner };

        // gRPC server: raft transport + watch.
        {
            let node = node.clone();
            let shutdown = shutdown.clone();
            let router =
                flotilla_net::server::grpc_server(flotilla_net::server::MAX_STREAMS_PER_CONNECTION)
                    .add_service(
                        RaftService::new(
                            raft.clone(),
                            identity,
                            cfg.server.auth.clone(),
                            denials.clone(),
                        )
                        .into_server(),
                    )
                    .add_service(watch_service.into_server());
            let security = cfg.server.clone();
            let listen_stats = listen_stats.clone();
            tasks.spawn(
                async move {
                    let incoming = flotilla_net::server::accept(
                        listener,
                        &security,
                        listen_stats,
                        shutdown.clone(),
                    );
                    let res = router
                        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned())
                        .await;
                    if let Err(e) = res {
                        node.fail(format!("grpc server: {e}"), &shutdown);
                    }
                }
                .instrument(tracing::info_span!("grpc", addr = %local_addr)),
            );
        }

        // Readiness follows the Raft core: ready once the log is re-applied up to the committed
        // index read at start and while a leader is known; a core that stopped (a fatal error,
        // or a panic, which closes its metrics channel without a word) stops the node.
        {
            let node = node.clone();
            let shutdown = shutdown.clone();
            let metrics = raft.metrics();
            tasks.spawn(
                async move {
                    if let Some(why) =
                        follow_health(metrics, start_committed, ready_tx, shutdown.clone()).await
                    {
                        node.fail(why, &shutdown);
                    }
                }
                .instrument(tracing::info_span!("health")),
            );
        }

        // Leader loop.
        tasks.spawn(
            crate::leader::run(
                raft.clone(),
                shared.clone(),
                source,
                cfg.node_id,
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("leader_loop")),
        );

        // Shutdown: stop Raft once the token fires (the server stops on its own).
        {
            let raft = raft.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(
                async move {
                    shutdown.cancelled().await;
                    if let Err(e) = raft.shutdown().await {
                        tracing::warn!(error = %e, "raft shutdown");
                    }
                    tracing::info!("raft stopped");
                }
                .instrument(tracing::info_span!("shutdown")),
            );
        }
        // Cluster formation: the lowest id forms a pristine cluster of every peer, once every
        // peer answers and none belongs to a cluster yet (a wiped node 1 must not found a
        // second cluster next to the running one; it waits to be added back instead).
        let lowest = cfg.peers.keys().next().copied();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        if !initialized && lowest == Some(cfg.node_id) {
            tasks.spawn(
                form_cluster(
                    raft.clone(),
                    network,
                    cfg.node_id,
                    cfg.peers.clone(),
                    shutdown.clone(),
                )
                .instrument(tracing::info_span!("formation")),
            );
        } else if !initialized {
            tracing::info!("not part of a cluster yet: waiting to be added by the leader");
        }
        tasks.close();
        Ok(node)
    }

    fn fail(&self, msg: String, shutdown: &CancellationToken) {
        tracing::error!(error = %msg, "critical task failed; stopping node");
        *self.inner.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
        shutdown.cancel();
    }

    /// Waits until every task of this node has stopped (after the shutdown token fired, or a
    /// critical task failed, which cancels the token). `Err` if a critical task failed.
    pub async fn stopped(&self) -> Result<()> {
        self.inner.tasks.wait().await;
        // openraft's shutdown joins its core task, but replication and snapshot tasks may drop
        // their log readers a little later. The log file is locked until the last one goes:
        // wait for it, so that "stopped" means the data dir can be reopened.
        let deadline = tokio::time::Instant::now() + LOG_CLOSE_WAIT;
        while self.inner.log_db.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!("raft log still open after shutdown");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        match self
            .inner
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(msg) => Err(Error::Failed(msg)),
            None => Ok(()),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The address the gRPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The revision of the latest published state.
    pub fn revision(&self) -> u64 {
        self.inner.shared.load().revision()
    }

    /// The latest published state: immutable, consistent (its revision, counters and data
    /// belong together), and never blocks the state machine.
    pub fn state(&self) -> Arc<ReadState> {
        self.inner.shared.load()
    }

    /// A receiver that changes whenever the revision does.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ReadState>> {
        self.inner.shared.subscribe()
    }

    /// Ready: state restored (the log re-applied up to the committed index read at start),
    /// the Raft core running, and a leader known (or lost for less than [`NO_LEADER_GRACE`]).
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// `Ok` while ready; otherwise why not, in words for an operator.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if self.is_ready() {
            return Ok(());
        }
        if let Some(why) = self
            .inner
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(format!("stopping: {why}"));
        }
        let m = self.inner.raft.metrics().borrow().clone();
        Err(match (&m.running_state, m.current_leader) {
            (Err(e), _) => format!("the raft core stopped: {e}"),
            (Ok(()), None) => "no leader known (the cluster may have lost its quorum)".into(),
            (Ok(()), Some(_)) => "state is not restored yet".into(),
        })
    }

    /// Waits until [`StoreNode::is_ready`].
    pub async fn wait_ready(&self) {
        let mut r = self.inner.ready.clone();
        let _ = r.wait_for(|r| *r).await;
    }

    /// The current leader, as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        self.inner.raft.metrics().borrow().current_leader
    }

    pub fn metrics(&self) -> StoreMetrics {
        let st = self.state();
        let (revision, last_seq) = (st.revision(), st.last_seq());
        let m = self.inner.raft.metrics().borrow().clone();
        StoreMetrics {
            node_id: self.inner.node_id,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            state: format!("{:?}", m.state),
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            revision,
            last_seq,
            ready: self.is_ready(),
        }
    }

    /// openraft's own metrics.
    pub fn raft_metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The Raft handle (tests, admin operations).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The Raft transport's connection factory (membership changes reset what it knows).
    pub(crate) fn network(&self) -> &NetworkFactory {
        &self.inner.network
    }

    /// gRPC calls refused for their credentials (Raft and watch).
    pub fn denied_calls(&self) -> u64 {
        self.inner.denials.get()
    }

    /// The gRPC listener's counters.
    pub fn listen_counters(&self) -> flotilla_net::listen::ListenCounters {
        self.inner.listen_stats.snapshot()
    }

    /// Publishes computed statuses into the NATS KV bucket while this node leads (see
    /// [`crate::status`]), until `shutdown`. A task of its own: publishing never blocks apply.
    pub fn publish_statuses(
        &self,
        client: async_nats::Client,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(
            crate::status::run(
                self.inner.raft.clone(),
                self.subscribe(),
                client,
                self.inner.node_id,
                shutdown,
            )
            .instrument(tracing::info_span!(
                "status_publisher",
                node = self.inner.node_id
            )),
        )
    }

    /// The watch service, to host it on another server as well.
    pub fn watch_service(&self) -> WatchService {
        self.inner.watch_service.clone()
    }
}

/// How long one formation probe of a peer waits.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// Pause between formation rounds while some peer does not answer.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Forms a new cluster of `peers` once every other peer answers and none of them is part of a
/// cluster; gives up (and waits to be added like any new node) if one is.
async fn form_cluster(
    raft: Raft,
    network: NetworkFactory,
    me: NodeId,
    peers: BTreeMap<u64, String>,
    shutdown: CancellationToken,
) {
    let mut waiting_logged = false;
    loop {
        if raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let mut missing = Vec::new();
        for (id, addr) in peers.iter().filter(|(id, _)| **id != me) {
            let status = match network.client(*id, addr) {
                Ok(mut c) => {
                    crate::network::peer_status(&mut c, network.security(), *id, PROBE_TIMEOUT)
                        .await
                }
                Err(e) => Err(e),
            };
            match status {
                Ok(s) if s.initialized => {
                    tracing::warn!(
                        peer = id,
                        "a peer already belongs to a cluster: not forming a new one; this node \
                         waits to be added (flotilla ctl add-learner / promote)"
                    );
                    return;
                }
                Ok(_) => {}
                Err(e) => missing.push(format!("{id} ({e})")),
            }
        }
        if missing.is_empty() {
            let members: BTreeMap<NodeId, BasicNode> = peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            tracing::info!(?members, "forming the cluster");
            if let Err(e) = raft.initialize(members).await {
                // NotAllowed: initialized meanwhile (added by a leader); fine.
                tracing::info!(error = %e, "initialize skipped");
            }
            return;
        }
        if !waiting_logged {
            tracing::info!(
                ?missing,
                "waiting for every peer to answer before forming the cluster"
            );
            waiting_logged = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Follows the Raft core's metrics and keeps `ready` true exactly while the node should serve:
/// restored up to `start_committed`, the core running, a leader known (or lost for less than
/// [`NO_LEADER_GRACE`]). Returns why the node must stop (`None`: it stops because `shutdown`
/// fired). A core that panicked drops its metrics sender without reporting an error: the
/// closed channel is a failure, not an end.
pub(crate) async fn follow_health(
    mut metrics: watch::Receiver<RaftMetrics>,
    start_committed: Option<u64>,
    ready: watch::Sender<bool>,
    shutdown: CancellationToken,
) -> Option<String> {
    let mut restored = false;
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        {
            let m = metrics.borrow_and_update();
            if let Err(e) = &m.running_state {
                ready.send_replace(false);
                return (!shutdown.is_cancelled()).then(|| format!("raft stopped: {e}"));
            }
            let applied = m.last_applied.map(|l| l.index);
            if !restored && applied >= start_committed {
                tracing::info!(?applied, ?start_committed, "state restored");
                restored = true;
            }
            match (m.current_leader, leaderless_since) {
                (Some(_), _) => leaderless_since = None,
                (None, None) => leaderless_since = Some(tokio::time::Instant::now()),
                (None, Some(_)) => {}
            }
        }
        let leader_ok = leaderless_since.is_none_or(|t| t.elapsed() < NO_LEADER_GRACE);
        let now = restored && leader_ok;
        if *ready.borrow() != now {
            tracing::info!(ready = now, restored, leader_ok, "readiness changed");
            ready.send_replace(now);
        }
        let recheck = async {
            match leaderless_since {
                Some(t) if leader_ok => tokio::time::sleep_until(t + NO_LEADER_GRACE).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            r = metrics.changed() => if r.is_err() {
                ready.send_replace(false);
                return (!shutdown.is_cancelled())
                    .then(|| "the raft core stopped without reporting why (it panicked)".to_string());
            },
            _ = recheck => {}
            _ = shutdown.cancelled() => {
                ready.send_replace(false);
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
