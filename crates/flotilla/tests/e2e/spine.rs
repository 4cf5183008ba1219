//! The spine: file → ingest → NATS → 3-node Raft store → edge → Envoy.

use crate::support::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

pub struct Spine {
    pub dir: tempfile::TempDir,
    pub yaml: PathBuf,
    pub _nats: Proc,
    pub nats_url: String,
    pub nats_monitor: u16,
    pub stores: Vec<Proc>,
    pub grpc: Vec<u16>,
    pub api: Vec<u16>,
    pub edge: Proc,
    pub xds: u16,
    pub edge_admin: u16,
    pub ingest: Proc,
    pub http: reqwest::Client,
    /// The stores' API credentials (every store runs with `--api-tokens`).
    pub tokens: ApiTokens,
    /// Certificates, when every part runs with TLS ([`Spine::start_secure`]).
    pub certs: Option<PathBuf>,
}

/// `flotilla certs` for a spine of cluster `cluster`: stores 1-3, edge `edge`, the agent,
/// proxies of `CLUSTER/default/gw` and `CLUSTER/default/other`, API clients `admin` and
/// `reader`; into `dir/certs`.
pub fn make_certs(dir: &std::path::Path, cluster: &str) -> PathBuf {
    let out = dir.join("certs");
    let status = std::process::Command::new(flotilla_bin())
        .args(["certs", "--out"])
        .arg(&out)
        .args(["--stores", "1,2,3", "--edges", "edge", "--agents", cluster])
        .arg("--proxies")
        .arg(format!("{cluster}/default/gw,{cluster}/default/other"))
        .args(["--admins", "admin", "--readers", "reader"])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("flotilla certs");
    assert!(status.success(), "flotilla certs failed");
    out
}

/// `--tls-ca/--tls-cert/--tls-key` for the identity whose files are `stem.pem`/`stem.key`.
pub fn tls_args(certs: &std::path::Path, stem: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        certs.join("ca.pem").display().to_string(),
        "--tls-cert".into(),
        certs.join(format!("{stem}.pem")).display().to_string(),
        "--tls-key".into(),
        certs.join(format!("{stem}.key")).display().to_string(),
    ]
}

/// An HTTPS client trusting the certificates' CA (and presenting no certificate).
pub fn https_client(certs: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(certs.join("ca.pem")).expect("ca.pem");
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
        .build()
        .expect("https client")
}

impl Spine {
    pub fn start(cluster: &str) -> Spine {
        Self::start_with(cluster, false)
    }

    /// Every part with TLS: stores speak Raft over mTLS, the edge watches with its
    /// certificate, proxies need a certificate or their gateway's token, the API is HTTPS.
    pub fn start_secure(cluster: &str) -> Spine {
        Self::start_with(cluster, true)
    }

    fn start_with(cluster: &str, secure: bool) -> Spine {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = secure.then(|| make_certs(dir.path(), cluster));
        let yaml = dir.path().join("yaml");
        std::fs::create_dir_all(&yaml).expect("yaml dir");
        let (nats, nats_url, nats_monitor) = start_nats(dir.path());
        let grpc: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let api: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut s = Spine {
            yaml,
            _nats: nats,
            nats_url,
            nats_monitor,
            stores: Vec::new(),
            grpc,
            api,
            edge: Proc {
                name: "edge".into(),
                child: None,
                log: dir.path().join("edge.log"),
            },
            xds: free_port(),
            edge_admin: free_port(),
            ingest: Proc {
                name: "ingest".into(),
                child: None,
                log: dir.path().join("ingest.log"),
            },
            http: certs.as_deref().map_or_else(client, https_client),
            tokens: ApiTokens::make(dir.path()),
            certs,
            dir,
        };
        for i in 0..3 {
            let p = s.spawn_store(i);
            s.stores.push(p);
        }
        let stores: Vec<String> = s.grpc.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut edge_args = vec![
            "edge".into(),
            "--stores".into(),
            stores.join(","),
            "--xds".into(),
            format!("127.0.0.1:{}", s.xds),
            "--admin".into(),
            format!("127.0.0.1:{}", s.edge_admin),
        ];
        if let Some(c) = &s.certs {
            edge_args.extend(tls_args(c, "edge-edge"));
            edge_args.push("--proxy-token-key".into());
            edge_args.push(c.join("proxy-token.key").display().to_string());
        }
        s.edge = Proc::spawn("edge", s.dir.path(), &flotilla_bin(), &edge_args);
        s.ingest = Proc::spawn(
            "ingest",
            s.dir.path(),
            &flotilla_bin(),
            &[
                "ingest".into(),
                "--cluster".into(),
                cluster.into(),
                "--dir".into(),
                s.yaml.display().to_string(),
                "--nats".into(),
                s.nats_url.clone(),
            ],
        );
        s
    }

