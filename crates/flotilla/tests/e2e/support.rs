//! Real parts for end-to-end tests: processes (nats-server, flotilla, Envoy) with their logs in
//! a temp dir, HTTP backends, and polling helpers. Every process is killed when dropped. What the
//! rate limit tests need too (ports, processes, Envoy, redis-server) is in `flotilla-testing`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use flotilla_testing::{
    active_listeners, config_dump, free_port, http_client_builder, serve, start_redis, wait_tcp,
    Proc,
};

pub fn flotilla_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flotilla"))
}

pub fn nats_bin() -> PathBuf {
    let p = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
    let p = PathBuf::from(p);
    assert!(
        p.exists(),
        "nats-server not found at {} (install: apt-get install -y nats-server, or set NATS_SERVER_BIN)",
        p.display()
    );
    p
}

/// Starts nats-server with JetStream; returns (process, client URL, monitoring port).
pub fn start_nats(dir: &Path) -> (Proc, String, u16) {
    let port = free_port();
    let monitor = free_port();
    let store = dir.join("nats");
    std::fs::create_dir_all(&store).expect("nats dir");
    let p = Proc::spawn(
        "nats",
        dir,
        &nats_bin(),
        &[
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
            "-m".into(),
            monitor.to_string(),
        ],
    );
    wait_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(10));
    (p, format!("nats://127.0.0.1:{port}"), monitor)
}

/// Starts Envoy with the bootstrap `flotilla bootstrap` prints for `gateway`.
pub fn start_envoy(dir: &Path, name: &str, gateway: &str, xds: &[String]) -> (Proc, u16) {
    start_envoy_with(dir, name, gateway, xds, &[])
}

