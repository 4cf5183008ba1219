//! Attacks on a running, secured Flotilla, each tried against the real processes: crafted Raft
//! calls, watches and xDS streams from callers without (or with the wrong) credentials, and
//! oversized messages. Each must fail with a clear status, be counted and logged, and leave
//! the cluster serving: the same leader, and a route change still reaching Envoy.

use crate::spine::*;
use crate::support::*;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_net::{Connector, Role, Tls, TlsFiles};
use flotilla_proto::raft::raft_client::RaftClient;
use flotilla_proto::raft::RaftPayload;
use flotilla_proto::watch::watch_client::WatchClient;
use flotilla_proto::watch::WatchRequest;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

const T: Duration = Duration::from_secs(30);

fn tls(certs: &Path, stem: &str) -> Tls {
    Tls::load(TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{stem}.pem")),
        key: certs.join(format!("{stem}.key")),
    })
    .unwrap_or_else(|e| panic!("loading {stem}: {e}"))
}

/// A TLS connector presenting `stem`'s certificate, expecting a server of `role`.
fn as_(certs: &Path, stem: &str, role: Role) -> Connector {
    Connector::tls(tls(certs, stem), Some(role))
}

async fn channel(port: u16, connector: Connector) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

#[derive(Clone, Copy, Debug)]
enum RaftCall {
    Append,
    Vote,
}

/// One Raft call to node `to` on `port`: the status code it ended with, or the connection
/// error.
async fn raft(
    port: u16,
    to: u64,
    connector: Connector,
    call: RaftCall,
    body: Vec<u8>,
) -> Result<Code, String> {
    let ch = channel(port, connector).await?;
    let mut c = RaftClient::new(ch)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let mut req = tonic::Request::new(RaftPayload { body: body.into() });
    req.metadata_mut()
        .insert("x-flotilla-to", to.to_string().parse().expect("metadata"));
    let r = match call {
        RaftCall::Append => c.append_entries(req).await,
        RaftCall::Vote => c.vote(req).await,
    };
    Ok(match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    })
}

async fn watch(port: u16, connector: Connector) -> Result<Code, String> {
    let ch = channel(port, connector).await?;
    let r = WatchClient::new(ch)
        .watch(WatchRequest {
            since_revision: 0,
            edge_id: "intruder".into(),
        })
        .await;
    match r {
        Ok(mut s) => {
            match tokio::time::timeout(Duration::from_secs(5), s.get_mut().message()).await {
                Ok(Ok(Some(_))) => Ok(Code::Ok),
                Ok(Ok(None)) => Ok(Code::Ok),
                Ok(Err(s)) => Ok(s.code()),
                Err(_) => Ok(Code::Ok),
            }
        }
        Err(s) => Ok(s.code()),
    }
}

