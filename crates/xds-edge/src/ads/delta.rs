//! Incremental (delta) ADS: one task per stream.
//!
//! Per type URL the stream tracks what the proxy subscribed to (wildcard and/or names), the
//! versions the proxy has ACKed, the versions it has or will have (`sent` = acked overlaid
//! with in-flight responses), each in-flight response by nonce, and the versions it rejected.
//! On a change of its gateway (or a new subscription) the stream diffs the gateway's state
//! against `sent` and sends only what differs; an ACK commits a nonce's versions, a NACK keeps
//! the old ones and remembers the rejected version so it is not resent in a loop.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    is_wildcard_type, removal_is_late, type_rank, valid_type_url, Ctx, Out, MAX_IN_FLIGHT_PER_TYPE,
    MAX_NAMES_PER_TYPE, MAX_TYPES_PER_STREAM,
};
use crate::cache::{GatewaySnapshot, Res};

type Tx = mpsc::Sender<Out<DeltaDiscoveryResponse>>;
/// One entry of an in-flight response: a name and the version sent (`None` = removal).
type Entry = (Arc<str>, Option<Arc<str>>);
/// One response to build: type, resources to add, names to remove.
type Message = (Arc<str>, Vec<(Arc<str>, Arc<Res>)>, Vec<Arc<str>>);

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<Arc<str>>,
    /// Versions the proxy has confirmed.
    acked: HashMap<Arc<str>, Arc<str>>,
    /// Versions the proxy has or will have: `acked` overlaid with in-flight responses.
    sent: HashMap<Arc<str>, Arc<str>>,
    /// Last version the proxy rejected, per name; never resent.
    rejected: HashMap<Arc<str>, Arc<str>>,
    in_flight: VecDeque<(u64, Vec<Entry>)>,
    /// Newly subscribed names to report as absent if they do not exist.
    newly: Vec<Arc<str>>,
    /// The proxy waits for an answer (first request of the type), even an empty one.
    must_reply: bool,
    dirty: bool,
}

struct Diff {
    type_url: Arc<str>,
    adds: Vec<(Arc<str>, Arc<Res>)>,
    removes: Vec<Arc<str>>,
    must_reply: bool,
}

pub(crate) struct Stream {
    ctx: Ctx,
    gateway: String,
    snapshot: GatewaySnapshot,
    types: BTreeMap<Arc<str>, TypeState>,
    next_nonce: u64,
}

impl super::Protocol for Stream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn node(
        req: &DeltaDiscoveryRequest,
    ) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
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

    fn on_request(&mut self, req: DeltaDiscoveryRequest) {
        Stream::on_request(self, req)
    }

    fn on_snapshot(&mut self, snapshot: GatewaySnapshot) {
        self.snapshot = snapshot;
        for ts in self.types.values_mut() {
            ts.dirty = true;
        }
    }

    async fn flush(&mut self, tx: &Tx) -> bool {
        Stream::flush(self, tx).await
    }
}

