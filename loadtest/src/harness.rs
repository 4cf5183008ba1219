//! The harness: starts and owns the control plane's processes (nats-server, stores, edges,
//! agents, standalone, real Envoys), the simulated proxies, the churn sinks, and answers the
//! questions every run asks (is it ready, what should the proxies hold, do they).

use crate::api::{Gateways, Http};
use crate::decode::{DecodeCache, ResType};
use crate::envoy::{self, Held};
use crate::fixtures::World;
use crate::intern::Interner;
use crate::procs::{free_port, Proc};
use crate::proxy::{self, NackMode, Protocol, ProxySpec, Shared};
use crate::recorder::Recorder;
use crate::ui::Ui;
use anyhow::{anyhow, bail, Context, Result};
use flotilla_model::{EventBody, ResourceEvent};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The event stream and its subjects (crates/ingest/src/nats.rs).
pub const STREAM: &str = "FLOTILLA_EVENTS";
pub const SUBJECT_PREFIX: &str = "flotilla.events";
/// JetStream duplicate window of the stream (same as the ingest side).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How often processes are sampled in /proc and checked for crashes.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// A process that died on its own is restarted after this, as a supervisor would, doubling
/// with each further crash of the same process up to [`CRASH_RESTART_MAX`] (a crash loop
/// must not eat the machine).
const CRASH_RESTART_AFTER: Duration = Duration::from_secs(1);
const CRASH_RESTART_MAX: Duration = Duration::from_secs(8);
/// Mismatches listed verbatim in a check's detail.
const MAX_LISTED: usize = 8;

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Bins {
    pub flotilla: PathBuf,
    pub nats_server: PathBuf,
    pub envoy: Option<PathBuf>,
}

/// The multi-process plane: nats-server, three stores, edges, one agent per cluster.
#[derive(Clone, Debug, Default)]
pub struct Multi {
    pub nats: usize,
    pub nats_url: String,
    pub nats_monitor: u16,
    pub stores: Vec<usize>,
    pub store_api: Vec<String>,
    pub edges: Vec<usize>,
    pub edge_xds: Vec<String>,
    pub edge_admin: Vec<String>,
    /// (cluster index, process index)
    pub agents: Vec<(usize, usize)>,
    pub clusters: Vec<usize>,
}

/// One `flotilla standalone`.
#[derive(Clone, Debug, Default)]
pub struct Solo {
    pub proc: usize,
    pub api: String,
    pub xds: String,
    /// Its edge's admin address (`/stats`).
    pub admin: String,
    pub cluster: usize,
}

/// One simulated proxy to start.
#[derive(Clone, Debug)]
pub struct ProxyPlan {
    pub gateway: u32,
    pub protocol: Protocol,
    pub nack: NackMode,
    /// Edges to use, in order (default: the plane's edges).
    pub edges: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct RealEnvoy {
    pub proc: usize,
    pub gateway: u32,
    pub admin: u16,
}

/// Publishes events to JetStream exactly as an ingest agent does.
pub struct NatsSink {
    js: async_nats::jetstream::Context,
    run_id: String,
    next: AtomicU64,
}

impl NatsSink {
    pub async fn connect(url: &str, seed: u64) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.to_string(),
            subjects: vec![format!("{SUBJECT_PREFIX}.>")],
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("ensuring stream {STREAM}: {e}"))?;
        Ok(Self {
            js,
            run_id: format!("loadtest-{seed:x}-{}", std::process::id()),
            next: AtomicU64::new(0),
        })
    }

    pub fn source(&self) -> &str {
        &self.run_id
    }

    /// Publishes raw bytes with a fresh `Nats-Msg-Id`; waits for the PubAck.
    pub async fn publish_bytes(&self, cluster: &str, payload: Vec<u8>) -> Result<u64> {
        let id = format!(
            "{}-{}",
            self.run_id,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let ack = self
            .js
            .send_publish(
                format!("{SUBJECT_PREFIX}.{cluster}"),
                async_nats::jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(id),
            )
            .await
            .map_err(|e| anyhow!("publish to {cluster}: {e}"))?
            .await
            .map_err(|e| anyhow!("PubAck for {cluster}: {e}"))?;
        Ok(ack.sequence)
    }

    pub async fn publish(&self, ev: &ResourceEvent) -> Result<u64> {
        self.publish_bytes(&ev.cluster, serde_json::to_vec(ev)?)
            .await
    }
}

