//! The Aggregated Discovery Service: both the incremental (delta) and the state-of-the-world
//! RPC. Each stream runs in its own task, owns its per-type protocol state and reads its
//! gateway's resources from the [`Cache`] through that gateway's `watch` channel; no lock is
//! held across a send, so a slow proxy only slows its own stream.
//!
//! # Proxy → gateway mapping
//! A proxy names its gateway in its Envoy node: `node.cluster = "CLUSTER/NAMESPACE/GATEWAY"`
//! (e.g. `east/infra/public`), the same id the store uses (`ResourceKey::gateway_id()`). The
//! node must be present in the first request of a stream; a missing node, an empty cluster or
//! one that is not exactly three non-empty `/`-separated parts fails the stream with
//! `INVALID_ARGUMENT`.
//!
//! xDS is served only once the cache has the store's full state: a stream opened earlier
//! waits, so a proxy that reconnects during an edge restart keeps its config instead of
//! receiving an empty one.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    aggregated_discovery_service_server::AggregatedDiscoveryService, DeltaDiscoveryRequest,
    DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::cache::Cache;
use crate::stats::StatsInner;
use flotilla_net::{Caller, ProxyAuth};

pub(crate) mod delta;
pub(crate) mod sotw;

/// What a delta and a state-of-the-world stream do differently; [`serve`] runs either.
pub(crate) trait Protocol: Sized + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// For log lines: "delta" or "sotw".
    const NAME: &'static str;
    fn node(req: &Self::Request) -> Option<&Node>;
    fn open(ctx: Ctx, gateway: String, snapshot: crate::cache::GatewaySnapshot) -> Self;
    fn on_request(&mut self, req: Self::Request);
    /// The gateway's resources changed.
    fn on_snapshot(&mut self, snapshot: crate::cache::GatewaySnapshot);
    /// Sends what the proxy needs; false when the stream is gone.
    fn flush(
        &mut self,
        tx: &mpsc::Sender<Out<Self::Response>>,
    ) -> impl std::future::Future<Output = bool> + Send;
}

/// One ADS stream: the first request names the gateway (in its node), then requests and
/// changes of the gateway are answered until the proxy, the edge or the gateway goes away.
pub(crate) async fn serve<P: Protocol>(
    ctx: Ctx,
    caller: Caller,
    mut inbound: Streaming<P::Request>,
    tx: mpsc::Sender<Out<P::Response>>,
) {
    let _guard = ctx.stats.stream_guard();
    let first = tokio::select! {
        r = inbound.message() => r,
        () = ctx.shutdown.cancelled() => return,
    };
    let first = match first {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            // E.g. a request over the size limit: the proxy is told why.
            tracing::warn!(error = %e, "{} stream failed before its first request", P::NAME);
            let _ = tx.send(Err(Box::new(e))).await;
            return;
        }
    };
    let gateway = match gateway_of(P::node(&first)) {
        Ok(g) => g,
        Err(status) => {
            tracing::warn!(message = status.message(), "rejecting {} stream", P::NAME);
            let _ = tx.send(Err(Box::new(status))).await;
            return;
        }
    };
    tracing::Span::current().record("gateway", gateway.as_str());
    // A proxy receives a gateway (its listeners' private keys included) only once it proved it
    // serves it; a refusal disturbs nothing else.
    if let Err(status) = ctx.proxy_auth.check(&caller, &gateway, &ctx.stats.denials) {
        let _ = tx.send(Err(Box::new(status))).await;
        return;
    }
    if !ctx.wait_synced().await {
        return;
    }
    let mut gw_rx = ctx.cache.subscribe(&gateway);
    let snapshot = gw_rx.borrow_and_update().clone();
    let mut stream = P::open(ctx.clone(), gateway.clone(), snapshot);
    tracing::debug!("{} stream open", P::NAME);
    stream.on_request(first);
    if stream.flush(&tx).await {
        loop {
            tokio::select! {
                r = inbound.message() => match r {
                    Ok(Some(req)) => {
                        stream.on_request(req);
                        if !stream.flush(&tx).await {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "{} stream failed", P::NAME);
                        let _ = tx.send(Err(Box::new(e))).await;
                        break;
                    }
                },
                r = gw_rx.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let snapshot = gw_rx.borrow_and_update().clone();
                    stream.on_snapshot(snapshot);
                    if !stream.flush(&tx).await {
                        break;
                    }
                }
                () = ctx.shutdown.cancelled() => break,
            }
        }
    }
    tracing::debug!("{} stream closed", P::NAME);
    drop(gw_rx);
    ctx.cache.release(&gateway);
}

/// Responses queued per stream before the stream task waits for the proxy to read. A few
/// suffice: one push is at most one response per type (~6), and the `watch` channel coalesces
/// further changes while the task waits, so a slow proxy costs memory of one state only.
pub(crate) const STREAM_RESPONSE_BUFFER: usize = 8;
/// Distinct type URLs one stream may subscribe to; bounds the per-stream state a garbage
/// client can create (Envoy uses at most ~8).
pub(crate) const MAX_TYPES_PER_STREAM: usize = 16;
/// Names one type of one stream may subscribe to, and initial versions it may claim (bounds
/// garbage clients; Envoy subscribes to one EDS name per cluster, far below this). Beyond it,
/// the rest of a request's names are ignored, with a warning.
pub(crate) const MAX_NAMES_PER_TYPE: usize = 65_536;
/// Unacknowledged responses remembered per type; older ones are forgotten (a proxy that does
/// not ACK must not grow our memory).
pub(crate) const MAX_IN_FLIGHT_PER_TYPE: usize = 16;
/// Largest discovery request accepted from a proxy: a subscription to every one of
/// `MAX_NAMES_PER_TYPE` names of ~60 bytes, with room to spare.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Largest response sent: a gateway's whole state of one type.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Longest type URL accepted.
pub(crate) const MAX_TYPE_URL_LEN: usize = 256;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Types whose empty first subscription means "everything" (legacy wildcard).
pub(crate) fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER_TYPE || type_url == LISTENER_TYPE
}

