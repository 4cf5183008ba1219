//! HTTP calls the harness makes: the stores' REST API, the edges' admin `/stats`,
//! nats-server's monitoring `/jsz`, Envoy's admin `/config_dump`.

use crate::fold::{resources_from_list, StoreDigest};
use serde_json::Value;
use std::time::Duration;

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Http(reqwest::Client, &'static str);

impl Http {
    pub fn new() -> Result<Self, String> {
        reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .build()
            .map(|c| Http(c, "http"))
            .map_err(|e| e.to_string())
    }

    /// HTTPS to Flotilla's ports, trusting the CA in `ca_pem` and presenting the client
    /// certificate and key in `identity_pem` (a reader's: the API reads need nothing more).
    pub fn with_ca(ca_pem: &[u8], identity_pem: &[u8]) -> Result<Self, String> {
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(|e| e.to_string())?;
        let id = reqwest::Identity::from_pem(identity_pem).map_err(|e| e.to_string())?;
        reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(id)
            .build()
            .map(|c| Http(c, "https"))
            .map_err(|e| e.to_string())
    }

    /// The URL of `path` on a Flotilla port at `addr` (HTTPS when the parts have certificates).
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.1)
    }

    /// GET `url` as JSON; `Err` names the URL and what went wrong.
    pub async fn json(&self, url: &str) -> Result<Value, String> {
        let r = self
            .0
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let code = r.status();
        let body = r.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !code.is_success() {
            return Err(format!("GET {url}: {code}: {}", truncate(&body, 200)));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Status code of GET `url` (0 when unreachable).
    pub async fn status(&self, url: &str) -> u16 {
        match self.0.get(url).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// `/api/v1/revision` of a store (or standalone) API.
    pub async fn revision(&self, api: &str) -> Result<Revision, String> {
        let v = self.json(&self.url(api, "/api/v1/revision")).await?;
        Ok(Revision {
            revision: v["revision"].as_u64().unwrap_or(0),
            ready: v["ready"].as_bool().unwrap_or(false),
            leader: v["leader"].as_u64(),
            last_seq: v["lastSeq"].as_u64(),
            events_applied: v["eventsApplied"].as_u64(),
        })
    }

    /// `/api/v1/digest`, or the digest of `/api/v1/resources` where the store has no digest
    /// endpoint yet (404).
    pub async fn digest(&self, api: &str) -> Result<StoreDigest, String> {
        let url = self.url(api, "/api/v1/digest");
        match self.json(&url).await {
            Ok(v) => Ok(StoreDigest {
                revision: v["revision"].as_u64().unwrap_or(0),
                digest: v["digest"].as_str().unwrap_or_default().to_string(),
                resources: v["resources"].as_u64().unwrap_or(0) as usize,
                source: "digest",
            }),
            Err(e) if e.contains("404") => {
                let v = self.json(&self.url(api, "/api/v1/resources")).await?;
                let map = resources_from_list(&v)?;
                let (digest, resources) = crate::fold::digest(&map);
                Ok(StoreDigest {
                    revision: v["revision"].as_u64().unwrap_or(0),
                    digest,
                    resources,
                    source: "resources",
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The resources a store holds (`/api/v1/resources`, computed status removed).
    pub async fn resources(
        &self,
        api: &str,
    ) -> Result<std::collections::BTreeMap<flotilla_model::ResourceKey, Value>, String> {
        let v = self.json(&self.url(api, "/api/v1/resources")).await?;
        resources_from_list(&v)
    }

    /// `/api/v1/gateways`: gateway id -> [(type_url, name, version)].
    pub async fn gateways(&self, api: &str) -> Result<(u64, Gateways), String> {
        let v = self.json(&self.url(api, "/api/v1/gateways")).await?;
        let mut out = Gateways::new();
        for g in v["gateways"].as_array().into_iter().flatten() {
            let id = g["gateway"].as_str().unwrap_or_default().to_string();
            let res = g["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["typeUrl"].as_str().unwrap_or_default().to_string(),
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["version"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            out.insert(id, res);
        }
        Ok((v["revision"].as_u64().unwrap_or(0), out))
    }

    /// (messages, last sequence) of `stream`, from nats-server's monitoring port.
    pub async fn stream_state(&self, monitor: u16, stream: &str) -> Result<(u64, u64), String> {
        let v = self
            .json(&format!(
                "http://127.0.0.1:{monitor}/jsz?accounts=true&streams=true"
            ))
            .await?;
        let streams = v["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default());
        for st in streams {
            if st["name"] == stream {
                let s = &st["state"];
                return Ok((
                    s["messages"].as_u64().unwrap_or(0),
                    s["last_seq"].as_u64().unwrap_or(0),
                ));
            }
        }
        Err(format!("nats-server reports no stream {stream}"))
    }
}

pub type Gateways = std::collections::BTreeMap<String, Vec<(String, String, String)>>;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Revision {
    pub revision: u64,
    pub ready: bool,
    pub leader: Option<u64>,
    pub last_seq: Option<u64>,
    pub events_applied: Option<u64>,
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