pub struct Harness {
    pub bins: Bins,
    pub work: PathBuf,
    pub logs: PathBuf,
    pub seed: u64,
    pub procs: Arc<Mutex<Vec<Proc>>>,
    pub world: Arc<Mutex<World>>,
    pub multi: Option<Multi>,
    pub solo: Option<Solo>,
    pub envoys: Vec<RealEnvoy>,
    pub recorder: Option<Arc<Recorder>>,
    pub cache: Arc<DecodeCache>,
    pub http: Http,
    pub ui: Ui,
    pub nats: Option<Arc<NatsSink>>,
    /// Clusters whose churn goes to NATS instead of files.
    pub nats_clusters: Vec<usize>,
    pub started: Instant,
    proxies_stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    pub restarts: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Recovery trackers of injected faults.
    pub trackers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// First delta proxy of each gateway (for the Envoy comparison).
    pub delta_proxy_of: BTreeMap<u32, u32>,
    pub proxy_protocols: Vec<Protocol>,
    /// The edges' proxy token key (a file for the processes, the key for the simulated
    /// proxies): every proxy proves its gateway, as in production.
    pub proxy_key_file: PathBuf,
    pub proxy_key: flotilla_net::ProxyKey,
    /// What each intruder fault got: refused, unreachable, or (a violation) served.
    pub intruders: Arc<Mutex<Vec<crate::faults::Intrusion>>>,
    /// Where the parts' certificates are, when they run with TLS ([`Harness::enable_tls`]).
    pub certs: Option<PathBuf>,
    /// How simulated proxies (and intruders) dial the edges.
    pub connector: flotilla_net::Connector,
}

