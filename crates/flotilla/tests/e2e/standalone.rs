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
}

impl Standalone {
    pub fn start() -> Standalone {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = dir.path().join("yaml");
        std::fs::create_dir_all(&yaml).expect("yaml dir");
        let (xds, api, admin) = (free_port(), free_port(), free_port());
        let proc = Proc::spawn(
            "standalone",
            dir.path(),
            &flotilla_bin(),
            &[
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
                dir.path().join("data").display().to_string(),
            ],
        );
        Standalone {
            dir,
            yaml,
            proc,
            xds,
            api,
            admin,
            http: client(),
        }
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
