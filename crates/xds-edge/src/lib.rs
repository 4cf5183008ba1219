//! `flotilla-xds-edge`: the Envoy-facing ADS server.
//!
//! An edge is a stateless cache in front of the store: it watches one store replica for
//! per-gateway xDS resources ([`store_watch`]), keeps them in a [`Cache`] that publishes each
//! gateway through its own `watch` channel, and serves them to Envoy over ADS, both the delta
//! and the state-of-the-world variant ([`ads`]). It knows nothing of Kubernetes, Raft or
//! translation: only the store's watch API and Envoy's discovery protocol.
//!
//! # Proxy → gateway mapping
//! A proxy names its gateway in its node: `node.cluster = "CLUSTER/NAMESPACE/GATEWAY"`
//! (e.g. `east/infra/public`). A stream whose first request has no node, or whose
//! `node.cluster` is not three non-empty `/`-separated parts, fails with `INVALID_ARGUMENT`.
//!
//! # Guarantees
//! - xDS is served only after the first full state from the store has been applied (a
//!   reconnecting proxy is never handed an empty config by an edge that just started).
//! - The edge never goes backwards: a store response not newer than the cache is ignored.
//! - A stream only wakes when its own gateway changed, sends only resources whose version the
//!   proxy does not have, and no lock is held while sending.
//!
//! # Use
//! ```no_run
//! # async fn f() -> Result<(), flotilla_xds_edge::Error> {
//! use flotilla_xds_edge::{Edge, EdgeConfig};
//! let cfg = EdgeConfig::new(
//!     "127.0.0.1:18000".parse().unwrap(),
//!     vec!["http://127.0.0.1:7000".into()],
//!     "edge-1",
//! );
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let listener = tokio::net::TcpListener::bind(cfg.xds_addr).await.unwrap();
//! let edge = Edge::new(cfg)?;
//! let task = tokio::spawn(edge.run(listener, shutdown.clone()));
//! println!("{:?}", edge.stats());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use flotilla_net::{ClientSecurity, ProxyAuth, ServerSecurity};
use flotilla_proto::watch::WatchResponse;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod ads;
pub mod cache;
mod stats;
pub mod store_watch;

pub use ads::AdsService;
pub use cache::{Applied, Cache, GatewaySnapshot, GatewayState, Res};
pub use stats::EdgeStats;

use stats::StatsInner;

/// HTTP/2 pings towards proxies: a proxy that vanished without closing its connection is
/// dropped (and its stream state freed) within interval + timeout.
const PROXY_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const PROXY_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// ADS streams one proxy connection may open at once (Envoy opens one).
const MAX_STREAMS_PER_PROXY_CONNECTION: u32 = 8;

/// Errors of the edge's public entry points.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no store watch address configured")]
    NoStores,
    #[error("invalid store watch address {uri:?}: {reason}")]
    InvalidStore { uri: String, reason: String },
    #[error("bind xDS address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("xDS server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Edge configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Where the ADS server listens (used by [`run`]; [`serve`] takes a bound listener).
    pub xds_addr: SocketAddr,
    /// Store watch endpoints, `http://host:port`; tried in order, round robin on failure.
    pub stores: Vec<String>,
    /// This edge's name in the store's logs and metrics.
    pub edge_id: String,
    /// The xDS listener: TLS or not, limits. (Its `auth` is unused: proxies prove their
    /// gateway through `proxy_auth`.)
    pub server: ServerSecurity,
    /// How proxies prove which gateway they serve.
    pub proxy_auth: ProxyAuth,
    /// How this edge proves itself to the stores.
    pub client: ClientSecurity,
}

impl EdgeConfig {
    /// An edge with an open, plaintext xDS port (loopback dev and tests).
    pub fn new(xds_addr: SocketAddr, stores: Vec<String>, edge_id: impl Into<String>) -> Self {
        Self {
            xds_addr,
            stores,
            edge_id: edge_id.into(),
            server: ServerSecurity::default(),
            proxy_auth: ProxyAuth::default(),
            client: ClientSecurity::default(),
        }
    }
}

/// Handle on a running edge: its cache and its counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Edge {
    cfg: Arc<EdgeConfig>,
    cache: Arc<Cache>,
    stats: Arc<StatsInner>,
}