/// Edge names the certificates cover (`edge1`.. and standalone's edge).
const MAX_EDGES: u32 = 8;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Harness {
    /// Runs every Flotilla part of this run with certificates from `flotilla certs`: stores
    /// speak Raft and serve the watch over mTLS, edges serve xDS and the API is HTTPS.
    /// Simulated proxies connect over TLS and prove their gateway with its token.
    pub fn enable_tls(&mut self) -> Result<()> {
        let certs = self.work.join("certs");
        let edges: Vec<String> = (1..=MAX_EDGES)
            .map(|e| format!("edge{e}"))
            .chain(["standalone".to_string()])
            .collect();
        let out = std::process::Command::new(&self.bins.flotilla)
            .args(["certs", "--out"])
            .arg(&certs)
            .args([
                "--stores",
                "1,2,3",
                "--edges",
                &edges.join(","),
                "--readers",
                "harness",
            ])
            .output()
            .context("running flotilla certs")?;
        if !out.status.success() {
            bail!(
                "flotilla certs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let read = |f: &str| std::fs::read(certs.join(f)).with_context(|| format!("reading {f}"));
        let ca = read("ca.pem")?;
        let identity = [read("reader-harness.pem")?, read("reader-harness.key")?].concat();
        self.http = Http::with_ca(&ca, &identity).map_err(|e| anyhow!("HTTPS client: {e}"))?;
        // The proxies' client certificate names no gateway: their token does.
        let tls = flotilla_net::Tls::load(flotilla_net::TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join("reader-harness.pem"),
            key: certs.join("reader-harness.key"),
        })?;
        self.connector = flotilla_net::Connector::tls(tls, Some(flotilla_net::Role::Edge));
        self.certs = Some(certs);
        Ok(())
    }

    /// `--tls-*` flags for the part whose certificate is `stem` (none without TLS).
    fn tls_args(&self, stem: &str) -> Vec<String> {
        match &self.certs {
            Some(c) => vec![
                "--tls-ca".into(),
                c.join("ca.pem").display().to_string(),
                "--tls-cert".into(),
                c.join(format!("{stem}.pem")).display().to_string(),
                "--tls-key".into(),
                c.join(format!("{stem}.key")).display().to_string(),
            ],
            None => Vec::new(),
        }
    }

    pub fn new(bins: Bins, work: PathBuf, seed: u64, ui: Ui) -> Result<Self> {
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let proxy_key_file = work.join("proxy-token.key");
        std::fs::write(&proxy_key_file, flotilla_net::auth::random_secret())
            .with_context(|| format!("writing {}", proxy_key_file.display()))?;
        let proxy_key = flotilla_net::ProxyKey::load(&proxy_key_file)?;
        Ok(Self {
            proxy_key_file,
            proxy_key,
            intruders: Arc::default(),
            certs: None,
            connector: flotilla_net::Connector::plain(),
            bins,
            logs,
            work,
            seed,
            procs: Arc::default(),
            world: Arc::default(),
            multi: None,
            solo: None,
            envoys: Vec::new(),
            recorder: None,
            cache: Arc::new(DecodeCache::new(Arc::new(Interner::new()))),
            http: Http::new().map_err(|e| anyhow!("HTTP client: {e}"))?,
            ui,
            nats: None,
            nats_clusters: Vec::new(),
            started: Instant::now(),
            proxies_stop: CancellationToken::new(),
            tasks: Vec::new(),
            restarts: Arc::default(),
            trackers: Arc::default(),
            delta_proxy_of: BTreeMap::new(),
            proxy_protocols: Vec::new(),
        })
    }

    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    pub fn recorder(&self) -> Result<&Arc<Recorder>> {
        self.recorder
            .as_ref()
            .ok_or_else(|| anyhow!("no proxies started"))
    }

    fn add_proc(
        &self,
        name: &str,
        role: &'static str,
        program: &Path,
        args: Vec<String>,
    ) -> Result<usize> {
        let mut p = Proc::new(name, role, program, args, &self.logs);
        p.start()?;
        let mut procs = lock(&self.procs);
        procs.push(p);
        Ok(procs.len() - 1)
    }

    /// Adds a cluster to the world with its files under `work/clusters/<name>`.
    pub fn add_cluster(
        &self,
        name: &str,
        gateways: u32,
        services: u32,
        routes: u32,
    ) -> Result<usize> {
        let dir = self.work.join("clusters").join(name);
        std::fs::create_dir_all(&dir)?;
        let mut err = None;
        let mut port = || match free_port() {
            Ok(p) => p,
            Err(e) => {
                err = Some(e);
                0
            }
        };
        let ci = lock(&self.world).add_cluster(name, dir, gateways, services, routes, &mut port);
        if let Some(e) = err {
            return Err(e.into());
        }
        Ok(ci)
    }

    /// Starts nats-server, three stores, `edges` edges and (unless `via_nats`) one file agent
    /// per cluster of `clusters`, whose files must already be written.
    pub async fn start_multi(
        &mut self,
        clusters: &[usize],
        edges: u32,
        via_nats: bool,
    ) -> Result<()> {
        let port = |_: ()| free_port();
        let nats_port = port(())?;
        let nats_monitor = port(())?;
        let nats_dir = self.work.join("nats");
        std::fs::create_dir_all(&nats_dir)?;
        let nats = self.add_proc(
            "nats",
            "nats-server",
            &self.bins.nats_server.clone(),
            vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                nats_port.to_string(),
                "-js".into(),
                "-sd".into(),
                nats_dir.display().to_string(),
                "-m".into(),
                nats_monitor.to_string(),
            ],
        )?;
        wait_tcp(nats_port, Duration::from_secs(15)).await?;
        let nats_url = format!("nats://127.0.0.1:{nats_port}");
        let grpc: Vec<u16> = (0..3).map(|_| port(())).collect::<Result<_, _>>()?;
        let api: Vec<u16> = (0..3).map(|_| port(())).collect::<Result<_, _>>()?;
        let peers: Vec<String> = grpc
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect();
        let flotilla = self.bins.flotilla.clone();
        let mut stores = Vec::new();
        for i in 0..3 {
            let data = self.work.join(format!("store{}", i + 1));
            let tls = self.tls_args(&format!("store-{}", i + 1));
            stores.push(
                self.add_proc(
                    &format!("store{}", i + 1),
                    "store",
                    &flotilla,
                    [
                        "store".into(),
                        "--id".into(),
                        (i + 1).to_string(),
                        "--data-dir".into(),
                        data.display().to_string(),
                        "--grpc".into(),
                        format!("127.0.0.1:{}", grpc[i]),
                        "--api".into(),
                        format!("127.0.0.1:{}", api[i]),
                        "--peers".into(),
                        peers.join(","),
                        "--nats".into(),
                        nats_url.clone(),
                    ]
                    .into_iter()
                    .chain(tls)
                    .collect(),
                )?,
            );
        }
        let store_grpc: Vec<String> = grpc.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut m = Multi {
            nats,
            nats_url: nats_url.clone(),
            nats_monitor,
            stores,
            store_api: api.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            clusters: clusters.to_vec(),
            ..Multi::default()
        };
        for e in 0..edges {
            let xds = port(())?;
            let admin = port(())?;
            // Each edge lists the stores starting at a different one (spread the watch load).
            let mut list = store_grpc.clone();
            list.rotate_left(e as usize % 3);
            if e >= MAX_EDGES && self.certs.is_some() {
                bail!("TLS runs cover at most {MAX_EDGES} edges");
            }
            let tls = self.tls_args(&format!("edge-edge{}", e + 1));
            m.edges.push(
                self.add_proc(
                    &format!("edge{}", e + 1),
                    "edge",
                    &flotilla,
                    [
                        "edge".into(),
                        "--id".into(),
                        format!("edge{}", e + 1),
                        "--stores".into(),
                        list.join(","),
                        "--xds".into(),
                        format!("127.0.0.1:{xds}"),
                        "--admin".into(),
                        format!("127.0.0.1:{admin}"),
                        "--proxy-token-key".into(),
                        self.proxy_key_file.display().to_string(),
                    ]
                    .into_iter()
                    .chain(tls)
                    .collect(),
                )?,
            );
            m.edge_xds.push(format!("127.0.0.1:{xds}"));
            m.edge_admin.push(format!("127.0.0.1:{admin}"));
        }
        if via_nats {
            let sink = NatsSink::connect(&nats_url, self.seed).await?;
            self.nats = Some(Arc::new(sink));
            self.nats_clusters = clusters.to_vec();
        } else {
            for &ci in clusters {
                let (name, dir) = {
                    let w = lock(&self.world);
                    (w.clusters[ci].name.clone(), w.clusters[ci].dir.clone())
                };
                let p = self.add_proc(
                    &format!("agent-{name}"),
                    "agent",
                    &flotilla,
                    vec![
                        "ingest".into(),
                        "--cluster".into(),
                        name,
                        "--dir".into(),
                        dir.display().to_string(),
                        "--nats".into(),
                        nats_url.clone(),
                    ],
                )?;
                m.agents.push((ci, p));
            }
        }
        self.multi = Some(m);
        Ok(())
    }

    /// A NATS client for garbage/churn even when agents publish the files.
    pub async fn ensure_nats_sink(&mut self) -> Result<Arc<NatsSink>> {
        if let Some(s) = &self.nats {
            return Ok(s.clone());
        }
        let url = self
            .multi
            .as_ref()
            .map(|m| m.nats_url.clone())
            .ok_or_else(|| anyhow!("no NATS in this run"))?;
        let s = Arc::new(NatsSink::connect(&url, self.seed).await?);
        self.nats = Some(s.clone());
        Ok(s)
    }

    /// Starts `flotilla standalone` on cluster `cluster`'s directory, with a data dir.
    pub fn start_solo(&mut self, cluster: usize) -> Result<()> {
        let (name, dir) = {
            let w = lock(&self.world);
            (
                w.clusters[cluster].name.clone(),
                w.clusters[cluster].dir.clone(),
            )
        };
        let xds = free_port()?;
        let api = free_port()?;
        let admin = free_port()?;
        let data = self.work.join("standalone-data");
        let flotilla = self.bins.flotilla.clone();
        let tls = self.tls_args("edge-standalone");
        let proc = self.add_proc(
            "standalone",
            "standalone",
            &flotilla,
            [
                "standalone".into(),
                "--dir".into(),
                dir.display().to_string(),
                "--cluster".into(),
                name,
                "--xds".into(),
                format!("127.0.0.1:{xds}"),
                "--api".into(),
                format!("127.0.0.1:{api}"),
                "--admin".into(),
                format!("127.0.0.1:{admin}"),
                "--data-dir".into(),
                data.display().to_string(),
                "--proxy-token-key".into(),
                self.proxy_key_file.display().to_string(),
            ]
            .into_iter()
            .chain(tls)
            .collect(),
        )?;
        self.solo = Some(Solo {
            proc,
            api: format!("127.0.0.1:{api}"),
            xds: format!("127.0.0.1:{xds}"),
            admin: format!("127.0.0.1:{admin}"),
            cluster,
        });
        Ok(())
    }

    /// Every API (store nodes, standalone) answers /readyz, a leader is known, edges synced.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.ready_problem().await {
                None => return Ok(()),
                Some(p) => last = p,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "not ready after {timeout:?}: {last}\n{}",
            self.log_tails(15)
        )
    }

    async fn ready_problem(&self) -> Option<String> {
        if let Some(m) = &self.multi {
            for api in &m.store_api {
                if self.http.status(&self.http.url(api, "/readyz")).await != 200 {
                    return Some(format!("store {api} not ready"));
                }
            }
            if self.leader().await.is_none() {
                return Some("no Raft leader".into());
            }
            for admin in &m.edge_admin {
                match self.http.json(&self.http.url(admin, "/stats")).await {
                    Ok(v) if v["synced"].as_bool() == Some(true) => {}
                    Ok(_) => return Some(format!("edge {admin} not synced")),
                    Err(e) => return Some(e),
                }
            }
        }
        if let Some(s) = &self.solo {
            if self.http.status(&self.http.url(&s.api, "/readyz")).await != 200 {
                return Some("standalone not ready".into());
            }
        }
        None
    }

    /// Index (0-based) of the Raft leader, as a running store reports it.
    pub async fn leader(&self) -> Option<usize> {
        let m = self.multi.as_ref()?;
        for api in &m.store_api {
            if let Ok(r) = self.http.revision(api).await {
                if let Some(l) = r.leader {
                    if (1..=3).contains(&l) {
                        return Some(l as usize - 1);
                    }
                }
            }
        }
        None
    }

    /// What every gateway's proxies should hold: a store's `/api/v1/gateways` (the first
    /// that answers) and the standalone's.
    pub async fn expected(&self) -> Result<Gateways> {
        let mut out = Gateways::new();
        if let Some(m) = &self.multi {
            let mut got = None;
            let mut errors = Vec::new();
            // The leader first: it is the one most likely to be current.
            let mut order: Vec<usize> = (0..m.store_api.len()).collect();
            if let Some(l) = self.leader().await {
                order.retain(|&i| i != l);
                order.insert(0, l);
            }
            for i in order {
                match self.http.gateways(&m.store_api[i]).await {
                    Ok((_, g)) => {
                        got = Some(g);
                        break;
                    }
                    Err(e) => errors.push(e),
                }
            }
            out.extend(got.ok_or_else(|| anyhow!("no store answered: {}", errors.join("; ")))?);
        }
        if let Some(s) = &self.solo {
            let (_, g) = self.http.gateways(&s.api).await.map_err(|e| anyhow!(e))?;
            out.extend(g);
        }
        Ok(out)
    }

    /// Waits until every gateway of the world is translated.
    pub async fn wait_gateways(&self, timeout: Duration) -> Result<()> {
        let want: Vec<String> = lock(&self.world)
            .gateways
            .iter()
            .map(|g| g.id.clone())
            .collect();
        let deadline = Instant::now() + timeout;
        let mut missing = want.clone();
        while Instant::now() < deadline {
            if let Ok(g) = self.expected().await {
                missing = want
                    .iter()
                    .filter(|w| !g.contains_key(*w))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!(
            "{} of {} gateways not translated after {timeout:?} (e.g. {:?})\n{}",
            missing.len(),
            want.len(),
            missing.first(),
            self.log_tails(15)
        )
    }

    /// Starts `per_gateway` simulated proxies for every gateway; `protocol_of(i)` picks delta
    /// or SotW for the i-th proxy of a gateway.
    pub fn start_proxies(
        &mut self,
        per_gateway: u32,
        protocol_of: &dyn Fn(u32) -> Protocol,
        nack: NackMode,
        max_concurrent_connects: u32,
    ) {
        let gateways = lock(&self.world).gateways.len() as u32;
        let plans = (0..gateways)
            .flat_map(|g| {
                (0..per_gateway).map(move |i| ProxyPlan {
                    gateway: g,
                    protocol: protocol_of(i),
                    nack: NackMode::Never,
                    edges: None,
                })
            })
            .map(|mut p| {
                p.nack = nack.clone();
                p
            })
            .collect();
        self.start_proxy_plans(plans, max_concurrent_connects);
    }

    /// Starts one simulated proxy per plan (proxy ids in plan order).
    pub fn start_proxy_plans(&mut self, plans: Vec<ProxyPlan>, max_concurrent_connects: u32) {
        let (gateways, gw_clusters): (Vec<String>, Vec<usize>) = {
            let w = lock(&self.world);
            w.gateways.iter().map(|g| (g.id.clone(), g.cluster)).unzip()
        };
        let default_edges: Vec<Arc<Vec<String>>> = gw_clusters
            .iter()
            .map(|cluster| {
                Arc::new(match (&self.solo, &self.multi) {
                    (Some(s), _) if s.cluster == *cluster => vec![s.xds.clone()],
                    (_, Some(m)) => m.edge_xds.clone(),
                    _ => Vec::new(),
                })
            })
            .collect();
        let mut placement = Vec::new();
        let mut specs = Vec::new();
        for (id, plan) in plans.into_iter().enumerate() {
            let id = id as u32;
            let g = plan.gateway;
            let edges = match plan.edges {
                Some(e) => Arc::new(e),
                None => default_edges[g as usize].clone(),
            };
            if plan.protocol == Protocol::Delta && plan.nack == NackMode::Never {
                self.delta_proxy_of.entry(g).or_insert(id);
            }
            placement.push(g);
            self.proxy_protocols.push(plan.protocol);
            specs.push(ProxySpec {
                id,
                token: self.proxy_key.token(&gateways[g as usize]),
                gateway: gateways[g as usize].clone(),
                protocol: plan.protocol,
                nack: plan.nack,
                first_edge: id as usize % edges.len().max(1),
                edges,
            });
        }
        let recorder = Arc::new(Recorder::new(
            gateways,
            &placement,
            self.cache.interner().clone(),
        ));
        let shared = Shared {
            connector: self.connector.clone(),
            recorder: recorder.clone(),
            cache: self.cache.clone(),
            connect_permits: Arc::new(tokio::sync::Semaphore::new(
                max_concurrent_connects as usize,
            )),
        };
        for spec in specs {
            let span = tracing::debug_span!("proxy", id = spec.id, gateway = %spec.gateway);
            let stop = self.proxies_stop.clone();
            self.tasks.push(tokio::spawn(
                proxy::run(spec, shared.clone(), stop).instrument(span),
            ));
        }
        self.recorder = Some(recorder);
    }

    /// Starts a real Envoy for each gateway in `gateways`.
    pub fn start_envoys(&mut self, gateways: &[u32]) -> Result<()> {
        if gateways.is_empty() {
            return Ok(());
        }
        let envoy_bin = self.bins.envoy.clone().ok_or_else(|| {
            anyhow!("real Envoys requested but no Envoy binary (set ENVOY_BIN or --envoy, or real_envoys: 0)")
        })?;
        for &g in gateways {
            let (id, cluster) = {
                let w = lock(&self.world);
                (
                    w.gateways[g as usize].id.clone(),
                    w.gateways[g as usize].cluster,
                )
            };
            let xds = match (&self.solo, &self.multi) {
                (Some(s), _) if s.cluster == cluster => vec![s.xds.clone()],
                (_, Some(m)) => {
                    let mut l = m.edge_xds.clone();
                    let n = l.len().max(1);
                    l.rotate_left(g as usize % n);
                    l
                }
                _ => bail!("no xDS server for gateway {id}"),
            };
            let admin = free_port()?;
            let out = std::process::Command::new(&self.bins.flotilla)
                .args(["bootstrap", "--gateway", &id, "--xds", &xds.join(",")])
                .args(["--admin-port", &admin.to_string()])
                .args(["--node-id", &format!("envoy-{g}")])
                .arg("--token-key")
                .arg(&self.proxy_key_file)
                .args(
                    self.certs
                        .iter()
                        .flat_map(|c| ["--tls-ca".into(), c.join("ca.pem").into_os_string()]),
                )
                .output()
                .context("running flotilla bootstrap")?;
            if !out.status.success() {
                bail!(
                    "flotilla bootstrap failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let path = self.work.join(format!("envoy-{g}.json"));
            std::fs::write(&path, &out.stdout)?;
            let proc = self.add_proc(
                &format!("envoy-{g}"),
                "envoy",
                &envoy_bin,
                vec![
                    "-c".into(),
                    path.display().to_string(),
                    "--use-dynamic-base-id".into(),
                    "--log-level".into(),
                    "warn".into(),
                    "--drain-time-s".into(),
                    "1".into(),
                ],
            )?;
            self.envoys.push(RealEnvoy {
                proc,
                gateway: g,
                admin,
            });
        }
        Ok(())
    }

    /// Samples /proc and restarts crashed processes, until the harness is dropped.
    pub fn start_sampler(&mut self) {
        let procs = self.procs.clone();
        let ui = self.ui.clone();
        let started = self.started;
        let restarts = self.restarts.clone();
        let stop = self.proxies_stop.clone();
        let task = async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = started.elapsed().as_secs_f64() * 1000.0;
                let mut crashed = Vec::new();
                {
                    let mut ps = lock(&procs);
                    for (i, p) in ps.iter_mut().enumerate() {
                        p.sample();
                        if p.check_crash(now) {
                            let n = p.crashes.len() as u32;
                            let delay = CRASH_RESTART_AFTER
                                .saturating_mul(1 << (n - 1).min(4))
                                .min(CRASH_RESTART_MAX);
                            crashed.push((i, delay));
                            if n == 1 || n.is_power_of_two() {
                                ui.line(format!(
                                    "!! {} exited on its own ({}, crash #{n}); restarting it in {delay:?}; it said: {}",
                                    p.name,
                                    p.crashes.last().map_or("", String::as_str),
                                    p.last_error_line().unwrap_or_default()
                                ));
                            }
                        }
                    }
                }
                for (i, delay) in crashed {
                    let procs = procs.clone();
                    let h = tokio::spawn(
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut ps = lock(&procs);
                            if let Some(p) = ps.get_mut(i) {
                                if let Err(e) = p.start() {
                                    tracing::error!(error = %e, "restart after crash failed");
                                }
                            }
                        }
                        .instrument(tracing::info_span!("crash_restart")),
                    );
                    lock(&restarts).push(h);
                }
            }
        };
        self.tasks.push(tokio::spawn(
            task.instrument(tracing::info_span!("sampler")),
        ));
    }

    /// Waits (bounded) for the restarts scheduled by faults and crashes so far, then makes
    /// sure every process runs (SIGCONT what is stopped, start what is down). A process in a
    /// crash loop keeps being restarted by the sampler; this does not wait for it to stop.
    pub async fn bring_everything_up(&self) {
        const WAIT: Duration = Duration::from_secs(15);
        let pending: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.restarts));
        let deadline = tokio::time::Instant::now() + WAIT;
        for h in pending {
            let abort = h.abort_handle();
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                abort.abort();
            }
        }
        let mut ps = lock(&self.procs);
        for p in ps.iter_mut() {
            if p.is_stopped() {
                p.resume();
            }
            if !p.is_running() {
                if let Err(e) = p.start() {
                    self.ui.line(format!("cannot restart {}: {e}", p.name));
                }
            }
        }
    }

    /// The holding of proxy `id` as strings.
    pub fn held_of(&self, id: u32) -> Result<Held> {
        let rec = self.recorder()?;
        let interner = self.cache.interner();
        let p = rec.proxy(id);
        let mut out = Held::new();
        for ty in ResType::ALL {
            let m = p
                .held(ty)
                .iter()
                .map(|(n, v)| {
                    (
                        interner.resolve(*n).to_string(),
                        interner.resolve(*v).to_string(),
                    )
                })
                .collect();
            out.insert(ty, m);
        }
        Ok(out)
    }

    /// [`Harness::held_of`] with each EDS version replaced by the endpoints it carries (what
    /// Envoy's config dump can be compared with).
    pub fn held_endpoints_as_content(&self, id: u32) -> Result<Held> {
        let mut h = self.held_of(id)?;
        let interner = self.cache.interner();
        if let Some(m) = h.get_mut(&ResType::Endpoint) {
            for (name, version) in m.iter_mut() {
                let d = self.cache.lookup(
                    ResType::Endpoint,
                    interner.intern(name),
                    interner.intern(version),
                );
                *version = match d.as_deref() {
                    Some(crate::decode::Decoded::Endpoints { summary }) => {
                        interner.resolve(*summary).to_string()
                    }
                    _ => format!("(undecoded version {version})"),
                };
            }
        }
        Ok(h)
    }

    /// Proxies whose holding differs from `expected` (count, examples).
    pub fn proxy_mismatches(&self, expected: &Gateways) -> Result<(usize, Vec<String>)> {
        let rec = self.recorder()?;
        let mut count = 0;
        let mut examples = Vec::new();
        let mut cache: BTreeMap<u32, Held> = BTreeMap::new();
        for id in 0..rec.proxy_count() as u32 {
            let g = rec.gateway_of(id);
            let gw = &rec.gateways()[g as usize];
            let want = cache.entry(g).or_insert_with(|| {
                envoy::expected(expected.get(gw).map(Vec::as_slice).unwrap_or(&[]))
            });
            let have = self.held_of(id)?;
            let d = envoy::diff(&format!("proxy {id}"), &have, "store", want);
            if !d.is_empty() {
                count += 1;
                if examples.len() < MAX_LISTED {
                    examples.push(format!(
                        "proxy {id} ({gw}, {:?}): {} (+{} more)",
                        self.proxy_protocols
                            .get(id as usize)
                            .copied()
                            .unwrap_or(Protocol::Delta),
                        d[0],
                        d.len() - 1
                    ));
                }
            }
        }
        Ok((count, examples))
    }

    /// Waits until every proxy holds what the store computes.
    pub async fn wait_proxies_match(
        &self,
        timeout: Duration,
        what: &str,
    ) -> Result<(usize, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        let start = Instant::now();
        loop {
            let r = match self.expected().await {
                Ok(exp) => self.proxy_mismatches(&exp)?,
                Err(e) => (usize::MAX, vec![e.to_string()]),
            };
            let connected = self.recorder()?.connected.load(Ordering::Relaxed);
            self.ui.progress(
                start.elapsed().as_secs(),
                format!("{what}: {connected} streams, {} proxies differ", r.0),
            );
            if r.0 == 0 || Instant::now() >= deadline {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Compares each real Envoy's config with a delta proxy of its gateway (and the store):
    /// (gateway, differences) per Envoy.
    pub async fn envoy_diffs(&self, expected: &Gateways) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for e in &self.envoys {
            let gw = lock(&self.world).gateways[e.gateway as usize].id.clone();
            let url = format!("http://127.0.0.1:{}/config_dump?include_eds", e.admin);
            let diffs = match self.http.json(&url).await {
                Err(err) => vec![format!("config_dump: {err}")],
                Ok(v) => {
                    let have = envoy::parse_config_dump(&v);
                    let mut d = Vec::new();
                    match self
                        .delta_proxy_of
                        .get(&e.gateway)
                        .map(|&p| self.held_endpoints_as_content(p))
                    {
                        Some(Ok(sim)) => {
                            d.extend(envoy::diff("envoy", &have, "simulated proxy", &sim))
                        }
                        _ => d.push(
                            "no simulated delta proxy of this gateway to compare with".into(),
                        ),
                    }
                    // The store has EDS versions, Envoy has none: names only for EDS there.
                    let want = envoy::expected(expected.get(&gw).map(Vec::as_slice).unwrap_or(&[]));
                    d.extend(envoy::diff(
                        "envoy",
                        &envoy::without_versions(&have, ResType::Endpoint),
                        "store",
                        &envoy::without_versions(&want, ResType::Endpoint),
                    ));
                    d
                }
            };
            out.push((gw, diffs));
        }
        out
    }

    /// Waits until every real Envoy agrees, or `timeout`.
    pub async fn wait_envoys_match(&self, timeout: Duration) -> Vec<(String, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let exp = self.expected().await.unwrap_or_default();
            let d = self.envoy_diffs(&exp).await;
            if d.iter().all(|(_, x)| x.is_empty()) || Instant::now() >= deadline {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The highest `eventsApplied` of the stores (replicas agree once caught up), or of
    /// standalone when there are no stores.
    pub async fn events_applied(&self) -> Option<u64> {
        let apis: Vec<String> = match (&self.multi, &self.solo) {
            (Some(m), _) => m.store_api.clone(),
            (None, Some(s)) => vec![s.api.clone()],
            (None, None) => Vec::new(),
        };
        let mut best = None;
        for api in &apis {
            if let Ok(r) = self.http.revision(api).await {
                best = best.max(r.events_applied);
            }
        }
        best
    }

    /// Streams the edges report (sum over edges; standalone's edge included).
    pub async fn edge_streams(&self) -> u64 {
        let mut n = 0;
        let multi = self.multi.iter().flat_map(|m| m.edge_admin.iter());
        for a in multi.chain(self.solo.as_ref().map(|s| &s.admin)) {
            if let Ok(v) = self.http.json(&self.http.url(a, "/stats")).await {
                n += v["streams"].as_u64().unwrap_or(0);
            }
        }
        n
    }

    // ------------------------------------------------------------ churn sinks

    /// Publishes route `route` at its current seq (file, or NATS upsert).
    pub async fn put_route(&self, route: u32) -> Result<()> {
        let (cluster, path, text) = {
            let w = lock(&self.world);
            let r = &w.routes[route as usize];
            (r.cluster, w.route_file(route), w.route_yaml(route))
        };
        self.put(cluster, &path, &text).await
    }

    pub async fn delete_route(&self, route: u32) -> Result<()> {
        let (cluster, path, text) = {
            let mut w = lock(&self.world);
            w.routes[route as usize].alive = false;
            let r = &w.routes[route as usize];
            (r.cluster, w.route_file(route), w.route_yaml(route))
        };
        self.remove(cluster, &path, &text).await
    }

    pub async fn put_service(&self, cluster: usize, s: usize) -> Result<()> {
        let (path, text) = {
            let w = lock(&self.world);
            (w.service_file(cluster, s), w.service_yaml(cluster, s))
        };
        self.put(cluster, &path, &text).await
    }

    /// Writes `text` at `path` (file clusters) or publishes its objects as upserts.
    pub async fn put(&self, cluster: usize, path: &Path, text: &str) -> Result<()> {
        match (&self.nats, self.nats_clusters.contains(&cluster)) {
            (Some(n), true) => {
                let name = lock(&self.world).clusters[cluster].name.clone();
                let (res, errs) =
                    flotilla_model::parse_documents(&path.display().to_string(), text, &name);
                if let Some(e) = errs.first() {
                    bail!("generated YAML does not parse: {e}");
                }
                for r in res {
                    let ev = ResourceEvent {
                        cluster: name.clone(),
                        source: n.source().to_string(),
                        body: EventBody::Upsert {
                            key: r.key,
                            object: r.raw,
                            origin: None,
                        },
                    };
                    n.publish(&ev).await?;
                }
                Ok(())
            }
            _ => Ok(crate::fixtures::write_atomic(path, text.as_bytes())?),
        }
    }

    /// Removes the file (file clusters) or publishes deletes of its objects.
    pub async fn remove(&self, cluster: usize, path: &Path, text: &str) -> Result<()> {
        match (&self.nats, self.nats_clusters.contains(&cluster)) {
            (Some(n), true) => {
                let name = lock(&self.world).clusters[cluster].name.clone();
                let (res, _) = flotilla_model::parse_documents("", text, &name);
                for r in res {
                    let ev = ResourceEvent {
                        cluster: name.clone(),
                        source: n.source().to_string(),
                        body: EventBody::Delete { key: r.key },
                    };
                    n.publish(&ev).await?;
                }
                Ok(())
            }
            _ => Ok(crate::fixtures::remove_file(path)?),
        }
    }

    /// Writes every cluster's files (file clusters) or publishes them (NATS clusters).
    pub async fn publish_world(&self, cluster: usize) -> Result<()> {
        let files = lock(&self.world).files(cluster);
        for (path, text) in files {
            self.put(cluster, &path, &text).await?;
        }
        Ok(())
    }

    /// Per-process usage, by name.
    pub fn usage(&self) -> Vec<(String, &'static str, crate::procs::Usage)> {
        let mut ps = lock(&self.procs);
        ps.iter_mut()
            .map(|p| {
                p.sample();
                (p.name.clone(), p.role, p.usage())
            })
            .collect()
    }

    /// Crashes seen, one line per process: how many, the first, and what its log said last.
    pub fn crashes(&self) -> Vec<String> {
        lock(&self.procs)
            .iter()
            .filter(|p| !p.crashes.is_empty())
            .map(|p| {
                format!(
                    "{}: {} unexpected exit(s), first {}, last {}; log: {}",
                    p.name,
                    p.crashes.len(),
                    p.crashes[0],
                    p.crashes[p.crashes.len() - 1],
                    p.last_error_line().unwrap_or_else(|| "-".into())
                )
            })
            .collect()
    }

    pub fn log_tails(&self, n: usize) -> String {
        let ps = lock(&self.procs);
        ps.iter()
            .filter(|p| p.role != "envoy")
            .map(|p| {
                format!(
                    "==== {} ({}) ====\n{}",
                    p.name,
                    p.log_path().display(),
                    p.log_tail(n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the proxies and every process.
    pub async fn shutdown(&mut self) {
        self.proxies_stop.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        for h in std::mem::take(&mut *lock(&self.restarts))
            .into_iter()
            .chain(std::mem::take(&mut *lock(&self.trackers)))
        {
            h.abort();
        }
        let mut ps = lock(&self.procs);
        for p in ps.iter_mut() {
            p.terminate(Duration::from_secs(2));
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.proxies_stop.cancel();
        // Proc's own Drop kills each process.
    }
}

async fn wait_tcp(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("127.0.0.1:{port} did not start listening within {timeout:?}")
}
