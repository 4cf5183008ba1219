//! State-of-the-world ADS: one task per stream.
//!
//! Per type URL a response carries the whole set: every resource of the type for wildcard
//! types (clusters, listeners), the requested names for the others (routes, endpoints).
//! `version_info` is a stable hash of the set, so an unchanged set is not resent; an ACK is a
//! request whose version and nonce match the last response; requests with an older nonce are
//! stale and ignored, as the xDS protocol says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    is_wildcard_type, type_rank, valid_type_url, Ctx, Fnv, Out, MAX_NAMES_PER_TYPE,
    MAX_TYPES_PER_STREAM,
};
use crate::cache::{GatewaySnapshot, Res};

type Tx = mpsc::Sender<Out<DiscoveryResponse>>;

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    last_version: Option<String>,
    last_nonce: Option<String>,
    acked_version: Option<String>,
    rejected_version: Option<String>,
    must_reply: bool,
}

pub(crate) struct Stream {
    ctx: Ctx,
    gateway: String,
    snapshot: GatewaySnapshot,
    types: BTreeMap<String, TypeState>,
    next_nonce: u64,
}

impl super::Protocol for Stream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn node(req: &DiscoveryRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn open(ctx: Ctx, gateway: String, snapshot: GatewaySnapshot) -> Self {
        Stream {
            ctx,
            gateway,
            snapshot,
            types: BTreeMap::new(),
            next_nonce: 1,
        }
    }

    fn on_request(&mut self, req: DiscoveryRequest) {
        Stream::on_request(self, req)
    }

    fn on_snapshot(&mut self, snapshot: GatewaySnapshot) {
        self.snapshot = snapshot;
    }

    async fn flush(&mut self, tx: &Tx) -> bool {
        Stream::flush(self, tx).await
    }
}

impl Stream {
    fn on_request(&mut self, req: DiscoveryRequest) {
        let DiscoveryRequest {
            version_info,
            resource_names,
            type_url,
            response_nonce,
            error_detail,
            ..
        } = req;
        if !valid_type_url(&type_url) {
            warn!(type_url = %type_url.escape_debug(), "ignoring sotw request with an invalid type_url");
            return;
        }
        let mut names = BTreeSet::new();
        for name in resource_names.into_iter().filter(|n| n != "*") {
            if names.len() >= MAX_NAMES_PER_TYPE {
                // Each request replaces the set, but 16 types of millions of names (a 4 MiB
                // request each) would hold gigabytes for one stream.
                warn!(type_url = %type_url, "too many resource names, ignoring the rest");
                break;
            }
            names.insert(name);
        }
        let Some(ts) = self.types.get_mut(&type_url) else {
            if self.types.len() >= MAX_TYPES_PER_STREAM {
                warn!(type_url = %type_url, "ignoring sotw request: too many types on one stream");
                return;
            }
            let ts = TypeState {
                wildcard: is_wildcard_type(&type_url) && names.is_empty(),
                names,
                must_reply: true,
                ..Default::default()
            };
            self.types.insert(type_url, ts);
            return;
        };
        if !response_nonce.is_empty() && ts.last_nonce.as_deref() != Some(response_nonce.as_str()) {
            debug!(type_url = %type_url, nonce = %response_nonce, "ignoring stale request");
            return;
        }
        if !response_nonce.is_empty() {
            if let Some(detail) = error_detail {
                self.ctx.stats.nack();
                warn!(
                    gateway = %self.gateway,
                    type_url = %type_url,
                    version = ?ts.last_version,
                    still_acked = ?ts.acked_version,
                    names = ?ts.names,
                    code = detail.code,
                    message = %detail.message,
                    "proxy rejected resources (NACK)"
                );
                ts.rejected_version = ts.last_version.clone();
            } else if ts.last_version.as_deref() == Some(version_info.as_str()) {
                self.ctx.stats.ack();
                ts.acked_version = Some(version_info);
            }
        }
        if !ts.wildcard && names != ts.names {
            ts.names = names;
            ts.must_reply = true;
        }
    }

    /// Sends every type whose set changed (or that awaits an answer), clusters first.
    async fn flush(&mut self, tx: &Tx) -> bool {
        let snapshot = self.snapshot.clone();
        let revision = snapshot
            .as_ref()
            .map_or_else(|| self.ctx.cache.revision(), |s| s.revision);
        let mut order: Vec<&String> = self.types.keys().collect();
        order.sort_by_key(|t| (type_rank(t), *t));
        let order: Vec<String> = order.into_iter().cloned().collect();
        for type_url in order {
            let Some(ts) = self.types.get_mut(&type_url) else {
                continue;
            };
            let res_map = snapshot.as_ref().and_then(|s| s.of_type(&type_url));
            let selected: Vec<(&Arc<str>, &Arc<Res>)> = match res_map {
                None => Vec::new(),
                Some(m) if ts.wildcard => m.iter().collect(),
                Some(m) => ts
                    .names
                    .iter()
                    .filter_map(|n| m.get_key_value(n.as_str()))
                    .collect(),
            };
            let mut h = Fnv::new();
            for (name, res) in &selected {
                h.write(name.as_bytes());
                h.write(res.version.as_bytes());
            }
            let version = h.finish();
            if !ts.must_reply
                && (ts.last_version.as_ref() == Some(&version)
                    || ts.rejected_version.as_ref() == Some(&version))
            {
                continue;
            }
            ts.must_reply = false;
            let nonce = self.next_nonce.to_string();
            self.next_nonce += 1;
            let resources = selected
                .iter()
                .map(|(_, res)| Any {
                    type_url: type_url.clone(),
                    value: res.body.to_vec(),
                })
                .collect();
            ts.last_version = Some(version.clone());
            ts.last_nonce = Some(nonce.clone());
            let resp = DiscoveryResponse {
                version_info: version,
                resources,
                type_url: type_url.clone(),
                nonce,
                ..Default::default()
            };
            debug!(type_url = %type_url, nonce = %resp.nonce, resources = resp.resources.len(), revision, "sending sotw response");
            if tx.send(Ok(Box::new(resp))).await.is_err() {
                return false;
            }
            self.ctx.stats.served(revision);
        }
        true
    }
}

#[cfg(test)]
impl Stream {
    /// Every type's state, for the fuzz pass (a state-of-the-world stream has at most the last
    /// response in flight).
    pub(super) fn tracked(&self) -> Vec<super::Tracked> {
        self.types
            .iter()
            .map(|(type_url, ts)| super::Tracked {
                type_url: type_url.clone(),
                wildcard: ts.wildcard,
                names: ts.names.iter().cloned().collect(),
                in_flight: usize::from(ts.last_nonce.is_some()),
                versions: 0,
            })
            .collect()
    }
}
