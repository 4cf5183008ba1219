//! A simulated proxy: one gRPC connection and one ADS stream, speaking delta (or
//! state-of-the-world) xDS the way Envoy 1.40 does.
//!
//! Delta: wildcard CDS and LDS first (empty `resource_names_subscribe`), then RDS by the route
//! configuration names the received Listeners' HTTP connection managers name, and EDS by the
//! service names of the received EDS Clusters. Every response is ACKed with its nonce (or
//! NACKed: in NACK mode, or when a resource does not decode, as Envoy would). On stream loss
//! the proxy reconnects to the next edge of its list and announces what it holds in
//! `initial_resource_versions`.
//!
//! SotW: the same subscriptions as full sets; ACK = version_info + nonce of the response.

use crate::decode::{newest_by_route, DecodeCache, Decoded, ResType};
use crate::intern::Sym;
use crate::recorder::{ProxyRecord, Received, Recorder};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// Requests queued towards the edge. A response produces at most three requests (ACK and one
/// subscription change per by-name type), and the proxy waits for each send, so a few slots
/// are plenty.
const REQUEST_BUFFER: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Largest response accepted (Envoy accepts far more than tonic's 4 MiB default).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Delta,
    Sotw,
}

/// Which responses a proxy rejects (tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NackMode {
    #[default]
    Never,
    /// Every response of these types.
    Types(Vec<ResType>),
}