/// [`start_envoy`] with more `flotilla bootstrap` flags (TLS, token key).
pub fn start_envoy_with(
    dir: &Path,
    name: &str,
    gateway: &str,
    xds: &[String],
    bootstrap_args: &[String],
) -> (Proc, u16) {
    let admin = free_port();
    let out = Command::new(flotilla_bin())
        .args(["bootstrap", "--gateway", gateway, "--xds", &xds.join(",")])
        .args(["--admin-port", &admin.to_string()])
        .args(bootstrap_args)
        .output()
        .expect("flotilla bootstrap");
    assert!(
        out.status.success(),
        "bootstrap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("{name}-bootstrap.json"));
    std::fs::write(&path, &out.stdout).expect("write bootstrap");
    let p = flotilla_testing::start_envoy(dir, name, &path, "info");
    (p, admin)
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` and the last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
}

pub fn client() -> reqwest::Client {
    flotilla_testing::http_client(Duration::from_secs(3))
}

/// GET through Envoy: (status, body).
pub async fn get(c: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let r = c
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let code = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok((code, body))
}

/// Waits (up to `timeout`) until `url` answers from backend `want` alone: several requests in
/// a row, every one `200` with body `backend=<want> path=/x` (a mix means both are still in
/// use).
pub async fn only_answering(c: &reqwest::Client, url: &str, want: &str, timeout: Duration) {
    eventually(&format!("only {want} answering"), timeout, || async {
        for _ in 0..6 {
            let (code, body) = get(c, url).await?;
            if code != 200 || body != format!("backend={want} path=/x") {
                return Err(format!("{code} {body}"));
            }
        }
        Ok(())
    })
    .await
}

pub async fn get_json(c: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    get_json_as(c, url, None).await
}

/// GET with `Authorization: Bearer token` (when given): (status, body).
pub async fn get_as(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut req = c.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
    let code = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok((code, body))
}

/// [`get_json`] with `Authorization: Bearer token` (when given).
pub async fn get_json_as(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, String> {
    let (code, body) = get_as(c, url, token).await?;
    if code != 200 {
        return Err(format!("GET {url}: {code} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}: {e}: {body}"))
}

/// An HTTP backend answering every request with `backend=NAME path=PATH`.
pub async fn start_backend(name: &'static str) -> u16 {
    start_backend_on(name, "127.0.0.1", 0)
        .await
        .expect("bind backend")
}

/// [`start_backend`] on `ip:port` (0: any free port); the port it listens on.
pub async fn start_backend_on(name: &'static str, ip: &str, port: u16) -> std::io::Result<u16> {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
        format!("backend={name} path={}", uri.path())
    });
    serve(ip, port, app).await
}

/// YAML for the GatewayClass `flotilla` (Envoy Gateway's controller name), ending in `---`.
pub const CLASS_YAML: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: flotilla}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
";

/// YAML for a GatewayClass + Gateway with one HTTP listener on `ip:port`.
pub fn gateway_yaml(ns: &str, name: &str, ip: &str, port: u16) -> String {
    format!(
        "{CLASS_YAML}apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {ns}}}
spec:
  gatewayClassName: flotilla
  addresses: [{{type: IPAddress, value: {ip}}}]
  listeners:
  - {{name: http, port: {port}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
"
    )
}

/// YAML for a Service on port 80 whose EndpointSlice points at 127.0.0.1:`target`.
pub fn service_yaml(ns: &str, name: &str, target: u16) -> String {
    service_yaml_ready(ns, name, target, true)
}

/// [`service_yaml`] with the endpoint's `ready` condition.
pub fn service_yaml_ready(ns: &str, name: &str, target: u16, ready: bool) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {target}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: {ready}}}}}]
"
    )
}

/// YAML for an HTTPRoute on gateway `gw` matching a path prefix, with weighted Service backends.
pub fn route_yaml(ns: &str, name: &str, gw: &str, path: &str, backends: &[(&str, u32)]) -> String {
    let refs: Vec<String> = backends
        .iter()
        .map(|(b, w)| format!("{{name: {b}, port: 80, weight: {w}}}"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{name: {gw}}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{}]
",
        refs.join(", ")
    )
}

/// Writes a file atomically (write + rename), as editors and `kubectl`-like tools do.
pub fn write_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// API credentials for a test: tokens made by `flotilla token`, the `--api-tokens` file that
/// holds their digests, and a `--token-file` for `flotilla ctl` per role.
pub struct ApiTokens {
    /// The servers' `--api-tokens` file.
    pub file: PathBuf,
    pub admin: String,
    pub reader: String,
    /// `flotilla ctl --token-file` files.
    pub admin_file: PathBuf,
    pub reader_file: PathBuf,
}

/// `flotilla token --role ROLE --name NAME`: (token, tokens file line).
pub fn flotilla_token(role: &str, name: &str) -> (String, String) {
    let out = Command::new(flotilla_bin())
        .args(["token", "--role", role, "--name", name])
        .output()
        .expect("flotilla token");
    assert!(
        out.status.success(),
        "flotilla token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    match (lines.next(), lines.next(), lines.next()) {
        (Some(token), Some(line), None) => (token.to_string(), line.to_string()),
        _ => panic!("flotilla token printed {text:?}"),
    }
}

impl ApiTokens {
    /// An admin and a reader token, in files under `dir`.
    pub fn make(dir: &Path) -> ApiTokens {
        let (admin, admin_line) = flotilla_token("admin", "e2e-admin");
        let (reader, reader_line) = flotilla_token("reader", "e2e-reader");
        let file = dir.join("api-tokens");
        std::fs::write(&file, format!("# e2e\n{admin_line}\n{reader_line}\n")).expect("tokens");
        let admin_file = dir.join("admin.token");
        std::fs::write(&admin_file, format!("{admin}\n")).expect("admin token");
        let reader_file = dir.join("reader.token");
        std::fs::write(&reader_file, format!("{reader}\n")).expect("reader token");
        ApiTokens {
            file,
            admin,
            reader,
            admin_file,
            reader_file,
        }
    }
}