impl Edge {
    /// Validates the configuration and builds an (unsynced) edge. Nothing runs until
    /// [`Edge::run`] (or [`Edge::watch_store`] + [`Edge::serve_ads`]) is polled.
    pub fn new(cfg: EdgeConfig) -> Result<Self> {
        if cfg.stores.is_empty() {
            return Err(Error::NoStores);
        }
        for uri in &cfg.stores {
            let parsed: Result<tonic::transport::Uri, _> = uri.parse();
            match parsed {
                Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {}
                Ok(_) => {
                    return Err(Error::InvalidStore {
                        uri: uri.clone(),
                        reason: "expected http://host:port".into(),
                    })
                }
                Err(e) => {
                    return Err(Error::InvalidStore {
                        uri: uri.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        let stats = Arc::new(StatsInner::default());
        Ok(Self {
            cfg: Arc::new(cfg),
            cache: Arc::new(Cache::new(stats.clone())),
            stats,
        })
    }

    /// Current counters.
    pub fn stats(&self) -> EdgeStats {
        self.stats.snapshot()
    }

    /// The cache (read-only inspection; the store watch feeds it).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Applies a store watch response directly, bypassing the watch client (for an
    /// in-process store, e.g. standalone mode).
    pub fn apply(&self, resp: WatchResponse) -> Applied {
        self.cache.apply(resp)
    }

    /// The ADS gRPC service, to mount on a tonic server of the caller's own.
    pub fn ads_service(
        &self,
        shutdown: CancellationToken,
    ) -> AggregatedDiscoveryServiceServer<AdsService> {
        AggregatedDiscoveryServiceServer::new(AdsService {
            ctx: ads::Ctx {
                cache: self.cache.clone(),
                stats: self.stats.clone(),
                proxy_auth: self.cfg.proxy_auth.clone(),
                shutdown,
            },
        })
        .max_decoding_message_size(ads::MAX_REQUEST_BYTES)
        .max_encoding_message_size(ads::MAX_RESPONSE_BYTES)
    }

    /// The store watch client; runs until `shutdown`.
    pub fn watch_store(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let span = tracing::info_span!("store_watch", edge_id = %self.cfg.edge_id);
        store_watch::run(
            self.cache.clone(),
            self.cfg.stores.clone(),
            self.cfg.edge_id.clone(),
            self.cfg.client.clone(),
            shutdown,
        )
        .instrument(span)
    }

    /// The ADS server on `listener`; runs until `shutdown` (then drains its streams).
    pub fn serve_ads(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let service = self.ads_service(shutdown.clone());
        let addr = listener.local_addr().ok();
        let span = tracing::info_span!("ads_server", addr = ?addr);
        let incoming = flotilla_net::server::accept(
            listener,
            &self.cfg.server,
            self.stats.listen.clone(),
            shutdown.clone(),
        );
        async move {
            tracing::info!("serving ADS");
            flotilla_net::server::grpc_server(MAX_STREAMS_PER_PROXY_CONNECTION)
                .http2_keepalive_interval(Some(PROXY_KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(PROXY_KEEPALIVE_TIMEOUT))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await?;
            tracing::info!("ADS server stopped");
            Ok(())
        }
        .instrument(span)
    }

    /// Runs the store watch and the ADS server on `listener` until `shutdown`.
    pub fn run(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let watch = self.watch_store(shutdown.clone());
        let server = self.serve_ads(listener, shutdown.clone());
        async move {
            let watch = tokio::spawn(watch);
            let result = server.await;
            // The server only returns on shutdown or failure; either way stop the watch.
            shutdown.cancel();
            let _ = watch.await;
            result
        }
    }
}

/// Runs an edge on an already bound listener until `shutdown`.
pub async fn serve(
    cfg: EdgeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    Edge::new(cfg)?.run(listener, shutdown).await
}

/// Binds `cfg.xds_addr` and runs an edge until `shutdown`.
pub async fn run(cfg: EdgeConfig, shutdown: CancellationToken) -> Result<()> {
    let listener =
        flotilla_net::listen::bind(cfg.xds_addr, cfg.server.limits.backlog).map_err(|source| {
            Error::Bind {
                addr: cfg.xds_addr,
                source,
            }
        })?;
    serve(cfg, listener, shutdown).await
}