impl NackMode {
    fn rejects(&self, ty: ResType) -> bool {
        match self {
            NackMode::Never => false,
            NackMode::Types(t) => t.contains(&ty),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProxySpec {
    pub id: u32,
    /// `CLUSTER/NAMESPACE/NAME`, sent as `node.cluster`.
    pub gateway: String,
    /// The gateway's proxy token, sent on every stream.
    pub token: String,
    pub protocol: Protocol,
    pub nack: NackMode,
    /// Edge xDS addresses (HOST:PORT); the proxy starts at `first_edge` and moves on.
    pub edges: Arc<Vec<String>>,
    pub first_edge: usize,
}

/// Shared by all proxies of a run.
#[derive(Clone)]
pub struct Shared {
    pub recorder: Arc<Recorder>,
    pub cache: Arc<DecodeCache>,
    /// Bounds concurrent connection attempts: a storm of 10k SYNs overflows the edge's
    /// listen backlog (seen at 5k+), so at most this many handshakes run at once.
    pub connect_permits: Arc<Semaphore>,
    /// Dials the edges: plaintext, or TLS when the run's parts have certificates.
    pub connector: flotilla_net::Connector,
}

/// Runs the proxy until `shutdown`.
pub async fn run(spec: ProxySpec, shared: Shared, shutdown: CancellationToken) {
    let mut edge = spec.first_edge;
    let mut backoff = BACKOFF_START;
    let mut delta = DeltaSubs::default();
    let mut sotw = SotwState::default();
    let mut attempt: u64 = 0;
    while !shutdown.is_cancelled() {
        let addr = spec.edges[edge % spec.edges.len().max(1)].clone();
        let outcome = tokio::select! {
            () = shutdown.cancelled() => break,
            r = session(&spec, &shared, &addr, &mut delta, &mut sotw) => r,
        };
        attempt += 1;
        match outcome {
            Ok(true) => backoff = BACKOFF_START,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(proxy = spec.id, edge = %addr, error = %e, "proxy session failed")
            }
        }
        edge += 1;
        // Jitter from the id and attempt, so reconnects after an edge dies spread out.
        let jitter = Duration::from_millis((u64::from(spec.id) * 7919 + attempt * 104_729) % 100);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection + stream. `Ok(true)`: the stream got at least one response before ending.
async fn session(
    spec: &ProxySpec,
    shared: &Shared,
    addr: &str,
    delta: &mut DeltaSubs,
    sotw: &mut SotwState,
) -> Result<bool, String> {
    let channel = {
        let _permit = shared
            .connect_permits
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_with_connector(shared.connector.clone().connect_timeout(CONNECT_TIMEOUT))
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?
    };
    let client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    match spec.protocol {
        Protocol::Delta => delta_session(spec, shared, client, delta).await,
        Protocol::Sotw => sotw_session(spec, shared, client, sotw).await,
    }
}

/// A stream request carrying the proxy's gateway token, as Envoy sends it from its bootstrap.
fn with_token<T>(spec: &ProxySpec, stream: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(stream);
    if let Ok(v) = spec.token.parse() {
        req.metadata_mut()
            .insert(flotilla_net::auth::PROXY_TOKEN_HEADER, v);
    }
    req
}

fn node(spec: &ProxySpec) -> Node {
    Node {
        id: format!("loadtest-{}", spec.id),
        cluster: spec.gateway.clone(),
        ..Default::default()
    }
}

struct Connected<'a>(&'a Recorder);

impl<'a> Connected<'a> {
    fn new(r: &'a Recorder, proxy: u32) -> Self {
        r.connected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        r.proxy(proxy).connects += 1;
        Connected(r)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0
            .connected
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- delta

/// By-name subscriptions (EDS, RDS) kept across reconnects.
#[derive(Debug, Default)]
struct DeltaSubs {
    names: [BTreeSet<Sym>; 4],
}

async fn delta_session(
    spec: &ProxySpec,
    shared: &Shared,
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    subs: &mut DeltaSubs,
) -> Result<bool, String> {
    let rec = &shared.recorder;
    let interner = shared.cache.interner().clone();
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(REQUEST_BUFFER);
    for r in delta_initial(spec, rec, &interner, subs) {
        tx.send(r).await.map_err(|e| e.to_string())?;
    }
    let mut inbound = client
        .delta_aggregated_resources(with_token(spec, ReceiverStream::new(rx)))
        .await
        .map_err(|e| format!("open delta stream: {e}"))?
        .into_inner();
    let _connected = Connected::new(rec, spec.id);
    let mut got_any = false;
    let result = loop {
        let resp = match inbound.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break Ok(got_any),
            Err(e) => break Err(format!("delta stream: {e}")),
        };
        got_any = true;
        let requests = on_delta_response(spec, shared, subs, resp);
        for r in requests {
            if tx.send(r).await.is_err() {
                return Ok(got_any);
            }
        }
    };
    rec.proxy(spec.id).disconnects += 1;
    result
}

/// The first requests of a stream, in Envoy's order (CDS, LDS, then the by-name types it
/// already subscribes to), announcing what the proxy holds.
fn delta_initial(
    spec: &ProxySpec,
    rec: &Recorder,
    interner: &crate::intern::Interner,
    subs: &DeltaSubs,
) -> Vec<DeltaDiscoveryRequest> {
    let mut first = true;
    let mut initial = Vec::new();
    let p = rec.proxy(spec.id);
    for ty in [
        ResType::Cluster,
        ResType::Listener,
        ResType::Endpoint,
        ResType::Route,
    ] {
        if ty.by_name() && subs.names[ty as usize].is_empty() {
            continue;
        }
        let initial_resource_versions = p
            .held(ty)
            .iter()
            .map(|(n, v)| {
                (
                    interner.resolve(*n).to_string(),
                    interner.resolve(*v).to_string(),
                )
            })
            .collect();
        let resource_names_subscribe = subs.names[ty as usize]
            .iter()
            .map(|n| interner.resolve(*n).to_string())
            .collect();
        initial.push(DeltaDiscoveryRequest {
            node: first.then(|| node(spec)),
            type_url: ty.url().to_string(),
            resource_names_subscribe,
            initial_resource_versions,
            ..Default::default()
        });
        first = false;
    }
    initial
}

/// Applies one delta response; returns the requests to send (ACK/NACK first, then
/// subscription changes).
fn on_delta_response(
    spec: &ProxySpec,
    shared: &Shared,
    subs: &mut DeltaSubs,
    resp: DeltaDiscoveryResponse,
) -> Vec<DeltaDiscoveryRequest> {
    let rec = &shared.recorder;
    let cache = &shared.cache;
    let interner = cache.interner();
    let bytes = resp.encoded_len() as u64;
    let Some(ty) = ResType::from_url(&resp.type_url) else {
        // A type we never asked for: ACK it so the server does not wait on us.
        return vec![DeltaDiscoveryRequest {
            type_url: resp.type_url,
            response_nonce: resp.nonce,
            ..Default::default()
        }];
    };
    // The store revision; a response without one is not checked (and moves nothing).
    let revision = resp.system_version_info.parse::<u64>().ok();
    let mut adds = Vec::with_capacity(resp.resources.len());
    let mut invalid: Option<String> = None;
    for r in &resp.resources {
        let name = interner.intern(&r.name);
        let version = interner.intern(&r.version);
        let body = r.resource.as_ref().map_or(&[][..], |a| a.value.as_slice());
        let d = cache.get(ty, name, version, body);
        if let Decoded::Invalid(why) = &*d {
            invalid.get_or_insert_with(|| format!("{}: {why}", r.name));
        }
        adds.push((name, version));
    }
    let removes: Vec<Sym> = resp
        .removed_resources
        .iter()
        .map(|n| interner.intern(n))
        .collect();
    let nack = invalid.is_some() || spec.nack.rejects(ty);
    let at_ms = rec.now_ms() as u32;
    let mut out = Vec::with_capacity(3);
    let mut p = rec.proxy(spec.id);
    p.bytes += bytes;
    p.responses += 1;
    if let Some(r) = revision {
        rec.check_revision(spec.id, &mut p, ty, r);
    }
    let revision_or_0 = revision.unwrap_or(0);
    for &(name, version) in &adds {
        p.history.push(Received {
            ty,
            name,
            version,
            at_ms,
            revision: revision_or_0,
        });
    }
    for &name in &removes {
        p.history.push(Received {
            ty,
            name,
            version: Sym::EMPTY,
            at_ms,
            revision: revision_or_0,
        });
    }
    if nack {
        p.nacks += 1;
        drop(p);
        out.push(DeltaDiscoveryRequest {
            type_url: resp.type_url,
            response_nonce: resp.nonce,
            error_detail: Some(RpcStatus {
                code: 3, // INVALID_ARGUMENT, as Envoy reports a rejected config
                message: invalid.unwrap_or_else(|| "rejected by the loadtest NACK mode".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        return out;
    }
    p.acks += 1;
    p.max_acked_revision = p.max_acked_revision.max(revision_or_0);
    {
        let held = p.held_mut(ty);
        for (name, version) in adds {
            held.insert(name, version);
        }
        for name in removes {
            held.remove(&name);
        }
    }
    out.push(DeltaDiscoveryRequest {
        type_url: resp.type_url,
        response_nonce: resp.nonce,
        ..Default::default()
    });
    match ty {
        ResType::Listener | ResType::Cluster => {
            let (dep, want) = wanted_names(ty, &p, cache);
            let have = &mut subs.names[dep as usize];
            let subscribe: Vec<Sym> = want.difference(have).copied().collect();
            let unsubscribe: Vec<Sym> = have.difference(&want).copied().collect();
            if !subscribe.is_empty() || !unsubscribe.is_empty() {
                // The proxy drops what it no longer subscribes to.
                let held = p.held_mut(dep);
                for n in &unsubscribe {
                    held.remove(n);
                }
                *have = want;
                out.push(DeltaDiscoveryRequest {
                    type_url: dep.url().to_string(),
                    resource_names_subscribe: subscribe
                        .iter()
                        .map(|n| interner.resolve(*n).to_string())
                        .collect(),
                    resource_names_unsubscribe: unsubscribe
                        .iter()
                        .map(|n| interner.resolve(*n).to_string())
                        .collect(),
                    ..Default::default()
                });
            }
            drop(p);
        }
        ResType::Route => {
            let newest = held_markers(&p, cache);
            drop(p);
            rec.routes_acked(spec.id, &newest);
        }
        ResType::Endpoint => drop(p),
    }
    out
}

/// The by-name type `ty`'s resources lead to (Listener → Route, Cluster → Endpoint) and the
/// names the held resources of `ty` need.
fn wanted_names(ty: ResType, p: &ProxyRecord, cache: &DecodeCache) -> (ResType, BTreeSet<Sym>) {
    let dep = if ty == ResType::Listener {
        ResType::Route
    } else {
        ResType::Endpoint
    };
    let mut want = BTreeSet::new();
    for (&name, &version) in p.held(ty) {
        match cache.lookup(ty, name, version).as_deref() {
            Some(Decoded::Listener { rds }) => want.extend(rds.iter().copied()),
            Some(Decoded::Cluster { eds: Some(e) }) => {
                want.insert(*e);
            }
            _ => {}
        }
    }
    (dep, want)
}

/// Newest marker per route over every route configuration the proxy holds.
fn held_markers(p: &ProxyRecord, cache: &DecodeCache) -> HashMap<u32, u64> {
    let mut all = Vec::new();
    for (&name, &version) in p.held(ResType::Route) {
        if let Some(Decoded::Routes { markers }) =
            cache.lookup(ResType::Route, name, version).as_deref()
        {
            all.extend_from_slice(markers);
        }
    }
    newest_by_route(&all)
}

// ---------------------------------------------------------------- SotW

#[derive(Debug, Default)]
struct SotwType {
    names: BTreeSet<Sym>,
    acked_version: String,
    last_nonce: String,
}

#[derive(Debug, Default)]
struct SotwState {
    types: [SotwType; 4],
    /// SotW resources carry no version: version = content hash, decoded once per hash.
    started: [bool; 4],
}

async fn sotw_session(
    spec: &ProxySpec,
    shared: &Shared,
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    st: &mut SotwState,
) -> Result<bool, String> {
    let rec = &shared.recorder;
    let interner = shared.cache.interner().clone();
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(REQUEST_BUFFER);
    let mut first = true;
    st.started = [false; 4];
    for ty in [
        ResType::Cluster,
        ResType::Listener,
        ResType::Endpoint,
        ResType::Route,
    ] {
        let t = &mut st.types[ty as usize];
        if ty.by_name() && t.names.is_empty() {
            continue;
        }
        t.last_nonce.clear();
        let req = DiscoveryRequest {
            node: first.then(|| node(spec)),
            type_url: ty.url().to_string(),
            version_info: t.acked_version.clone(),
            resource_names: t
                .names
                .iter()
                .map(|n| interner.resolve(*n).to_string())
                .collect(),
            ..Default::default()
        };
        st.started[ty as usize] = true;
        first = false;
        tx.send(req).await.map_err(|e| e.to_string())?;
    }
    let mut inbound = client
        .stream_aggregated_resources(with_token(spec, ReceiverStream::new(rx)))
        .await
        .map_err(|e| format!("open sotw stream: {e}"))?
        .into_inner();
    let _connected = Connected::new(rec, spec.id);
    let mut got_any = false;
    let result = loop {
        let resp = match inbound.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break Ok(got_any),
            Err(e) => break Err(format!("sotw stream: {e}")),
        };
        got_any = true;
        for r in on_sotw_response(spec, shared, st, resp) {
            if tx.send(r).await.is_err() {
                return Ok(got_any);
            }
        }
    };
    rec.proxy(spec.id).disconnects += 1;
    result
}

fn on_sotw_response(
    spec: &ProxySpec,
    shared: &Shared,
    st: &mut SotwState,
    resp: DiscoveryResponse,
) -> Vec<DiscoveryRequest> {
    let rec = &shared.recorder;
    let cache = &shared.cache;
    let interner = cache.interner();
    let bytes = resp.encoded_len() as u64;
    let Some(ty) = ResType::from_url(&resp.type_url) else {
        return vec![DiscoveryRequest {
            type_url: resp.type_url,
            version_info: resp.version_info,
            response_nonce: resp.nonce,
            ..Default::default()
        }];
    };
    let mut set = HashMap::with_capacity(resp.resources.len());
    let mut invalid = None;
    for any in &resp.resources {
        let (name, version, d) = cache.get_sotw(ty, &any.value);
        if let Decoded::Invalid(why) = &*d {
            invalid.get_or_insert_with(|| why.clone());
        }
        set.insert(name, version);
    }
    let nack = invalid.is_some() || spec.nack.rejects(ty);
    let at_ms = rec.now_ms() as u32;
    let mut p = rec.proxy(spec.id);
    p.bytes += bytes;
    p.responses += 1;
    for (&name, &version) in &set {
        p.history.push(Received {
            ty,
            name,
            version,
            at_ms,
            revision: 0,
        });
    }
    let mut out = Vec::with_capacity(2);
    let t = &mut st.types[ty as usize];
    t.last_nonce = resp.nonce.clone();
    if nack {
        p.nacks += 1;
        out.push(DiscoveryRequest {
            type_url: resp.type_url,
            version_info: t.acked_version.clone(),
            response_nonce: resp.nonce,
            resource_names: t
                .names
                .iter()
                .map(|n| interner.resolve(*n).to_string())
                .collect(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: invalid.unwrap_or_else(|| "rejected by the loadtest NACK mode".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        return out;
    }
    p.acks += 1;
    // A SotW response is the whole set of the type (of the requested names for RDS/EDS).
    *p.held_mut(ty) = set;
    t.acked_version = resp.version_info.clone();
    out.push(DiscoveryRequest {
        type_url: resp.type_url,
        version_info: resp.version_info,
        response_nonce: resp.nonce,
        resource_names: t
            .names
            .iter()
            .map(|n| interner.resolve(*n).to_string())
            .collect(),
        ..Default::default()
    });
    match ty {
        ResType::Listener | ResType::Cluster => {
            let (dep, want) = wanted_names(ty, &p, cache);
            let dt = &mut st.types[dep as usize];
            if want != dt.names || (!want.is_empty() && !st.started[dep as usize]) {
                dt.names = want;
                let held = p.held_mut(dep);
                held.retain(|n, _| dt.names.contains(n));
                st.started[dep as usize] = true;
                out.push(DiscoveryRequest {
                    type_url: dep.url().to_string(),
                    version_info: dt.acked_version.clone(),
                    response_nonce: dt.last_nonce.clone(),
                    resource_names: dt
                        .names
                        .iter()
                        .map(|n| interner.resolve(*n).to_string())
                        .collect(),
                    ..Default::default()
                });
            }
            drop(p);
        }
        ResType::Route => {
            let newest = held_markers(&p, cache);
            drop(p);
            rec.routes_acked(spec.id, &newest);
        }
        ResType::Endpoint => drop(p),
    }
    out
}
