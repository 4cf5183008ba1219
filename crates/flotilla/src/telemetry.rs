//! Logging setup and the edge's admin server with its typed metrics.

use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); `json` for machine-readable lines.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Json;
use flotilla_xds_edge::{Edge, EdgeStats};
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The edge's metrics, typed in one place. Values are copied from [`EdgeStats`] at scrape time.
struct EdgeMetrics {
    registry: Registry,
    revision: IntGauge,
    max_revision_served: IntGauge,
    streams: IntGauge,
    acks: IntCounter,
    nacks: IntCounter,
    synced: IntGauge,
    proxies_denied: IntCounter,
    connections: IntGauge,
    handshakes_failed: IntCounter,
    idle_closed: IntCounter,
    at_connection_limit: IntCounter,
    accept_errors: IntCounter,
}

impl EdgeMetrics {
    fn new() -> Result<Self> {
        let registry = Registry::new();
        let m = Self {
            revision: IntGauge::new(
                "flotilla_edge_revision",
                "Store revision of the edge's cache",
            )?,
            max_revision_served: IntGauge::new(
                "flotilla_edge_max_revision_served",
                "Highest store revision sent to a proxy",
            )?,
            streams: IntGauge::new("flotilla_edge_streams", "Open ADS streams")?,
            acks: IntCounter::new("flotilla_edge_acks_total", "ACKs received from proxies")?,
            nacks: IntCounter::new("flotilla_edge_nacks_total", "NACKs received from proxies")?,
            synced: IntGauge::new(
                "flotilla_edge_synced",
                "1 once the first full state arrived",
            )?,
            proxies_denied: IntCounter::new(
                "flotilla_edge_proxies_denied_total",
                "ADS streams refused: the proxy did not prove it serves the gateway it named",
            )?,
            connections: IntGauge::new(
                "flotilla_edge_connections",
                "Connections held by the xDS listener",
            )?,
            handshakes_failed: IntCounter::new(
                "flotilla_edge_handshakes_failed_total",
                "xDS connections closed before their handshake finished (TLS failure, silence)",
            )?,
            idle_closed: IntCounter::new(
                "flotilla_edge_idle_closed_total",
                "xDS connections closed for reading nothing for the idle timeout",
            )?,
            at_connection_limit: IntCounter::new(
                "flotilla_edge_at_connection_limit_total",
                "Times the xDS listener held its connection limit and paused accepting",
            )?,
            accept_errors: IntCounter::new(
                "flotilla_edge_accept_errors_total",
                "Failed accept calls on the xDS listener (e.g. out of file descriptors)",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.revision.clone()))?;
        m.registry
            .register(Box::new(m.max_revision_served.clone()))?;
        m.registry.register(Box::new(m.streams.clone()))?;
        m.registry.register(Box::new(m.acks.clone()))?;
        m.registry.register(Box::new(m.nacks.clone()))?;
        m.registry.register(Box::new(m.synced.clone()))?;
        m.registry.register(Box::new(m.proxies_denied.clone()))?;
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.handshakes_failed.clone()))?;
        m.registry.register(Box::new(m.idle_closed.clone()))?;
        m.registry
            .register(Box::new(m.at_connection_limit.clone()))?;
        m.registry.register(Box::new(m.accept_errors.clone()))?;
        Ok(m)
    }

    fn render(&self, s: &EdgeStats) -> String {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.revision.set(clamp(s.revision));
        self.max_revision_served.set(clamp(s.max_revision_served));
        self.streams.set(clamp(s.streams as u64));
        self.acks.inc_by(s.acks.saturating_sub(self.acks.get()));
        self.nacks.inc_by(s.nacks.saturating_sub(self.nacks.get()));
        self.synced.set(i64::from(s.synced));
        let add = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        add(&self.proxies_denied, s.proxies_denied);
        self.connections.set(clamp(s.connections));
        add(&self.handshakes_failed, s.handshakes_failed);
        add(&self.idle_closed, s.idle_closed);
        add(&self.at_connection_limit, s.at_connection_limit);
        add(&self.accept_errors, s.accept_errors);
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

fn stats_json(s: &EdgeStats) -> serde_json::Value {
    serde_json::json!({
        "revision": s.revision,
        "maxRevisionServed": s.max_revision_served,
        "streams": s.streams,
        "acks": s.acks,
        "nacks": s.nacks,
        "synced": s.synced,
        "proxiesDenied": s.proxies_denied,
        "connections": s.connections,
        "handshakesFailed": s.handshakes_failed,
        "idleClosed": s.idle_closed,
        "evicted": s.evicted,
        "atConnectionLimit": s.at_connection_limit,
        "acceptErrors": s.accept_errors,
    })
}

/// The edge's admin server: `/healthz`, `/stats` (JSON), `/metrics` (Prometheus text).
pub async fn serve_admin(
    listener: TcpListener,
    security: flotilla_net::ServerSecurity,
    edge: Edge,
    shutdown: CancellationToken,
) -> Result<()> {
    let metrics = std::sync::Arc::new(EdgeMetrics::new()?);
    let e1 = edge.clone();
    let e2 = edge;
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/stats",
            get(move || async move { Json(stats_json(&e1.stats())) }),
        )
        .route(
            "/metrics",
            get(move || async move { metrics.render(&e2.stats()) }),
        );
    let listener = flotilla_net::server::HttpListener::new(
        listener,
        &security,
        std::sync::Arc::new(flotilla_net::ListenStats::default()),
        shutdown.clone(),
    )?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("admin server")
}
