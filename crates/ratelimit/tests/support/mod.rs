//! Real parts for the rate limit tests: the service on a loopback port, a gRPC client, an HTTP
//! backend and a static Envoy in front of it; the processes (Envoy, redis-server) and ports come
//! from `flotilla-testing`, shared with the flotilla e2e tests.
#![allow(dead_code)] // each test binary uses a part of this

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use flotilla_ratelimit::config::{DomainConfig, EntryMatch, Limit, Rule, Unit};
use flotilla_ratelimit::telemetry::Stats;
use flotilla_ratelimit::{Backend, ConfigHandle, RateLimitConfig, RateLimiter};
use tokio::sync::oneshot;

pub use flotilla_testing::{free_port, wait_tcp, Proc};

/// The test rule set: in domain `DOMAIN`, route `r1` limits each distinct `x-user` value
/// (the descriptor Envoy Gateway emits for a `distinct` header selector) to `n` per minute.
pub const DOMAIN: &str = "flotilla-test";

pub fn per_user_config(n: u32) -> RateLimitConfig {
    RateLimitConfig {
        domains: vec![DomainConfig {
            domain: DOMAIN.into(),
            rules: vec![Rule {
                descriptor: vec![
                    EntryMatch {
                        key: "r1".into(),
                        value: Some("r1".into()),
                    },
                    EntryMatch {
                        key: "rule-0-match-0".into(),
                        value: None,
                    },
                ],
                limit: Limit {
                    requests_per_unit: n,
                    unit: Unit::Minute,
                },
                shadow_mode: false,
                name: Some("per-user".into()),
            }],
        }],
    }
}

/// The service on a loopback port; stopped on drop.
pub struct Service {
    pub port: u16,
    pub config: ConfigHandle,
    pub stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start_service(cfg: &RateLimitConfig, backend: Backend) -> Service {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = ConfigHandle::new(cfg).expect("valid config");
    let limiter = RateLimiter::new(config.subscribe(), backend);
    let stats = limiter.stats();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = limiter
            .serve(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    Service {
        port,
        config,
        stats,
        stop: Some(tx),
    }
}

pub async fn client(port: u16) -> RateLimitServiceClient<tonic::transport::Channel> {
    RateLimitServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect to the rate limit service")
}

pub fn request(domain: &str, descriptors: &[&[(&str, &str)]], hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: descriptors
            .iter()
            .map(|d| RateLimitDescriptor {
                entries: d
                    .iter()
                    .map(|(k, v)| Entry {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        hits_addend: hits,
    }
}

pub async fn ask(
    c: &mut RateLimitServiceClient<tonic::transport::Channel>,
    req: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    c.should_rate_limit(req).await.map(|r| r.into_inner())
}

/// Waits, if needed, so that the next `secs` seconds stay inside one minute window: a test that
/// counts to N per minute must not straddle a window boundary.
pub async fn wait_for_fresh_minute(secs: u64) {
    let now = flotilla_ratelimit::service::unix_now();
    let left = 60 - now % 60;
    if left < secs {
        tokio::time::sleep(Duration::from_secs(left) + Duration::from_millis(100)).await;
    }
}

/// An HTTP backend answering every request with 200 `ok`.
pub async fn start_backend() -> u16 {
    let app = axum::Router::new().fallback(|| async { "ok" });
    flotilla_testing::serve("127.0.0.1", 0, app)
        .await
        .expect("bind backend")
}

/// A static Envoy: listener on `port` → route `/` to the backend, with `rate_limits` that
/// produce Envoy Gateway's descriptor for a distinct-header rule (`r1`=`r1`,
/// `rule-0-match-0`=<x-user>), the HTTP ratelimit filter pointing at the service on `rls_port`
/// (failure_mode_deny false), domain [`DOMAIN`].
pub fn start_envoy(dir: &Path, name: &str, port: u16, backend: u16, rls_port: u16) -> Proc {
    let admin = free_port();
    let yaml = format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: backend
                  rate_limits:
                  - actions:
                    - generic_key: {{descriptor_key: r1, descriptor_value: r1}}
                    - request_headers: {{header_name: x-user, descriptor_key: rule-0-match-0}}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: {DOMAIN}
              failure_mode_deny: false
              timeout: 2s
              rate_limit_service:
                transport_api_version: V3
                grpc_service:
                  envoy_grpc: {{cluster_name: ratelimit}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}
  - name: ratelimit
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: ratelimit
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {rls_port}}}}}}}
"#
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write envoy config");
    let p = flotilla_testing::start_envoy(dir, name, &path, "warn");
    wait_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(30));
    p
}

pub fn http() -> reqwest::Client {
    flotilla_testing::http_client(Duration::from_secs(5))
}

/// GET `/` through Envoy on `port` as `user`: the status code.
pub async fn get_as(c: &reqwest::Client, port: u16, user: &str) -> u16 {
    c.get(format!("http://127.0.0.1:{port}/"))
        .header("x-user", user)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET through Envoy :{port}: {e}"))
        .status()
        .as_u16()
}