/// Push order (make before break): clusters, endpoints, secrets, listeners, routes, rest.
pub(crate) fn type_rank(type_url: &str) -> u8 {
    match type_url {
        CLUSTER_TYPE => 0,
        ENDPOINT_TYPE => 1,
        SECRET_TYPE => 2,
        LISTENER_TYPE => 3,
        ROUTE_TYPE => 4,
        _ => 5,
    }
}

/// Types whose removals are sent last, after listeners and routes stopped using them.
pub(crate) fn removal_is_late(type_url: &str) -> bool {
    matches!(type_url, CLUSTER_TYPE | ENDPOINT_TYPE | SECRET_TYPE)
}

/// A type URL we are willing to track; anything else is logged and ignored.
pub(crate) fn valid_type_url(type_url: &str) -> bool {
    type_url.len() <= MAX_TYPE_URL_LEN
        && type_url
            .strip_prefix("type.googleapis.com/")
            .is_some_and(|t| !t.is_empty() && !t.contains('/'))
}

/// Gateway id from the node: `node.cluster = "CLUSTER/NAMESPACE/GATEWAY"`.
pub fn gateway_of(node: Option<&Node>) -> Result<String, Status> {
    let Some(node) = node else {
        return Err(Status::invalid_argument(
            "the first xDS request must carry a node whose `cluster` names the gateway as \
             \"CLUSTER/NAMESPACE/GATEWAY\"",
        ));
    };
    let id = node.cluster.as_str();
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(Status::invalid_argument(format!(
            "node.cluster {id:?} (node id {:?}) does not name a gateway: expected \
             \"CLUSTER/NAMESPACE/GATEWAY\"",
            node.id
        )));
    }
    Ok(id.to_owned())
}

/// Shared context of all streams.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) cache: Arc<Cache>,
    pub(crate) stats: Arc<StatsInner>,
    pub(crate) proxy_auth: ProxyAuth,
    pub(crate) shutdown: CancellationToken,
}

impl Ctx {
    /// Waits until the cache is synced; false if shut down first.
    pub(crate) async fn wait_synced(&self) -> bool {
        let mut rx = self.cache.synced_rx();
        tokio::select! {
            r = rx.wait_for(|s| *s) => r.is_ok(),
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// The ADS gRPC service.
#[derive(Debug, Clone)]
pub struct AdsService {
    pub(crate) ctx: Ctx,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What a stream task queues for its proxy. Boxed so the channel's slots stay pointer-sized:
/// tokio allocates them in blocks of 32, and unboxed responses/statuses would cost ~10 KiB
/// per stream, a large share of the per-stream memory budget.
pub(crate) type Out<T> = Result<Box<T>, Box<Status>>;

fn unbox<T>(r: Out<T>) -> Result<T, Status> {
    r.map(|b| *b).map_err(|s| *s)
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let caller = Caller::of(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_RESPONSE_BUFFER);
        let span =
            tracing::info_span!("sotw", peer = %caller.remote(), gateway = tracing::field::Empty);
        tokio::spawn(serve::<sotw::Stream>(self.ctx.clone(), caller, inbound, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(unbox))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let caller = Caller::of(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_RESPONSE_BUFFER);
        let span =
            tracing::info_span!("delta", peer = %caller.remote(), gateway = tracing::field::Empty);
        tokio::spawn(
            serve::<delta::Stream>(self.ctx.clone(), caller, inbound, tx).instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(unbox))))
    }
}

/// Stable 64-bit FNV-1a, for SotW version strings (same set -> same version on every edge).
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
    pub(crate) fn finish(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// One type's protocol state, as the fuzz pass checks it against the documented bounds.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) type_url: String,
    pub(crate) wildcard: bool,
    pub(crate) names: Vec<String>,
    pub(crate) in_flight: usize,
    /// Resource versions remembered (delta: the larger of acked and sent).
    pub(crate) versions: usize,
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_of_node() {
        let node = |c: &str| Node {
            id: "p1".into(),
            cluster: c.into(),
            ..Default::default()
        };
        assert_eq!(
            gateway_of(Some(&node("east/ns/gw"))).ok(),
            Some("east/ns/gw".to_owned())
        );
        for bad in ["", "east/ns", "east//gw", "a/b/c/d", "/ns/gw"] {
            let err = gateway_of(Some(&node(bad))).err().map(|s| s.code());
            assert_eq!(err, Some(tonic::Code::InvalidArgument), "{bad:?}");
        }
        assert!(gateway_of(None).is_err());
    }

    #[test]
    fn type_urls() {
        assert!(valid_type_url(CLUSTER_TYPE));
        assert!(!valid_type_url(""));
        assert!(!valid_type_url("garbage"));
        assert!(!valid_type_url("type.googleapis.com/"));
    }
}
