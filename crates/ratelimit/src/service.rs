//! The gRPC edge: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, checked against
//! [`Limits`], matched against the current [`Rules`] and counted by the [`Backend`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::backend::{counter_key, Backend, Error as BackendError, FailureMode, Hit};
use crate::config::{CompiledRule, Limit, RateLimitConfig, Rules, Unit};
use crate::telemetry::Stats;

/// Bounds on one request; beyond them it is refused (INVALID_ARGUMENT, or OUT_OF_RANGE for
/// the message size) and Envoy applies its failure mode, by default letting the request
/// through. So only what Flotilla's configuration controls is bounded tightly (domain, keys,
/// descriptors and entries: one descriptor per `rate_limits` entry of a route, one entry per
/// action). Values carry client input and are not bounded one by one: a long value is counted
/// under its digest ([`crate::backend::counter_key`]), so a client cannot escape its limit with
/// a long header. What a client controls is bounded by the message size alone.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole request. The default, 8 MiB, holds 128 descriptors each carrying a whole
    /// request header block at Envoy's default limit (60 KiB): every request Envoy can build
    /// under that limit is answered. A listener whose ClientTrafficPolicy raises
    /// `headers.maxRequestHeaderLimit` past it needs this raised too (or `failClosed`).
    pub max_message_bytes: usize,
    pub max_descriptors: usize,
    pub max_entries: usize,
    pub max_domain_len: usize,
    pub max_key_len: usize,
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 8 * 1024 * 1024,
            // Envoy Gateway's bound: 128 global rules, one descriptor each.
            max_descriptors: 128,
            max_entries: crate::config::MAX_RULE_ENTRIES,
            max_domain_len: 256,
            max_key_len: 256,
            max_concurrent_streams: 1024,
        }
    }
}

/// The rules as published to the service: replaced atomically (a `watch` of an `Arc`), and a
/// replacement that changes nothing wakes nobody.
#[derive(Clone)]
pub struct ConfigHandle {
    tx: watch::Sender<Arc<Rules>>,
}

impl ConfigHandle {
    pub fn new(cfg: &RateLimitConfig) -> Result<ConfigHandle, crate::config::ConfigErrors> {
        let rules = Rules::compile(cfg)?;
        let (tx, _) = watch::channel(Arc::new(rules));
        Ok(ConfigHandle { tx })
    }

