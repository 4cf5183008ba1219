//! Flotilla's rate limit service: Envoy's `envoy.service.ratelimit.v3.RateLimitService`, with
//! the semantics of the reference implementation (envoyproxy/ratelimit), serving the global
//! rate limits of BackendTrafficPolicy (`rateLimit.global`).
//!
//! Module map (data flows down):
//! - [`config`]: the rules (serde form, validated form, matching, windows);
//! - [`backend`]: counting behind one trait, in memory or in Redis, and what to do when it fails;
//! - [`service`]: the gRPC edge (request bounds, answer, `serve`);
//! - [`telemetry`]: the counters.

pub mod backend;
pub mod config;
pub mod service;
pub mod telemetry;

pub use backend::memory::MemoryCounter;
pub use backend::redis::{RedisConfig, RedisCounter};
pub use backend::{Backend, Counter, FailureMode};
pub use config::{RateLimitConfig, Rules};
pub use service::{serve, ConfigHandle, Limits, RateLimiter};
