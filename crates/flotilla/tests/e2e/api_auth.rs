//! API authentication against a real `flotilla standalone` over real HTTP: tokens made by
//! `flotilla token`, a reader that cannot read `tls.key`, an admin that can, and `flotilla ctl`
//! with either token.

use crate::standalone::{Standalone, T};
use crate::support::*;
use serde_json::Value;
use std::process::Command;

/// base64 of a PEM private key, as a kubernetes.io/tls Secret holds it.
const KEY_B64: &str = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5CmUyZXNlY3JldAotLS0tLUVORCBQUklWQVRFIEtFWS0tLS0tCg==";

fn secret_yaml() -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: site-tls, namespace: default}}
type: kubernetes.io/tls
data: {{tls.crt: Y2VydA==, tls.key: {KEY_B64}}}
"
    )
}

/// `flotilla ctl --api API --token-file FILE ARGS...`: (success, stdout, stderr).
fn ctl(api: u16, token_file: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(flotilla_bin())
        .args(["ctl", "--api", &format!("127.0.0.1:{api}"), "--token-file"])
        .arg(token_file)
        .args(args)
        .output()
        .expect("flotilla ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_token_cannot_read_a_tls_key_and_an_admin_token_can() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = ApiTokens::make(dir.path());
    let s = Standalone::start_in(
        dir,
        vec!["--api-tokens".into(), tokens.file.display().to_string()],
    );
    write_file(&s.yaml, "secret.yaml", &secret_yaml());
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", s.api);
    let secret = url("/api/v1/resources/local/Secret/default/site-tls");

    let full = eventually("the admin reads the Secret", T, || async {
        get_json_as(&s.http, &secret, Some(&tokens.admin)).await
    })
    .await;
    assert_eq!(full["object"]["data"]["tls.key"], KEY_B64, "{full}");

    let (code, body) = get_as(&s.http, &secret, Some(&tokens.reader))
        .await
        .expect("reader GET");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(KEY_B64), "the reader got the key: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["object"]["data"]["tls.key"], "REDACTED", "{v}");
    assert_eq!(v["object"]["data"]["tls.crt"], "REDACTED", "{v}");
    let (code, body) = get_as(
        &s.http,
        &url("/api/v1/resources?kind=Secret"),
        Some(&tokens.reader),
    )
    .await
    .expect("reader list");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("tls.key") && !body.contains(KEY_B64),
        "{body}"
    );

    // Without a token: 401 (with the Bearer challenge), except the probes.
    let r = s.http.get(&secret).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r
        .headers()
        .get("www-authenticate")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.starts_with("Bearer")));
    assert_eq!(get(&s.http, &url("/readyz")).await.expect("readyz").0, 200);

    // Administration: the reader is refused with the role it lacks, the admin is served.
    let (ok, _, err) = ctl(s.api, &tokens.reader_file, &["snapshot"]);
    assert!(!ok);
    assert!(
        err.contains("403") && err.contains("needs the admin role"),
        "{err}"
    );
    assert!(err.contains("need an admin token"), "{err}");
    let (ok, out, err) = ctl(s.api, &tokens.admin_file, &["snapshot"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("ctl json");
    assert!(v["snapshotIndex"].as_u64().unwrap_or(0) > 0, "{v}");
    let (ok, out, err) = ctl(s.api, &tokens.reader_file, &["members"]);
    assert!(ok, "a reader lists members: {err}");
    assert!(out.contains("voters"), "{out}");
    let log = s.proc.log_text();
    assert!(
        log.contains("admin request") && log.contains("e2e-admin"),
        "the change is logged with who asked:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_tokens_file_stops_the_start_with_its_line_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (token, _) = flotilla_token("admin", "ops");
    let file = dir.path().join("api-tokens");
    std::fs::write(&file, format!("admin ops {token}\nroot eve {token}x\n")).expect("write");
    let mut s = Standalone::start_in(dir, vec!["--api-tokens".into(), file.display().to_string()]);
    eventually("standalone to exit", T, || {
        let running = s.proc.is_running();
        async move {
            if running {
                Err("still running".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
    let status = s
        .proc
        .child
        .as_mut()
        .map(|c| c.wait().expect("wait"))
        .expect("child");
    assert!(!status.success());
    let log = s.proc.log_text();
    assert!(
        log.contains(&format!("{}:2: unknown role \"root\"", file.display())),
        "{log}"
    );
    assert!(
        !log.contains(&token),
        "the error does not echo the token:\n{log}"
    );
}