    pub fn spawn_store(&self, i: usize) -> Proc {
        let peers: Vec<String> = self
            .grpc
            .iter()
            .enumerate()
            .map(|(j, p)| format!("{}=127.0.0.1:{p}", j + 1))
            .collect();
        let mut args: Vec<String> = vec![
            "store".into(),
            "--id".into(),
            (i + 1).to_string(),
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("store{}", i + 1))
                .display()
                .to_string(),
            "--grpc".into(),
            format!("127.0.0.1:{}", self.grpc[i]),
            "--api".into(),
            format!("127.0.0.1:{}", self.api[i]),
            "--peers".into(),
            peers.join(","),
            "--nats".into(),
            self.nats_url.clone(),
            "--api-tokens".into(),
            self.tokens.file.display().to_string(),
        ];
        if let Some(c) = &self.certs {
            args.extend(tls_args(c, &format!("store-{}", i + 1)));
        }
        Proc::spawn(
            &format!("store{}", i + 1),
            self.dir.path(),
            &flotilla_bin(),
            &args,
        )
    }

    /// "http" or "https".
    pub fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// GET on store `i`'s API with the reader token.
    pub async fn api(&self, i: usize, path: &str) -> Result<Value, String> {
        get_json_as(
            &self.http,
            &format!("{}://127.0.0.1:{}{path}", self.scheme(), self.api[i]),
            Some(&self.tokens.reader),
        )
        .await
    }

    /// Index (0-based) of the current leader, as a live node reports it.
    pub async fn leader(&mut self) -> usize {
        let alive: Vec<usize> = (0..3).filter(|&i| self.stores[i].is_running()).collect();
        let this = &*self;
        let _dump = DumpOnPanic(this);
        eventually("a Raft leader", T, || {
            let alive = alive.clone();
            async move {
                for &i in &alive {
                    if let Ok(v) = this.api(i, "/api/v1/revision").await {
                        if let Some(l) = v["leader"].as_u64() {
                            let idx = l.saturating_sub(1) as usize;
                            if alive.contains(&idx) {
                                return Ok(idx);
                            }
                        }
                    }
                }
                Err("no node reports a leader".into())
            }
        })
        .await
    }

    /// (messages, last sequence) of the event stream, as nats-server itself reports them.
    pub async fn stream_state(&self) -> Result<(u64, u64), String> {
        let v = get_json(
            &self.http,
            &format!(
                "http://127.0.0.1:{}/jsz?accounts=true&streams=true",
                self.nats_monitor
            ),
        )
        .await?;
        let streams = v["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default());
        for st in streams {
            if st["name"] == "FLOTILLA_EVENTS" {
                let state = &st["state"];
                return Ok((
                    state["messages"].as_u64().unwrap_or(0),
                    state["last_seq"].as_u64().unwrap_or(0),
                ));
            }
        }
        Err(format!("no FLOTILLA_EVENTS stream in {v}"))
    }

    pub async fn edge_stats(&self) -> Result<Value, String> {
        get_json(
            &self.http,
            &format!("{}://127.0.0.1:{}/stats", self.scheme(), self.edge_admin),
        )
        .await
    }

    /// GET through Envoy until the answer satisfies `ok`.
    pub async fn expect(&self, url: &str, what: &str, ok: impl Fn(u16, &str) -> bool) {
        eventually(what, T, || async {
            let (code, body) = get(&self.http, url).await?;
            if ok(code, &body) {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        })
        .await
    }

    /// Serves one route: Gateway `default/gw` on a free port, Service `v1` on a local backend,
    /// HTTPRoute `default/app` (file `route.yaml`) on `path`; starts an Envoy for the gateway
    /// and waits until it routes `path`.
    pub async fn serve_route(&mut self, path: &str) -> Served {
        let v1 = start_backend("v1").await;
        let port = free_port();
        write_file(
            &self.yaml,
            "gateway.yaml",
            &gateway_yaml("default", "gw", "127.0.0.1", port),
        );
        write_file(
            &self.yaml,
            "services.yaml",
            &service_yaml("default", "v1", v1),
        );
        self.set_route(path);
        let leader = self.leader().await;
        // With certificates, the proxy proves its gateway with its certificate.
        let extra = self
            .certs
            .as_deref()
            .map(|c| tls_args(c, "proxy-east-default-gw"))
            .unwrap_or_default();
        let (envoy, _) = start_envoy_with(
            self.dir.path(),
            "envoy",
            "east/default/gw",
            &[format!("127.0.0.1:{}", self.xds)],
            &extra,
        );
        let base = format!("http://127.0.0.1:{port}");
        let plain = client();
        eventually("the first route", T, || async {
            match get(&plain, &format!("{base}{path}")).await? {
                (200, _) => Ok(()),
                (c, b) => Err(format!("{c} {b}")),
            }
        })
        .await;
        Served {
            base,
            leader,
            _envoy: envoy,
        }
    }

    /// Rewrites `route.yaml`: HTTPRoute `default/app` on `path`, to `v1`.
    pub fn set_route(&self, path: &str) {
        write_file(
            &self.yaml,
            "route.yaml",
            &route_yaml("default", "app", "gw", path, &[("v1", 1)]),
        );
    }

    pub fn dump_logs(&self) {
        for p in self.stores.iter().chain([&self.edge, &self.ingest]) {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("==== {} ====", p.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// What [`Spine::serve_route`] set up.
pub struct Served {
    /// `http://127.0.0.1:PORT` of the Envoy listener.
    pub base: String,
    /// Index of the leader when it was served.
    pub leader: usize,
    pub _envoy: Proc,
}

/// Prints the processes' log tails if the test panics while this is alive.
struct DumpOnPanic<'a>(&'a Spine);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.dump_logs();
        }
    }
}

fn status_of(v: &Value) -> Vec<(String, String, String)> {
    v["object"]["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["type"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_in_a_file_reaches_envoy_through_nats_raft_and_edge() {
    let mut s = Spine::start("east");
    let v1 = start_backend("v1").await;
    let v2 = start_backend("v2").await;
    let port = free_port();
    write_file(
        &s.yaml,
        "gateway.yaml",
        &gateway_yaml("default", "gw", "127.0.0.1", port),
    );
    write_file(
        &s.yaml,
        "services.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("default", "v1", v1),
            service_yaml("default", "v2", v2)
        ),
    );
    s.set_route("/app");
    let _leader = s.leader().await;
    let (_envoy, _admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "east/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let base = format!("http://127.0.0.1:{port}");

    s.expect(
        &format!("{base}/app/x"),
        "the route through Envoy",
        |c, b| c == 200 && b == "backend=v1 path=/app/x",
    )
    .await;

    // Edit: new path and new weights (all traffic to v2).
    write_file(
        &s.yaml,
        "route.yaml",
        &route_yaml("default", "app", "gw", "/new", &[("v1", 0), ("v2", 1)]),
    );
    s.expect(&format!("{base}/new"), "the edited route", |c, b| {
        c == 200 && b == "backend=v2 path=/new"
    })
    .await;
    s.expect(
        &format!("{base}/app/x"),
        "the old path to be gone",
        |c, _| c == 404,
    )
    .await;

    // A route to a missing Service: BackendNotFound, 500 for it, the rest keeps working.
    write_file(
        &s.yaml,
        "ghost.yaml",
        &route_yaml("default", "ghost", "gw", "/ghost", &[("nope", 1)]),
    );
    let st = eventually("BackendNotFound on the ghost route", T, || async {
        let v = s
            .api(0, "/api/v1/resources/east/HTTPRoute/default/ghost")
            .await?;
        let st = status_of(&v);
        if st.contains(&(
            "ResolvedRefs".into(),
            "False".into(),
            "BackendNotFound".into(),
        )) {
            Ok(v)
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    let msg = st["object"]["status"]["parents"][0]["conditions"][1]["message"]
        .as_str()
        .unwrap_or("");
    assert_eq!(
        msg,
        "Failed to process route rule 0 backendRef 0: service default/nope not found."
    );
    s.expect(
        &format!("{base}/ghost"),
        "500 for the invalid backend",
        |c, _| c == 500,
    )
    .await;
    s.expect(
        &format!("{base}/new"),
        "the good route still served",
        |c, b| c == 200 && b == "backend=v2 path=/new",
    )
    .await;

    // Delete the route file: 404.
    std::fs::remove_file(s.yaml.join("route.yaml")).expect("rm route");
    s.expect(&format!("{base}/new"), "404 after delete", |c, _| c == 404)
        .await;

    let stats = s.edge_stats().await.expect("edge stats");
    assert_eq!(stats["nacks"], 0, "Envoy NACKed: {stats}");
    assert!(stats["acks"].as_u64().unwrap_or(0) > 0, "{stats}");
    if std::thread::panicking() {
        s.dump_logs();
    }
}

/// kill -9 the leader during a stream of changes: a new leader, nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_loses_nothing_and_applies_nothing_twice() {
    let mut s = Spine::start("east");
    let served = s.serve_route("/r0").await;
    let (leader, base) = (served.leader, served.base.clone());

    const N: usize = 40;
    for i in 1..=N {
        // Each change is a new file too, so the final state has N+ objects to compare.
        write_file(
            &s.yaml,
            &format!("extra-{i}.yaml"),
            &route_yaml(
                "default",
                &format!("extra-{i}"),
                "gw",
                &format!("/e{i}"),
                &[("v1", 1)],
            ),
        );
        write_file(
            &s.yaml,
            "route.yaml",
            &route_yaml("default", "app", "gw", &format!("/r{i}"), &[("v1", 1)]),
        );
        if i == N / 3 {
            s.stores[leader].kill();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let new_leader = s.leader().await;
    assert_ne!(new_leader, leader, "a new leader is elected");
    s.expect(
        &format!("{base}/r{N}"),
        "Envoy converges to the last change",
        |c, b| c == 200 && b.contains(&format!("path=/r{N}")),
    )
    .await;

    // Every published event applied exactly once: the survivors folded as many events as the
    // stream holds (nats-server's own count), up to its last sequence.
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (messages, last) = s.stream_state().await.expect("stream state");
    assert!(
        messages > N as u64,
        "every change was published: {messages}"
    );
    for &i in &survivors {
        let v = eventually("survivor caught up with the stream", T, || async {
            let v = s.api(i, "/api/v1/revision").await?;
            if v["lastSeq"].as_u64() == Some(last) {
                Ok(v)
            } else {
                Err(format!("{v} vs stream last {last}"))
            }
        })
        .await;
        assert_eq!(
            v["eventsApplied"].as_u64(),
            Some(messages),
            "node {i} applied each event once: {v}"
        );
    }
    // The state equals the fold of what the files say now.
    let items = s
        .api(
            survivors[0],
            "/api/v1/resources?cluster=east&kind=HTTPRoute",
        )
        .await
        .expect("list");
    let mut names: Vec<String> = items["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            i["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    names.sort();
    let mut want: Vec<String> = (1..=N)
        .map(|i| format!("extra-{i}"))
        .chain(["app".to_string()])
        .collect();
    want.sort();
    assert_eq!(names, want);
    let a = s
        .api(survivors[0], "/api/v1/gateways")
        .await
        .expect("gateways");
    let b = s
        .api(survivors[1], "/api/v1/gateways")
        .await
        .expect("gateways");
    assert_eq!(
        a["gateways"], b["gateways"],
        "replicas agree byte for byte (versions are content hashes)"
    );
    let stats = s.edge_stats().await.expect("edge stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

/// Stop every store node and start them again from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_disk_keeps_state_and_revision() {
    let mut s = Spine::start("east");
    let served = s.serve_route("/before").await;
    let base = served.base.clone();
    // Let all replicas settle on the same revision.
    let before = eventually("replicas agree", T, || async {
        let mut revs = Vec::new();
        for i in 0..3 {
            revs.push(s.api(i, "/api/v1/revision").await?["revision"].clone());
        }
        if revs.iter().all(|r| *r == revs[0]) {
            Ok(revs[0].as_u64().unwrap_or(0))
        } else {
            Err(format!("{revs:?}"))
        }
    })
    .await;
    let gws_before = s.api(0, "/api/v1/gateways").await.expect("gateways");
    let edge_rev_before = s.edge_stats().await.expect("stats")["revision"]
        .as_u64()
        .unwrap_or(0);

    for p in s.stores.iter_mut() {
        p.stop(Duration::from_secs(5));
    }
    // Envoy keeps serving its last config while the control plane is away.
    s.expect(
        &format!("{base}/before"),
        "Envoy serving during the outage",
        |c, _| c == 200,
    )
    .await;
    for i in 0..3 {
        s.stores[i] = s.spawn_store(i);
    }
    s.leader().await;
    for i in 0..3 {
        let v = eventually("node ready after restart", T, || async {
            let v = s.api(i, "/api/v1/revision").await?;
            if v["ready"] == true {
                Ok(v)
            } else {
                Err(format!("{v}"))
            }
        })
        .await;
        assert_eq!(
            v["revision"].as_u64(),
            Some(before),
            "node {i} restored to the same revision"
        );
    }
    assert_eq!(
        s.api(0, "/api/v1/gateways").await.expect("gateways"),
        gws_before
    );
    let stats = s.edge_stats().await.expect("stats");
    assert!(
        stats["revision"].as_u64().unwrap_or(0) >= edge_rev_before,
        "{stats}"
    );
    assert_eq!(stats["maxRevisionServed"], stats["revision"], "{stats}");

    // And it still takes changes.
    s.set_route("/after");
    s.expect(&format!("{base}/after"), "route after restart", |c, _| {
        c == 200
    })
    .await;
    let stats = s.edge_stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}
