//! Envoy's rate limit service (`flotilla_ratelimit`), two ways:
//! - `flotilla ratelimit`: on a port of its own, its rules read from a file and reread when
//!   the file changes (a fleet of instances sharing a Redis; the file is the translator's
//!   output: `GET /api/v1/ratelimit` of a store, or `flotilla translate --to ratelimit`);
//! - embedded in `flotilla standalone` ([`spawn_embedded`]): the rules are the translator's,
//!   replaced in place whenever the store publishes a state whose rules changed.

use crate::cli::{OnFailure, RatelimitArgs};
use crate::serve::{bind, client_facing, limits, load_tls, supervise};
use anyhow::{Context, Result};
use flotilla_net::Role;
use flotilla_ratelimit::{
    Backend, ConfigHandle, FailureMode, MemoryCounter, RateLimitConfig, RateLimiter, RedisConfig,
    RedisCounter,
};
use flotilla_store::ReadState;
use flotilla_translate::RateLimitRules;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, Instrument};

/// How often the rules file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Connections of Envoys (a few per Envoy).
const CONNECTIONS: usize = 4096;

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

/// The counter: in `redis` (HOST:PORT) when given, else in memory (at most `max_keys`).
fn backend(redis: Option<&str>, max_keys: usize, on_failure: OnFailure) -> Backend {
    let counter: Arc<dyn flotilla_ratelimit::Counter> = match redis {
        Some(address) => Arc::new(RedisCounter::new(RedisConfig::new(address.to_string()))),
        None => Arc::new(MemoryCounter::new(max_keys)),
    };
    Backend {
        counter,
        on_failure: match on_failure {
            OnFailure::Open => FailureMode::Open,
            OnFailure::Closed => FailureMode::Closed,
        },
    }
}

/// The translator's rules in the service's own form. The two crates share the format, not a
/// type (the translator does not depend on the service): a rule the service would refuse is
/// an error here, and the rules in force stay.
pub(crate) fn service_config(rules: &RateLimitRules) -> Result<RateLimitConfig> {
    let v = serde_json::to_value(rules).context("encoding the translator's rate limit rules")?;
    serde_json::from_value(v).context("the translator's rate limit rules")
}

/// Counters of the embedded service (one per distinct client and rule in the window).
const EMBEDDED_MAX_KEYS: usize = 1_000_000;
/// Connections of the local Envoys to the embedded service.
const EMBEDDED_CONNECTIONS: usize = 1024;

/// Runs the rate limit service of `flotilla standalone` on `listener` (plaintext: the Envoys'
/// `ratelimit_cluster` has no TLS), counting in memory or in `redis`, with the rules of every
/// state `states` publishes.
pub(crate) fn spawn_embedded(
    tasks: &mut JoinSet<Result<()>>,
    listener: tokio::net::TcpListener,
    redis: Option<&str>,
    net: &crate::cli::ListenArgs,
    mut states: watch::Receiver<Arc<ReadState>>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let handle = ConfigHandle::new(&RateLimitConfig::default())
        .map_err(|e| anyhow::anyhow!("empty rate limit rules: {e}"))?;
    let limiter = RateLimiter::new(
        handle.subscribe(),
        backend(redis, EMBEDDED_MAX_KEYS, OnFailure::Open),
    );
    let security = client_facing(None, limits(net, EMBEDDED_CONNECTIONS));
    let sd = shutdown.clone();
    tasks.spawn(
        async move {
            limiter
                .serve_secured(listener, security, sd.cancelled_owned())
                .await
                .context("embedded rate limit server")
        }
        .instrument(tracing::info_span!("ratelimit")),
    );
    let sd = shutdown.clone();
    tasks.spawn(
        async move {
            let mut last: Option<RateLimitRules> = None;
            loop {
                let rules = states.borrow_and_update().view().rate_limit_rules();
                if last.as_ref() != Some(&rules) {
                    match service_config(&rules)
                        .and_then(|cfg| handle.replace(&cfg).map_err(|e| anyhow::anyhow!("{e}")))
                    {
                        Ok(_) => info!(domains = rules.domains.len(), "rate limit rules replaced"),
                        Err(e) => error!(
                            error = %format!("{e:#}"),
                            "rate limit rules not replaced: the rules in force stay"
                        ),
                    }
                    last = Some(rules);
                }
                tokio::select! {
                    r = states.changed() => if r.is_err() { return Ok(()) },
                    () = sd.cancelled() => return Ok(()),
                }
            }
        }
        .instrument(tracing::info_span!("ratelimit-rules")),
    );
    Ok(())
}

pub async fn run(a: RatelimitArgs, shutdown: CancellationToken) -> Result<()> {
    let first = read(&a.config)?;
    let handle =
        ConfigHandle::new(&first).map_err(|e| anyhow::anyhow!("{}: {e}", a.config.display()))?;
    let backend = backend(a.redis.as_deref(), a.max_keys, a.on_failure);
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
