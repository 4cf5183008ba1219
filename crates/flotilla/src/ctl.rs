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

/// Objects per page when listing statuses.
const STATUS_PAGE: usize = 500;

pub fn run(a: CtlArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let CtlCommand::Status {
        cluster,
        kind,
        name,
    } = &a.command
    {
        let rows = rt.block_on(statuses(
            &a,
            cluster.as_deref(),
            kind.as_deref(),
            name.as_deref(),
        ))?;
        print!("{}", status_table(&rows));
        return Ok(());
    }
    let out = rt.block_on(call(&a))?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Every listed object (all pages) with a status.
async fn statuses(
    a: &CtlArgs,
    cluster: Option<&str>,
    kind: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<Value>> {
    let mut query = vec![format!("limit={STATUS_PAGE}")];
    if let Some(c) = cluster {
        query.push(format!("cluster={}", encode(c)));
    }
    if let Some(k) = kind {
        query.push(format!("kind={}", encode(k)));
    }
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut q = query.clone();
        if let Some(c) = &next {
            q.push(format!("continue={}", encode(c)));
        }
        let page = send(
            a,
            Method::GET,
            format!("/api/v1/resources?{}", q.join("&")),
            None,
            false,
        )
        .await?;
        for item in page["items"].as_array().into_iter().flatten() {
            let obj = &item["object"];
            let named = name.is_none_or(|n| obj["metadata"]["name"] == n);
            if named && !obj["status"].is_null() {
                out.push(item.clone());
            }
        }
        match page["continue"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => return Ok(out),
        }
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line per condition: of the object, of each route parent, policy ancestor or
/// listener.
fn status_table(items: &[Value]) -> String {
    let mut rows = vec![[
        "CLUSTER", "KIND", "OBJECT", "FOR", "TYPE", "STATUS", "REASON", "GEN",
    ]
    .map(String::from)];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let ref_name = |r: &Value| {
        let ns = s(&r["namespace"]);
        let name = s(&r["name"]);
        if ns.is_empty() {
            format!("{} {name}", s(&r["kind"]))
        } else {
            format!("{} {ns}/{name}", s(&r["kind"]))
        }
    };
    for item in items {
        let obj = &item["object"];
        let meta = &obj["metadata"];
        let object = match meta["namespace"].as_str() {
            Some(ns) => format!("{ns}/{}", s(&meta["name"])),
            None => s(&meta["name"]),
        };
        let status = &obj["status"];
        let mut groups: Vec<(String, &Value)> = vec![(String::new(), &status["conditions"])];
        for p in status["parents"].as_array().into_iter().flatten() {
            groups.push((ref_name(&p["parentRef"]), &p["conditions"]));
        }
        for p in status["ancestors"].as_array().into_iter().flatten() {
            groups.push((ref_name(&p["ancestorRef"]), &p["conditions"]));
        }
        for l in status["listeners"].as_array().into_iter().flatten() {
            groups.push((format!("listener {}", s(&l["name"])), &l["conditions"]));
        }
        for (scope, conds) in groups {
            for c in conds.as_array().into_iter().flatten() {
                rows.push([
                    s(&item["cluster"]),
                    s(&obj["kind"]),
                    object.clone(),
                    scope.clone(),
                    s(&c["type"]),
                    s(&c["status"]),
                    s(&c["reason"]),
                    c["observedGeneration"]
                        .as_i64()
                        .map(|g| g.to_string())
                        .unwrap_or_default(),
                ]);
            }
        }
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn call(a: &CtlArgs) -> Result<Value> {
    let (method, path, body, leader_only) = match &a.command {
        CtlCommand::Status { .. } => bail!("ctl status prints a table (see `run`)"),
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
    send(a, method, path, body, leader_only).await
}

/// One request, to whichever of the `--api` nodes answers (the leader for `leader_only`).
async fn send(
    a: &CtlArgs,
    method: Method,
    path: String,
    body: Option<Value>,
    leader_only: bool,
) -> Result<Value> {
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

#[cfg(test)]
mod tests {
    use super::status_table;
    use serde_json::json;

    #[test]
    fn the_status_table_has_a_line_per_condition_with_its_scope() {
        let items = vec![
            json!({"cluster": "east", "object": {"kind": "HTTPRoute",
                "metadata": {"name": "r1", "namespace": "app"},
                "status": {"parents": [{"parentRef": {"kind": "Gateway", "namespace": "infra", "name": "gw"},
                    "conditions": [
                        {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 2},
                        {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "observedGeneration": 2}]}]}}}),
            json!({"cluster": "east", "object": {"kind": "GatewayClass", "metadata": {"name": "eg"},
                "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}}}),
        ];
        let t = status_table(&items);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert_eq!(
            lines[0],
            ["CLUSTER", "KIND", "OBJECT", "FOR", "TYPE", "STATUS", "REASON", "GEN"]
        );
        assert_eq!(
            lines[2],
            [
                "east",
                "HTTPRoute",
                "app/r1",
                "Gateway",
                "infra/gw",
                "ResolvedRefs",
                "False",
                "BackendNotFound",
                "2"
            ]
        );
        assert_eq!(
            lines[3],
            ["east", "GatewayClass", "eg", "Accepted", "True", "Accepted"]
        );
    }
}