/// Opens a delta xDS stream naming `gateway` (with `token` as the proxy token, if any) and
/// returns how it ended: `Ok` when the edge sent a response.
async fn xds(
    port: u16,
    connector: Connector,
    gateway: &str,
    token: Option<&str>,
    pad: usize,
) -> Result<Code, String> {
    let ch = channel(port, connector).await?;
    let mut c = AggregatedDiscoveryServiceClient::new(ch).max_encoding_message_size(usize::MAX);
    let first = DeltaDiscoveryRequest {
        node: Some(Node {
            id: "intruder".into(),
            cluster: gateway.into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        resource_names_subscribe: if pad > 0 {
            vec!["x".repeat(pad)]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mut req =
        tonic::Request::new(futures::stream::iter(vec![first]).chain(futures::stream::pending()));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("x-flotilla-proxy-token", t.parse().expect("metadata"));
    }
    use futures::StreamExt;
    let r = c.delta_aggregated_resources(req).await;
    match r {
        Ok(mut s) => {
            match tokio::time::timeout(Duration::from_secs(10), s.get_mut().message()).await {
                Ok(Ok(Some(_))) => Ok(Code::Ok),
                Ok(Ok(None)) => Ok(Code::Unknown),
                Ok(Err(s)) => Ok(s.code()),
                Err(_) => Err("no answer in 10 s".into()),
            }
        }
        Err(s) => Ok(s.code()),
    }
}

fn counter(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Prints the tail of every process log in a directory if the test panics.
struct LogsOnPanic(std::path::PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("==== {} ====", p.display());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secured_cluster_refuses_every_caller_without_the_right_credentials() {
    let mut s = Spine::start_secure("east");
    let _logs = LogsOnPanic(s.dir.path().to_path_buf());
    // TLS everywhere works: Raft between the stores, the edge's watch, Envoy with its
    // certificate, the API over HTTPS.
    let served = s.serve_route("/app").await;
    let certs = s.certs.clone().expect("certs");
    let leader = s.leader().await;
    let (lport, lid) = (s.grpc[leader], leader as u64 + 1);
    // A second CA, as an attacker can make.
    let foreign_root = s.dir.path().join("foreign");
    std::fs::create_dir_all(&foreign_root).expect("dir");
    let foreign = make_certs(&foreign_root, "east");

    // 1. Raft without a certificate: refused at the TLS handshake, before anything is read.
    assert!(
        raft(
            lport,
            lid,
            Connector::plain(),
            RaftCall::Append,
            b"garbage".to_vec()
        )
        .await
            != Ok(Code::Ok),
        "plaintext Raft was answered"
    );
    // 2. A store certificate from another CA: refused at the handshake.
    let r = raft(
        lport,
        lid,
        as_(&foreign, "store-1", Role::Store),
        RaftCall::Append,
        Vec::new(),
    )
    .await;
    assert!(r.is_err(), "a foreign CA's store got through: {r:?}");
    // 3. A valid certificate of the wrong role (the API reader, an edge): PermissionDenied,
    //    even for 50 votes in a row (which used to inflate the term and force elections).
    assert_eq!(
        raft(
            lport,
            lid,
            as_(&certs, "reader-reader", Role::Store),
            RaftCall::Append,
            b"x".to_vec()
        )
        .await,
        Ok(Code::PermissionDenied)
    );
    for _ in 0..50 {
        assert_eq!(
            raft(
                lport,
                lid,
                as_(&certs, "edge-edge", Role::Store),
                RaftCall::Vote,
                b"x".to_vec()
            )
            .await,
            Ok(Code::PermissionDenied)
        );
    }
    // 4. The watch (every gateway's private keys) for a proxy's certificate, and without one.
    assert_eq!(
        watch(lport, as_(&certs, "proxy-east-default-gw", Role::Store)).await,
        Ok(Code::PermissionDenied)
    );
    assert!(watch(lport, Connector::plain()).await != Ok(Code::Ok));
    // An edge's watch request with a 16 KiB name: over the 4 KiB a watch request needs.
    let ch = channel(lport, as_(&certs, "edge-edge", Role::Store))
        .await
        .expect("edge channel");
    let r = WatchClient::new(ch)
        .watch(WatchRequest {
            since_revision: 0,
            edge_id: "e".repeat(16 * 1024),
        })
        .await;
    assert_eq!(r.err().map(|s| s.code()), Some(Code::OutOfRange));
    // 5. A message far over what a peer can legitimately send, from a real store identity:
    //    refused from its length prefix, the node unharmed.
    let big = vec![0u8; 48 * 1024 * 1024];
    assert_eq!(
        raft(
            lport,
            lid,
            as_(&certs, "store-2", Role::Store),
            RaftCall::Append,
            big
        )
        .await,
        Ok(Code::OutOfRange)
    );

    // 6. xDS: a proxy of gw naming another gateway, by certificate and by token; no
    //    credentials at all; a token for another gateway.
    let key = flotilla_net::ProxyKey::load(&certs.join("proxy-token.key")).expect("key");
    let gw_cert = || as_(&certs, "proxy-east-default-gw", Role::Edge);
    let edge_ca_only = || {
        // TLS to the edge without a client certificate: a proxy that brings only a token.
        Connector::tls(tls(&certs, "reader-reader"), Some(Role::Edge))
    };
    assert_eq!(
        xds(s.xds, gw_cert(), "east/default/other", None, 0).await,
        Ok(Code::PermissionDenied)
    );
    assert_eq!(
        xds(
            s.xds,
            edge_ca_only(),
            "east/default/other",
            Some(&key.token("east/default/gw")),
            0
        )
        .await,
        Ok(Code::PermissionDenied)
    );
    assert_eq!(
        xds(s.xds, edge_ca_only(), "east/default/gw", None, 0).await,
        Ok(Code::PermissionDenied)
    );
    assert!(
        xds(s.xds, Connector::plain(), "east/default/gw", None, 0).await != Ok(Code::Ok),
        "plaintext xDS was served"
    );
    // The right credentials are served: the certificate, and the gateway's own token.
    assert_eq!(
        xds(s.xds, gw_cert(), "east/default/gw", None, 0).await,
        Ok(Code::Ok)
    );
    assert_eq!(
        xds(
            s.xds,
            edge_ca_only(),
            "east/default/gw",
            Some(&key.token("east/default/gw")),
            0
        )
        .await,
        Ok(Code::Ok)
    );
    // 7. An oversized discovery request.
    let r = xds(s.xds, gw_cert(), "east/default/gw", None, 9 * 1024 * 1024).await;
    assert!(
        matches!(r, Ok(Code::OutOfRange) | Ok(Code::ResourceExhausted)),
        "{r:?}"
    );

    // Counted and logged where they happened.
    let st = s.api(leader, "/api/v1/revision").await.expect("revision");
    assert!(counter(&st, "grpcCallsDenied") >= 52, "{st}");
    let edge = s.edge_stats().await.expect("edge stats");
    assert!(counter(&edge, "proxiesDenied") >= 3, "{edge}");
    assert!(s.stores[leader].log_text().contains("refused a call"));
    assert!(s.edge.log_text().contains("refused a proxy"));

    // Certificates rotate without a restart: reissue every leaf (the CA stays); new
    // connections to the edge and to the stores see the new certificates.
    let presented = |port: u16, role: Role| {
        let c = as_(&certs, "reader-reader", role);
        async move {
            let uri: tonic::codegen::http::Uri =
                format!("http://127.0.0.1:{port}").parse().expect("uri");
            c.connect(&uri)
                .await
                .map_err(|e| e.to_string())
                .map(|s| s.peer_certificate().map(|d| d.as_ref().to_vec()))
        }
    };
    let edge_before = presented(s.xds, Role::Edge).await.expect("edge cert");
    let store_before = presented(lport, Role::Store).await.expect("store cert");
    make_certs(s.dir.path(), "east");
    eventually(
        "the edge and the store present their new certificates",
        T,
        || async {
            let e = presented(s.xds, Role::Edge).await?;
            let st = presented(lport, Role::Store).await?;
            if e != edge_before && st != store_before {
                Ok(())
            } else {
                Err("still the old certificates".to_string())
            }
        },
    )
    .await;
    assert!(s.edge.log_text().contains("TLS certificate reloaded"));
    assert!(s.stores[leader]
        .log_text()
        .contains("TLS certificate reloaded"));

    // Nothing else disturbed: the same leader, and a change still reaches Envoy.
    assert_eq!(s.leader().await, leader, "the attacks moved the leadership");
    s.set_route("/moved");
    eventually("the moved route through Envoy", T, || async {
        match get(&client(), &format!("{}/moved", served.base)).await? {
            (200, _) => Ok(()),
            (c, b) => Err(format!("{c} {b}")),
        }
    })
    .await;
}

/// Opens N connections to HOST:PORT that never send a byte, holds them for HOLD seconds, and
/// prints how many were established and how many the server closed meanwhile. A separate
/// process (python3, beside Envoy) so that its descriptors are not the test's.
const IDLE_FLOOD: &str = r#"
import errno, resource, select, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ep = select.epoll()
socks = {}
for _ in range(n):
    try:
        s = socket.socket()
    except OSError:
        break
    s.setblocking(False)
    s.connect_ex((host, port))
    socks[s.fileno()] = s
    ep.register(s.fileno(), select.EPOLLOUT)
connected, closed, pending = 0, 0, set(socks)
deadline = time.time() + 10
while pending and time.time() < deadline:
    for fd, ev in ep.poll(0.5):
        if fd in pending:
            pending.discard(fd)
            if socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected += 1
                ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
            else:
                ep.unregister(fd)
print("connected", connected, flush=True)
end = time.time() + hold
gone = set()
while time.time() < end:
    for fd, ev in ep.poll(0.5):
        if fd in gone or fd in pending:
            continue
        gone.add(fd)
        ep.unregister(fd)
print("closed", len(gone), flush=True)
"#;

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// The flood's "connected N" and "closed M".
fn flood_result(out: &str) -> (u64, u64) {
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("connected "), get("closed "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_silent_connections_do_not_stop_changes_reaching_envoy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("proxy-token.key");
    std::fs::write(&key, flotilla_net::auth::random_secret()).expect("key");
    let s = crate::standalone::Standalone::start_in(
        dir,
        vec![
            "--proxy-token-key".into(),
            key.display().to_string(),
            "--handshake-timeout".into(),
            "3".into(),
        ],
    );
    let _logs = LogsOnPanic(s.dir.path().to_path_buf());
    let v1 = start_backend("v1").await;
    let port = free_port();
    let all = |path: &str| {
        format!(
            "{}---\n{}---\n{}",
            gateway_yaml("default", "gw", "127.0.0.1", port),
            service_yaml("default", "v1", v1),
            route_yaml("default", "app", "gw", path, &[("v1", 1)])
        )
    };
    write_file(&s.yaml, "all.yaml", &all("/app"));
    let (_envoy, _) = start_envoy_with(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
        &["--token-key".into(), key.display().to_string()],
    );
    let base = format!("http://127.0.0.1:{port}");
    s.expect(&format!("{base}/app"), "the route", |c, _| c == 200)
        .await;

    // 20,000 connections that never send a byte: 2 x 9,000 on the xDS port, 2,000 on the API.
    let script = s.dir.path().join("idle_flood.py");
    std::fs::write(&script, IDLE_FLOOD).expect("script");
    let hold = 25.0;
    let flood = |port: u16, n: u32| {
        std::process::Command::new("python3")
            .arg(&script)
            .args([
                "127.0.0.1",
                &port.to_string(),
                &n.to_string(),
                &hold.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3")
    };
    let floods = vec![
        flood(s.xds, 9_000),
        flood(s.xds, 9_000),
        flood(s.api, 2_000),
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;

    // While they are held: a change still goes file → store → edge → Envoy, and the API
    // answers.
    write_file(&s.yaml, "all.yaml", &all("/moved"));
    s.expect(
        &format!("{base}/moved"),
        "the change under the flood",
        |c, _| c == 200,
    )
    .await;
    let ready = eventually(
        "the API under the flood",
        Duration::from_secs(10),
        || async { s.api("/readyz").await },
    )
    .await;
    assert_eq!(ready["status"], "ready");

    // Once the connections are closed by the handshake timeout, the process is quiet: no
    // accept loop spinning on an error.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pid = s.proc.child.as_ref().map(|c| c.id()).expect("running");
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let busy = cpu_seconds(pid) - before;
    assert!(
        busy < 2.5,
        "standalone used {busy:.1} s of CPU in 5 s of silence"
    );

    let mut connected = 0;
    let mut closed = 0;
    for f in floods {
        let out = f.wait_with_output().expect("flood");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (c, d) = flood_result(&text);
        connected += c;
        closed += d;
    }
    assert!(
        connected >= 18_000,
        "only {connected} connections were made"
    );
    // Every connection the server took was closed by it, not held.
    assert!(
        closed * 100 >= connected * 95,
        "the server closed {closed} of {connected} silent connections"
    );
    let stats = s.stats().await.expect("stats");
    eprintln!(
        "flood: {connected} connected, {closed} closed by the server, {busy:.2} s CPU in 5 s \
         of silence; edge {stats}"
    );
    assert!(
        counter(&stats, "handshakesFailed") + counter(&stats, "evicted") >= 9_000,
        "{stats}"
    );
}

#[test]
fn a_plaintext_port_beyond_loopback_needs_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = |insecure: bool| {
        let mut a: Vec<String> = vec![
            "edge".into(),
            "--stores".into(),
            "127.0.0.1:1".into(),
            "--xds".into(),
            format!("0.0.0.0:{}", free_port()),
            "--admin".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        if insecure {
            a.push("--insecure".into());
        }
        a
    };
    let mut refused = Proc::spawn("refused", dir.path(), &flotilla_bin(), &args(false));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refused.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = refused
        .child
        .as_mut()
        .and_then(|c| c.try_wait().ok().flatten());
    assert!(
        status.is_some_and(|s| !s.success()),
        "a plaintext xDS port on 0.0.0.0 was served: {}",
        refused.log_text()
    );
    assert!(
        refused
            .log_text()
            .contains("refusing to serve the xDS port"),
        "{}",
        refused.log_text()
    );
    let mut insecure = Proc::spawn("insecure", dir.path(), &flotilla_bin(), &args(true));
    std::thread::sleep(Duration::from_secs(1));
    assert!(insecure.is_running(), "{}", insecure.log_text());
    assert!(
        insecure.log_text().contains("INSECURE"),
        "{}",
        insecure.log_text()
    );
}