impl Stream {
    fn on_request(&mut self, req: DeltaDiscoveryRequest) {
        let DeltaDiscoveryRequest {
            type_url,
            resource_names_subscribe,
            resource_names_unsubscribe,
            initial_resource_versions,
            response_nonce,
            error_detail,
            ..
        } = req;
        if !valid_type_url(&type_url) {
            warn!(type_url = %type_url.escape_debug(), "ignoring delta request with an invalid type_url");
            return;
        }
        let first = !self.types.contains_key(type_url.as_str());
        if first && self.types.len() >= MAX_TYPES_PER_STREAM {
            warn!(type_url = %type_url, "ignoring delta request: too many types on one stream");
            return;
        }
        let key: Arc<str> = match self.types.get_key_value(type_url.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(type_url.as_str()),
        };
        let ts = self.types.entry(key.clone()).or_default();

        // ACK / NACK of an earlier response.
        if !response_nonce.is_empty() {
            let entries = response_nonce.parse::<u64>().ok().and_then(|n| {
                let pos = ts.in_flight.iter().position(|(nonce, _)| *nonce == n)?;
                ts.in_flight.remove(pos).map(|(_, e)| e)
            });
            match (error_detail, entries) {
                (None, Some(entries)) => {
                    self.ctx.stats.ack();
                    for (name, v) in entries {
                        match v {
                            Some(v) => {
                                ts.acked.insert(name, v);
                            }
                            None => {
                                ts.acked.remove(&name);
                            }
                        }
                    }
                }
                (None, None) => {
                    debug!(type_url = %key, nonce = %response_nonce, "ACK of an unknown nonce")
                }
                (Some(detail), entries) => {
                    self.ctx.stats.nack();
                    let entries = entries.unwrap_or_default();
                    let names: Vec<&str> = entries.iter().map(|(n, _)| &**n).collect();
                    warn!(
                        gateway = %self.gateway,
                        type_url = %key,
                        nonce = %response_nonce,
                        names = ?names,
                        code = detail.code,
                        message = %detail.message,
                        "proxy rejected resources (NACK)"
                    );
                    for (name, v) in &entries {
                        let Some(v) = v else { continue };
                        ts.rejected.insert(name.clone(), v.clone());
                        if ts.sent.get(name) == Some(v) {
                            match ts.acked.get(name) {
                                Some(a) => ts.sent.insert(name.clone(), a.clone()),
                                None => ts.sent.remove(name),
                            };
                        }
                    }
                }
            }
        }

        // Subscription changes.
        if first {
            ts.wildcard = resource_names_subscribe.is_empty() && is_wildcard_type(&type_url);
            if initial_resource_versions.len() > MAX_NAMES_PER_TYPE {
                // They would be kept (as acked and sent) until the proxy ACKs their removal.
                warn!(type_url = %key, count = initial_resource_versions.len(), "too many initial resource versions, ignoring the rest");
            }
            let initial = initial_resource_versions
                .into_iter()
                .take(MAX_NAMES_PER_TYPE);
            for (name, version) in initial {
                let name: Arc<str> = name.into();
                let version: Arc<str> = version.into();
                ts.acked.insert(name.clone(), version.clone());
                ts.sent.insert(name, version);
            }
            ts.must_reply = true;
            ts.dirty = true;
        }
        for name in resource_names_subscribe {
            if name == "*" {
                ts.dirty |= !ts.wildcard;
                ts.wildcard = true;
            } else if !ts.names.contains(name.as_str()) {
                if ts.names.len() >= MAX_NAMES_PER_TYPE {
                    warn!(type_url = %key, "too many subscribed names, ignoring the rest");
                    break;
                }
                let name: Arc<str> = name.into();
                ts.names.insert(name.clone());
                ts.newly.push(name);
                ts.dirty = true;
            }
        }
        for name in resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
            } else {
                ts.names.remove(name.as_str());
            }
        }
        if !ts.wildcard {
            // The proxy drops what it no longer subscribes to; forget it too.
            let names = &ts.names;
            ts.sent.retain(|n, _| names.contains(n));
            ts.acked.retain(|n, _| names.contains(n));
            ts.rejected.retain(|n, _| names.contains(n));
        }
    }

    /// Sends what every dirty type needs, in make-before-break order. False if the proxy is
    /// gone.
    async fn flush(&mut self, tx: &Tx) -> bool {
        let snapshot = self.snapshot.clone();
        let mut diffs: Vec<Diff> = Vec::new();
        for (type_url, ts) in &mut self.types {
            if !ts.dirty {
                continue;
            }
            ts.dirty = false;
            let res_map = snapshot.as_ref().and_then(|s| s.of_type(type_url));
            let diff = diff_type(type_url, ts, res_map);
            ts.must_reply = false;
            if !diff.adds.is_empty() || !diff.removes.is_empty() || diff.must_reply {
                diffs.push(diff);
            }
        }
        if diffs.is_empty() {
            return true;
        }
        diffs.sort_by(|a, b| {
            (type_rank(&a.type_url), &a.type_url).cmp(&(type_rank(&b.type_url), &b.type_url))
        });
        let revision = snapshot
            .as_ref()
            .map_or_else(|| self.ctx.cache.revision(), |s| s.revision);

        // Additions (and removals of listeners/routes) first; removals of what they use last.
        // Splitting only matters when listeners/routes are part of this push.
        let split = diffs.iter().any(|d| !removal_is_late(&d.type_url));
        let mut out: Vec<Message> = Vec::new();
        let mut late: Vec<(Arc<str>, Vec<Arc<str>>)> = Vec::new();
        for d in diffs {
            if split && removal_is_late(&d.type_url) && !d.removes.is_empty() {
                if !d.adds.is_empty() {
                    out.push((d.type_url.clone(), d.adds, Vec::new()));
                }
                late.push((d.type_url, d.removes));
            } else {
                out.push((d.type_url, d.adds, d.removes));
            }
        }
        out.extend(late.into_iter().map(|(t, r)| (t, Vec::new(), r)));

        for (type_url, adds, removes) in out {
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            let Some(ts) = self.types.get_mut(&type_url) else {
                continue;
            };
            let mut entries: Vec<Entry> = Vec::with_capacity(adds.len() + removes.len());
            let mut resources = Vec::with_capacity(adds.len());
            for (name, res) in adds {
                ts.sent.insert(name.clone(), res.version.clone());
                if ts.rejected.get(&name).is_some_and(|v| *v != res.version) {
                    ts.rejected.remove(&name);
                }
                resources.push(Resource {
                    name: name.to_string(),
                    version: res.version.to_string(),
                    resource: Some(Any {
                        type_url: type_url.to_string(),
                        value: res.body.to_vec(),
                    }),
                    ..Default::default()
                });
                entries.push((name, Some(res.version.clone())));
            }
            let mut removed_resources = Vec::with_capacity(removes.len());
            for name in removes {
                ts.sent.remove(&name);
                ts.rejected.remove(&name);
                removed_resources.push(name.to_string());
                entries.push((name, None));
            }
            ts.in_flight.push_back((nonce, entries));
            if ts.in_flight.len() > MAX_IN_FLIGHT_PER_TYPE {
                ts.in_flight.pop_front();
            }
            let resp = DeltaDiscoveryResponse {
                system_version_info: revision.to_string(),
                resources,
                type_url: type_url.to_string(),
                removed_resources,
                nonce: nonce.to_string(),
                ..Default::default()
            };
            debug!(
                type_url = %type_url,
                nonce,
                resources = resp.resources.len(),
                removed = resp.removed_resources.len(),
                revision,
                "sending delta response"
            );
            if tx.send(Ok(Box::new(resp))).await.is_err() {
                return false;
            }
            self.ctx.stats.served(revision);
        }
        true
    }
}