    /// Replaces the rules; a configuration with errors leaves the current rules in place.
    pub fn replace(&self, cfg: &RateLimitConfig) -> Result<bool, crate::config::ConfigErrors> {
        let rules = Rules::compile(cfg)?;
        Ok(self.tx.send_if_modified(|cur| {
            if **cur == rules {
                return false;
            }
            *cur = Arc::new(rules);
            true
        }))
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Rules>> {
        self.tx.subscribe()
    }
}

/// The service: rules, backend, bounds and counters.
#[derive(Clone)]
pub struct RateLimiter {
    rules: watch::Receiver<Arc<Rules>>,
    backend: Backend,
    limits: Limits,
    stats: Arc<Stats>,
    /// Whether the last call to the backend failed: an outage is logged when it starts and
    /// when it ends, not once per request (the counters count every failure).
    backend_down: Arc<AtomicBool>,
}

impl RateLimiter {
    pub fn new(rules: watch::Receiver<Arc<Rules>>, backend: Backend) -> RateLimiter {
        RateLimiter {
            rules,
            backend,
            limits: Limits::default(),
            stats: Arc::default(),
            backend_down: Arc::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> RateLimiter {
        self.limits = limits;
        self
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves on `listener` until `shutdown` completes: plaintext, open, default listener
    /// limits (tests, loopback).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_secured(listener, flotilla_net::ServerSecurity::default(), shutdown)
            .await
    }

    /// Serves on `listener` behind Flotilla's listener (TLS as `security` says, backlog,
    /// connection limit, handshake and idle timeouts) until `shutdown` completes.
    pub async fn serve_secured(
        self,
        listener: TcpListener,
        security: flotilla_net::ServerSecurity,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let limits = self.limits;
        let svc = RateLimitServiceServer::new(self)
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes);
        let stop = tokio_util::sync::CancellationToken::new();
        let incoming = flotilla_net::server::accept(
            listener,
            &security,
            Arc::new(flotilla_net::ListenStats::default()),
            stop.clone(),
        );
        let shutdown = async move {
            shutdown.await;
            stop.cancel();
        };
        flotilla_net::server::grpc_server(limits.max_concurrent_streams)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    fn validate(&self, req: &RateLimitRequest) -> Result<(), Status> {
        let l = &self.limits;
        let bad = |m: String| Err(Status::invalid_argument(m));
        if req.domain.is_empty() || req.domain.len() > l.max_domain_len {
            return bad(format!("domain must be 1..={} bytes", l.max_domain_len));
        }
        if req.descriptors.is_empty() || req.descriptors.len() > l.max_descriptors {
            return bad(format!("1..={} descriptors per request", l.max_descriptors));
        }
        for (i, d) in req.descriptors.iter().enumerate() {
            if d.entries.is_empty() || d.entries.len() > l.max_entries {
                return bad(format!("descriptor {i}: 1..={} entries", l.max_entries));
            }
            for e in &d.entries {
                if e.key.is_empty() || e.key.len() > l.max_key_len {
                    return bad(format!(
                        "descriptor {i}: keys must be 1..={} bytes",
                        l.max_key_len
                    ));
                }
            }
        }
        Ok(())
    }

    /// Answers one validated request at `now` (unix seconds).
    pub async fn decide(&self, req: &RateLimitRequest, now: u64) -> RateLimitResponse {
        // A snapshot: a replacement during this call applies from the next one.
        let rules = self.rules.borrow().clone();
        let request_hits = if req.hits_addend == 0 {
            1
        } else {
            u64::from(req.hits_addend)
        };
        let matched: Vec<Option<Applied>> = req
            .descriptors
            .iter()
            .map(|d| applied(rules.find(&req.domain, &entries(d)), d))
            .collect();
        let mut hits = Vec::new();
        for (d, rule) in req.descriptors.iter().zip(&matched) {
            if let Some(rule) = rule {
                let w = rule.limit.unit.window(now);
                hits.push(Hit {
                    key: counter_key(&req.domain, &entries(d), w.start),
                    hits: descriptor_hits(d, request_hits),
                    expires_at: w.end,
                });
            }
        }
        let counts = match self.backend.counter.increment(&hits, now).await {
            Ok(c) if c.len() == hits.len() => Ok(c),
            Ok(_) => Err(BackendError::Redis("wrong number of replies".into())),
            Err(e) => Err(e),
        };
        let counts = match counts {
            Ok(c) => {
                if self.backend_down.swap(false, Ordering::Relaxed) {
                    info!("rate limit backend recovered");
                }
                Some(c)
            }
            Err(e) => {
                Stats::inc(&self.stats.backend_errors);
                let mode = self.backend.on_failure;
                match mode {
                    FailureMode::Open => Stats::inc(&self.stats.failed_open),
                    FailureMode::Closed => Stats::inc(&self.stats.failed_closed),
                }
                if self.backend_down.swap(true, Ordering::Relaxed) {
                    debug!(domain = %req.domain, error = %e, ?mode, "rate limit backend failed");
                } else {
                    warn!(domain = %req.domain, error = %e, ?mode,
                        "rate limit backend failed; answering per the failure mode until it recovers");
                }
                None
            }
        };
        let mut counts = counts.map(|c| c.into_iter());
        let mut overall = Code::Ok;
        let statuses = matched
            .iter()
            .map(|rule| {
                let Some(rule) = rule else {
                    // No rule: OK without a limit, as the reference service answers.
                    return DescriptorStatus {
                        code: Code::Ok as i32,
                        ..Default::default()
                    };
                };
                let limit = u64::from(rule.limit.requests_per_unit);
                let reset = rule.limit.unit.window(now).remaining(now);
                let (over, remaining) = match counts.as_mut().and_then(|c| c.next()) {
                    Some(n) => (n > limit, limit.saturating_sub(n)),
                    // The backend failed: closed denies with nothing left, open allows.
                    None if self.backend.on_failure == FailureMode::Closed => (true, 0),
                    None => (false, limit),
                };
                let code = if over && rule.shadow_mode {
                    Stats::inc(&self.stats.shadow_over_limit);
                    Code::Ok
                } else if over {
                    Stats::inc(&self.stats.over_limit);
                    overall = Code::OverLimit;
                    Code::OverLimit
                } else {
                    Code::Ok
                };
                DescriptorStatus {
                    code: code as i32,
                    current_limit: Some(RateLimit {
                        name: rule.name.clone(),
                        requests_per_unit: rule.limit.requests_per_unit,
                        unit: rule.limit.unit.to_proto(),
                    }),
                    limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    duration_until_reset: Some(PbDuration {
                        seconds: i64::try_from(reset).unwrap_or(i64::MAX),
                        nanos: 0,
                    }),
                    ..Default::default()
                }
            })
            .collect();
        RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            ..Default::default()
        }
    }
}

/// The limit that applies to one descriptor: its rule's, or the descriptor's own `limit`
/// (Envoy's limit override, e.g. from dynamic metadata: BackendTrafficPolicy
/// `limit.fromMetadata`), which wins as in the reference service. An override applies without
/// a rule too (no shadow mode then); one in a unit the service does not count in (month,
/// year, week) is ignored.
struct Applied {
    limit: Limit,
    shadow_mode: bool,
    name: String,
}

fn applied(rule: Option<&CompiledRule>, d: &RateLimitDescriptor) -> Option<Applied> {
    let over = d.limit.as_ref().and_then(|o| {
        let unit = match o.unit {
            1 => Unit::Second,
            2 => Unit::Minute,
            3 => Unit::Hour,
            4 => Unit::Day,
            _ => return None,
        };
        Some(Limit {
            requests_per_unit: o.requests_per_unit,
            unit,
        })
    });
    match (rule, over) {
        (Some(r), over) => Some(Applied {
            limit: over.unwrap_or(r.limit),
            shadow_mode: r.shadow_mode,
            name: r.name.clone(),
        }),
        (None, Some(limit)) => Some(Applied {
            limit,
            shadow_mode: false,
            name: String::new(),
        }),
        (None, None) => None,
    }
}

fn entries(d: &RateLimitDescriptor) -> Vec<(&str, &str)> {
    d.entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect()
}

/// The descriptor's own `hits_addend` overrides the request's. A refund (`is_negative_hits`)
/// is not supported: such a descriptor is checked without being counted.
fn descriptor_hits(d: &RateLimitDescriptor, request_hits: u64) -> u64 {
    if d.is_negative_hits {
        return 0;
    }
    d.hits_addend.map_or(request_hits, |h| h.value)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tonic::async_trait]
impl RateLimitService for RateLimiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        Stats::inc(&self.stats.requests);
        let req = request.into_inner();
        if let Err(s) = self.validate(&req) {
            Stats::inc(&self.stats.invalid_requests);
            return Err(s);
        }
        Ok(Response::new(self.decide(&req, unix_now()).await))
    }
}

/// Serves the rate limit service on `listener` with the rules of `config_rx` (replaced at
/// runtime through it) and `backend`, until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config_rx: watch::Receiver<Arc<Rules>>,
    backend: Backend,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    RateLimiter::new(config_rx, backend)
        .serve(listener, shutdown)
        .await
}
