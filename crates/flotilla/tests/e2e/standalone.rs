//! `flotilla standalone`: the same pipeline in one process, with a real Envoy.

use crate::support::*;
use std::path::PathBuf;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(30);

pub struct Standalone {
    pub dir: tempfile::TempDir,
    pub yaml: PathBuf,
    pub proc: Proc,
    pub xds: u16,
    pub api: u16,
    pub admin: u16,
    pub http: reqwest::Client,
    /// More arguments of every start.
    pub extra: Vec<String>,
}

impl Standalone {
    pub fn start() -> Standalone {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, Vec::new())
    }

    /// Starts it in `dir` with `extra` arguments.
    pub fn start_in(dir: tempfile::TempDir, extra: Vec<String>) -> Standalone {
        let yaml = dir.path().join("yaml");
        std::fs::create_dir_all(&yaml).expect("yaml dir");
        let (xds, api, admin) = (free_port(), free_port(), free_port());
        let proc = Self::spawn(dir.path(), &yaml, xds, api, admin, &extra);
        Standalone {
            dir,
            yaml,
            proc,
            xds,
            api,
            admin,
            http: client(),
            extra,
        }
    }

    fn spawn(
        dir: &std::path::Path,
        yaml: &std::path::Path,
        xds: u16,
        api: u16,
        admin: u16,
        extra: &[String],
    ) -> Proc {
        let mut args: Vec<String> = vec![
            "standalone".into(),
            "--dir".into(),
            yaml.display().to_string(),
            "--xds".into(),
            format!("127.0.0.1:{xds}"),
            "--api".into(),
            format!("127.0.0.1:{api}"),
            "--admin".into(),
            format!("127.0.0.1:{admin}"),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
        ];
        args.extend_from_slice(extra);
        Proc::spawn("standalone", dir, &flotilla_bin(), &args)
    }

    /// Stops the process (SIGTERM); `start_again` runs it anew on the same ports, YAML
    /// directory and data dir.
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(10));
    }

    pub fn start_again(&mut self) {
        self.proc = Self::spawn(
            self.dir.path(),
            &self.yaml,
            self.xds,
            self.api,
            self.admin,
            &self.extra,
        );
    }

    pub async fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        get_json(&self.http, &format!("http://127.0.0.1:{}{path}", self.api)).await
    }

    pub async fn stats(&self) -> Result<serde_json::Value, String> {
        get_json(
            &self.http,
            &format!("http://127.0.0.1:{}/stats", self.admin),
        )
        .await
    }

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_a_route_through_envoy() {
    let s = Standalone::start();
    let v1 = start_backend("v1").await;
    let port = free_port();
    write_file(
        &s.yaml,
        "all.yaml",
        &format!(
            "{}---\n{}---\n{}",
            gateway_yaml("default", "gw", "127.0.0.1", port),
            service_yaml("default", "v1", v1),
            route_yaml("default", "app", "gw", "/app", &[("v1", 1)])
        ),
    );
    let (_envoy, _) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let base = format!("http://127.0.0.1:{port}");
    s.expect(
        &format!("{base}/app"),
        "the route through standalone",
        |c, b| c == 200 && b == "backend=v1 path=/app",
    )
    .await;
    // The start banner tells the user where xDS is and how to bootstrap Envoy.
    let log = s.proc.log_text();
    assert!(
        log.contains(&format!("xDS listening on 127.0.0.1:{}", s.xds)),
        "{log}"
    );
    assert!(
        log.contains("flotilla bootstrap --gateway local/NAMESPACE/NAME"),
        "{log}"
    );
    let v = s.api("/readyz").await.expect("ready");
    assert_eq!(v["status"], "ready");
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

/// HTTPRoute sessionPersistence through a real Envoy: one Service with two endpoints; without a
/// session Envoy spreads requests over both, with the cookie (or header) Envoy handed out every
/// request goes to the endpoint that answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_persistence_pins_requests_to_one_endpoint() {
    let s = Standalone::start();
    // Two endpoints of one Service share its target port, so they live on two loopback IPs.
    let (mut port, mut tries) = (0, 0);
    while port == 0 {
        tries += 1;
        assert!(tries < 20, "no port free on both 127.0.0.2 and 127.0.0.3");
        let Ok(p) = start_backend_on("a", "127.0.0.2", 0).await else {
            continue;
        };
        if start_backend_on("b", "127.0.0.3", p).await.is_ok() {
            port = p;
        }
    }
    let gw_port = free_port();
    write_file(
        &s.yaml,
        "all.yaml",
        &format!(
            "{}---
apiVersion: v1
kind: Service
metadata: {{name: pool, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: pool-1, namespace: default, labels: {{kubernetes.io/service-name: pool}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: [127.0.0.2]}}, {{addresses: [127.0.0.3]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: sticky, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /cookie}}}}]
    backendRefs: [{{name: pool, port: 80}}]
    sessionPersistence: {{sessionName: sticky, absoluteTimeout: 1h, cookieConfig: {{lifetimeType: Permanent}}}}
  - matches: [{{path: {{type: PathPrefix, value: /header}}}}]
    backendRefs: [{{name: pool, port: 80}}]
    sessionPersistence: {{type: Header, sessionName: x-sticky}}
  - matches: [{{path: {{type: PathPrefix, value: /plain}}}}]
    backendRefs: [{{name: pool, port: 80}}]
",
            gateway_yaml("default", "gw", "127.0.0.1", gw_port)
        ),
    );
    let (_envoy, _) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let base = format!("http://127.0.0.1:{gw_port}");
    let backend_of = |body: &str| body.split(' ').next().unwrap_or_default().to_string();
    // Both endpoints are ready and used: round robin without a session.
    eventually("both endpoints answering /plain", T, || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let (code, body) = get(&s.http, &format!("{base}/plain")).await?;
            if code != 200 {
                return Err(format!("{code} {body}"));
            }
            seen.insert(backend_of(&body));
        }
        if seen.len() == 2 {
            Ok(())
        } else {
            Err(format!("only {seen:?}"))
        }
    })
    .await;

    // Cookie: the first answer sets it, with the route's path and the absoluteTimeout.
    let first = s
        .http
        .get(format!("{base}/cookie/x"))
        .send()
        .await
        .expect("first request");
    assert_eq!(first.status(), 200);
    let set_cookie = first
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(set_cookie.starts_with("sticky="), "{set_cookie}");
    assert!(set_cookie.contains("Path=/cookie"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=3600"), "{set_cookie}");
    let pinned = backend_of(&first.text().await.unwrap());
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    for i in 0..12 {
        let r = s
            .http
            .get(format!("{base}/cookie/{i}"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("request with the cookie");
        assert_eq!(r.status(), 200);
        assert_eq!(backend_of(&r.text().await.unwrap()), pinned, "request {i}");
    }

    // Header: the first answer carries the session header; sending it back pins the endpoint.
    let first = s
        .http
        .get(format!("{base}/header"))
        .send()
        .await
        .expect("first request");
    let session = first
        .headers()
        .get("x-sticky")
        .expect("a session header")
        .to_str()
        .unwrap()
        .to_string();
    let pinned = backend_of(&first.text().await.unwrap());
    for i in 0..12 {
        let r = s
            .http
            .get(format!("{base}/header"))
            .header("x-sticky", &session)
            .send()
            .await
            .expect("request with the header");
        assert_eq!(backend_of(&r.text().await.unwrap()), pinned, "request {i}");
    }
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}
