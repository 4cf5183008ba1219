//! `flotilla ctl`: cluster administration through the stores' REST API. A change goes to the
//! leader: the command asks each given node in turn and follows the 421 "not the leader"
//! answers until one takes it. With `--token-file`, every request carries the token as
//! `Authorization: Bearer`; a refusal (401, 403) ends the command with the server's reason and
//! what to do about it.

use crate::cli::{CtlArgs, CtlCommand};
use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// One request to one node; a stuck node must not stall the command.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(a: CtlArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(call(&a))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn call(a: &CtlArgs) -> Result<Value> {
    let (method, path, body, leader_only) = match &a.command {
        CtlCommand::Members => (Method::GET, "/api/v1/members".to_string(), None, false),
        CtlCommand::AddLearner { id, addr } => (
            Method::POST,
            "/api/v1/members/learners".into(),
            Some(json!({"id": id, "addr": addr})),
            true,
        ),
        CtlCommand::Promote { id } => (
            Method::POST,
            "/api/v1/members/voters".into(),
            Some(json!({"id": id})),
            true,
        ),
        CtlCommand::Remove { id } => (Method::DELETE, format!("/api/v1/members/{id}"), None, true),
        CtlCommand::Snapshot { purge } => (
            Method::POST,
            format!("/api/v1/snapshot?purge={purge}"),
            None,
            true,
        ),
    };
    if a.api.is_empty() {
        bail!("no --api address given");
    }
    let token = a.token_file.as_deref().map(read_token).transpose()?;
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .no_proxy();
    let scheme = match (&a.tls_ca, &a.tls_cert, &a.tls_key) {
        (Some(ca), Some(cert), Some(key)) => {
            let tls = flotilla_net::Tls::load(flotilla_net::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })?;
            builder = builder.use_preconfigured_tls((*tls.client_config_http1()).clone());
            "https"
        }
        (Some(ca), _, _) => {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not a PEM bundle", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
            builder = builder.tls_built_in_root_certs(false);
            "https"
        }
        _ => "http",
    };
    let client = builder.build()?;
    let mut failures = Vec::new();
    for addr in &a.api {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.clone()
        } else {
            format!("{scheme}://{addr}")
        };
        let mut req = client.request(method.clone(), format!("{base}{path}"));
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let code = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading {addr}'s answer"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if code.is_success() {
            return Ok(value);
        }
        if code == StatusCode::MISDIRECTED_REQUEST && leader_only {
            failures.push(format!(
                "{addr}: not the leader (leader: {})",
                value["leader"]
            ));
            continue;
        }
        let msg = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let hint = match (code, &a.token_file) {
            (StatusCode::UNAUTHORIZED, None) => {
                "\n(the API needs a token: pass --token-file PATH or set FLOTILLA_TOKEN_FILE)"
                    .to_string()
            }
            (StatusCode::UNAUTHORIZED, Some(f)) => format!(
                "\n(the token in {} is not accepted: check it is in the server's --api-tokens file)",
                f.display()
            ),
            (StatusCode::FORBIDDEN, _) if leader_only => {
                "\n(membership changes and snapshots need an admin token)".to_string()
            }
            _ => String::new(),
        };
        return Err(anyhow!("{addr} answered {code}: {msg}{hint}"));
    }
    Err(anyhow!("no node took the request: {}", failures.join("; ")))
}

/// The token of a token file: its first line that is neither blank nor a `#` comment.
fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| anyhow!("the token file {} holds no token", path.display()))?;
    if token.split_whitespace().count() != 1 {
        bail!(
            "the token file {} must hold the token alone on its line (not a --api-tokens line)",
            path.display()
        );
    }
    Ok(token.to_string())
}
