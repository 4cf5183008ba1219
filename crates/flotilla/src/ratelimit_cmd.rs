//! `flotilla ratelimit`: Envoy's rate limit service (`flotilla_ratelimit`) on a port of its
//! own, its rules read from a file and reread when the file changes.

use crate::cli::RatelimitArgs;
use crate::runtime::{bind, client_facing, limits, load_tls, supervise};
use anyhow::{Context, Result};
use flotilla_net::Role;
use flotilla_ratelimit::{
    Backend, ConfigHandle, FailureMode, MemoryCounter, RateLimitConfig, RateLimiter, RedisConfig,
    RedisCounter,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How often the rules file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Connections of Envoys (a few per Envoy).
const CONNECTIONS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    Open,
    Closed,
}

/// Reads and validates a rules file.
fn read(path: &Path) -> Result<RateLimitConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not a rules file", path.display()))
}

/// The file's identity for change detection: modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub async fn run(a: RatelimitArgs, shutdown: CancellationToken) -> Result<()> {
    let first = read(&a.config)?;
    let handle =
        ConfigHandle::new(&first).map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    let counter: Arc<dyn flotilla_ratelimit::Counter> = match &a.redis {
        Some(address) => Arc::new(RedisCounter::new(RedisConfig::new(address.clone()))),
        None => Arc::new(MemoryCounter::new(a.max_keys)),
    };
    let backend = Backend {
        counter,
        on_failure: match a.on_failure {
            OnFailure::Open => FailureMode::Open,
            OnFailure::Closed => FailureMode::Closed,
        },
    };
    // Envoys call it; with certificates, over TLS (their certificate optional).
    let tls = load_tls(&a.net, &[Role::Edge, Role::Store], &shutdown)?;
    let listener = bind(a.listen, "rate limit", &a.net, tls.is_some())?;
    let security = client_facing(tls.as_ref(), limits(&a.net, CONNECTIONS));
    info!(
        listen = %a.listen,
        config = %a.config.display(),
        counter = if a.redis.is_some() { "redis" } else { "memory" },
        "rate limit service started"
    );
    let mut tasks = JoinSet::new();
    let limiter = RateLimiter::new(handle.subscribe(), backend);
    let sd = shutdown.clone();
    tasks.spawn(async move {
        limiter
            .serve_secured(listener, security, sd.cancelled_owned())
            .await
            .context("rate limit server")
    });
    let path = a.config.clone();
    let sd = shutdown.clone();
    tasks.spawn(async move {
        let mut last = stamp(&path);
        loop {
            tokio::select! {
                () = tokio::time::sleep(RELOAD_EVERY) => {}
                () = sd.cancelled() => return Ok(()),
            }
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match read(&path).and_then(|cfg| {
                handle
                    .replace(&cfg)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }) {
                Ok(changed) => info!(config = %path.display(), changed, "rate limit rules reread"),
                Err(e) => error!(
                    error = %format!("{e:#}"),
                    "rate limit rules not replaced: the rules in force stay"
                ),
            }
        }
    });
    supervise(tasks, shutdown).await
}