/// What one type needs: resources whose version differs from what the proxy has (and that it
/// did not reject), and subscribed names that vanished (or never existed).
fn diff_type(
    type_url: &Arc<str>,
    ts: &mut TypeState,
    res_map: Option<&BTreeMap<Arc<str>, Arc<Res>>>,
) -> Diff {
    let empty = BTreeMap::new();
    let res_map = res_map.unwrap_or(&empty);
    let mut adds = Vec::new();
    let mut consider = |name: &Arc<str>, res: &Arc<Res>| {
        if ts.sent.get(name).is_some_and(|v| *v == res.version)
            || ts.rejected.get(name).is_some_and(|v| *v == res.version)
        {
            return;
        }
        adds.push((name.clone(), res.clone()));
    };
    if ts.wildcard {
        for (name, res) in res_map {
            consider(name, res);
        }
    }
    for name in &ts.names {
        if ts.wildcard && res_map.contains_key(name) {
            continue;
        }
        if let Some((name, res)) = res_map.get_key_value(name) {
            consider(name, res);
        }
    }
    let mut removes: Vec<Arc<str>> = ts
        .sent
        .keys()
        .filter(|n| !res_map.contains_key(*n))
        .cloned()
        .collect();
    for name in ts.newly.drain(..) {
        if !res_map.contains_key(&name) && !ts.sent.contains_key(&name) && ts.names.contains(&name)
        {
            removes.push(name);
        }
    }
    removes.sort();
    removes.dedup();
    ts.rejected.retain(|n, _| res_map.contains_key(n));
    Diff {
        type_url: type_url.clone(),
        adds,
        removes,
        must_reply: ts.must_reply,
    }
}

#[cfg(test)]
impl Stream {
    /// Every type's state, for the fuzz pass.
    pub(super) fn tracked(&self) -> Vec<super::Tracked> {
        self.types
            .iter()
            .map(|(type_url, ts)| super::Tracked {
                type_url: type_url.to_string(),
                wildcard: ts.wildcard,
                names: ts.names.iter().map(|n| n.to_string()).collect(),
                in_flight: ts.in_flight.len(),
                versions: ts.acked.len().max(ts.sent.len()),
            })
            .collect()
    }
}
