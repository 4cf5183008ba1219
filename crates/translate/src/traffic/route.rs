//! What a rule's Envoy routes carry (Envoy Gateway's route.go, fault.go, buffer.go,
//! bandwidth_limit.go): retries, timeout, upgrades, hash policy, tracing, and the per-filter
//! configs that enable the connection manager's filters for the route.

use super::admission::{admission_control_per_route, ADMISSION_CONTROL_FILTER};
use super::custom_response::custom_response;
use super::encode::{nanos, per_million, u32v};
use super::filters::{
    BANDWIDTH_REQUEST_FILTER, BANDWIDTH_RESPONSE_FILTER, BANDWIDTH_STAT_PREFIX, BUFFER_FILTER,
    CUSTOM_RESPONSE_FILTER, FAULT_FILTER,
};
use super::load_balancer::ORCA_HEADERS;
use crate::envoy::any_of;
use crate::ir::cluster::*;
use crate::ir::route::*;
use envoy_types::pb::envoy::config::route::v3::{
    retry_policy, route, route_action, route_match, FilterConfig, RetryPolicy, Route, RouteAction,
};
use envoy_types::pb::envoy::extensions::filters::http::bandwidth_limit::v3::{
    bandwidth_limit, BandwidthLimit as BandwidthLimitFilter,
};
use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::{
    buffer_per_route, Buffer, BufferPerRoute,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort as EnvoyAbort, HttpFault,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt64Value};

/// A route's tracing (Envoy Gateway's `buildRouteTracing`).
fn route_tracing(t: &RouteTracing) -> envoy_types::pb::envoy::config::route::v3::Tracing {
    use envoy_types::pb::envoy::r#type::tracing::v3::{custom_tag, CustomTag};
    envoy_types::pb::envoy::config::route::v3::Tracing {
        random_sampling: t.sampling_per_million.map(|n| per_million(Some(n))),
        custom_tags: t
            .tags
            .iter()
            .map(|(tag, v)| CustomTag {
                tag: tag.clone(),
                r#type: Some(match v {
                    TracingTag::Literal(value) => custom_tag::Type::Literal(custom_tag::Literal {
                        value: value.clone(),
                    }),
                    TracingTag::Environment { name, default } => {
                        custom_tag::Type::Environment(custom_tag::Environment {
                            name: name.clone(),
                            default_value: default.clone(),
                        })
                    }
                    TracingTag::RequestHeader { name, default } => {
                        custom_tag::Type::RequestHeader(custom_tag::Header {
                            name: name.clone(),
                            default_value: default.clone(),
                        })
                    }
                    TracingTag::Formatted(value) => custom_tag::Type::Value(value.clone()),
                }),
            })
            .collect(),
        ..Default::default()
    }
}

/// Envoy Gateway's defaults for a retry policy without `retryOn` (`buildRetryPolicy`).
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

const DEFAULT_RETRY_STATUS: u32 = 503;

const DEFAULT_NUM_RETRIES: u32 = 2;

fn retry_policy(r: &Retry) -> RetryPolicy {
    let mut rp = RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        retriable_status_codes: vec![DEFAULT_RETRY_STATUS],
        num_retries: Some(u32v(r.num_retries.unwrap_or(DEFAULT_NUM_RETRIES))),
        // Retry on another host when there is one.
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any_of(
                &envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate::default(),
            ))),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    };
    if !r.triggers.is_empty() {
        rp.retry_on = r.triggers.join(",");
    }
    if !r.status_codes.is_empty() {
        rp.retriable_status_codes = r.status_codes.clone();
        if !rp
            .retry_on
            .split(',')
            .any(|t| t == "retriable-status-codes")
        {
            rp.retry_on.push_str(",retriable-status-codes");
        }
    }
    rp.per_try_timeout = r.per_try_timeout.map(nanos);
    if let Some(n) = r.attempts_per_priority {
        use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
        rp.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(
                any_of(&PreviousPrioritiesConfig {
                    update_frequency: i32::try_from(n).unwrap_or(i32::MAX),
                }),
            )),
        });
    }
    if let Some((base, max)) = r.backoff {
        rp.retry_back_off = Some(retry_policy::RetryBackOff {
            base_interval: Some(nanos(base)),
            max_interval: max.map(nanos),
        });
    }
    rp
}

fn hash_policy(h: &HashOn) -> route_action::HashPolicy {
    use route_action::hash_policy::{self, PolicySpecifier};
    let spec = match h {
        HashOn::SourceIp => {
            PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                source_ip: true,
            })
        }
        HashOn::Header(name) => PolicySpecifier::Header(hash_policy::Header {
            header_name: name.clone(),
            ..Default::default()
        }),
        HashOn::Cookie { name, ttl } => PolicySpecifier::Cookie(hash_policy::Cookie {
            name: name.clone(),
            ttl: ttl.map(nanos),
            ..Default::default()
        }),
        HashOn::QueryParameter(name) => {
            PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: name.clone() })
        }
    };
    route_action::HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    }
}

/// Adds the route-level settings (and the hash policy a consistent-hash cluster needs) to one
/// route. A retry policy or timeout the HTTPRoute rule sets itself wins (Envoy Gateway keeps
/// the route's own).
pub fn apply_route(r: &mut Route, s: &RouteSettings, cluster: Option<&ClusterSettings>) {
    if let Some(route::Action::Route(ra)) = r.action.as_mut() {
        apply_route_action(ra, s, cluster);
        // A CONNECT request has no path (HTTP/1.1, HTTP/2): only a connect matcher matches
        // it, so the route of a rule that takes CONNECT matches CONNECT requests only, its
        // header matches kept (Envoy Gateway's `buildXdsRoute`).
        if s.connect.is_some() {
            if let Some(m) = r.r#match.as_mut() {
                m.path_specifier = Some(route_match::PathSpecifier::ConnectMatcher(
                    route_match::ConnectMatcher {},
                ));
            }
        }
    }
    // The endpoints' load reports are for this proxy: not passed on unless asked (Envoy
    // Gateway's `keepResponseHeaders`).
    if let Some(LoadBalancer {
        policy: LbPolicy::BackendUtilization(bu),
        ..
    }) = cluster.and_then(|c| c.load_balancer.as_ref())
    {
        if !bu.keep_response_headers {
            for h in ORCA_HEADERS {
                if !r.response_headers_to_remove.iter().any(|x| x == h) {
                    r.response_headers_to_remove.push(h.to_string());
                }
            }
        }
    }
    let mut put = |name: &str, config| {
        r.typed_per_filter_config.insert(name.to_string(), config);
    };
    if let Some(f) = &s.fault {
        put(FAULT_FILTER, any_of(&http_fault(f)));
    }
    if !s.response_overrides.is_empty() {
        put(
            CUSTOM_RESPONSE_FILTER,
            any_of(&custom_response(&s.response_overrides)),
        );
    }
    if let Some(limit) = s.request_buffer {
        put(
            BUFFER_FILTER,
            any_of(&BufferPerRoute {
                r#override: Some(buffer_per_route::Override::Buffer(Buffer {
                    max_request_bytes: Some(u32v(limit)),
                })),
            }),
        );
    }
    if let Some(b) = &s.bandwidth_limit {
        let limit = |mode: bandwidth_limit::EnableMode, kibps: u64| BandwidthLimitFilter {
            stat_prefix: BANDWIDTH_STAT_PREFIX.to_string(),
            enable_mode: mode as i32,
            limit_kbps: Some(UInt64Value { value: kibps }),
            ..Default::default()
        };
        if let Some(kibps) = b.request_kibps {
            put(
                BANDWIDTH_REQUEST_FILTER,
                any_of(&limit(bandwidth_limit::EnableMode::Request, kibps)),
            );
        }
        if let Some(r) = &b.response {
            let mut cfg = limit(bandwidth_limit::EnableMode::Response, r.kibps);
            if let Some(prefix) = &r.trailers {
                cfg.enable_response_trailers = true;
                cfg.response_trailer_prefix = prefix.clone().unwrap_or_default();
            }
            put(BANDWIDTH_RESPONSE_FILTER, any_of(&cfg));
        }
    }
    if let Some(t) = &s.tracing {
        r.tracing = Some(route_tracing(t));
    }
    if let Some(a) = &s.admission_control {
        put(
            ADMISSION_CONTROL_FILTER,
            any_of(&admission_control_per_route(a)),
        );
    }
    for c in &s.compressors {
        // Enables the filter without per-route config (an empty `config`, as Envoy Gateway).
        let enable = FilterConfig {
            config: Some(Default::default()),
            ..Default::default()
        };
        put(c.filter_name(), any_of(&enable));
    }
}

fn apply_route_action(ra: &mut RouteAction, s: &RouteSettings, cluster: Option<&ClusterSettings>) {
    if let (Some(r), None) = (&s.retry, &ra.retry_policy) {
        ra.retry_policy = Some(retry_policy(r));
    }
    if let (Some(t), None) = (s.request_timeout, &ra.timeout) {
        ra.timeout = Some(nanos(t));
    }
    for u in &s.upgrades {
        ra.upgrade_configs.push(route_action::UpgradeConfig {
            upgrade_type: u.clone(),
            enabled: Some(BoolValue { value: true }),
            ..Default::default()
        });
    }
    // Enabled on the route: Envoy takes an upgrade the route enables even where the connection
    // manager does not list it. A connect config makes Envoy terminate the CONNECT itself.
    if let Some(c) = &s.connect {
        ra.upgrade_configs.push(route_action::UpgradeConfig {
            upgrade_type: "CONNECT".into(),
            enabled: Some(BoolValue { value: true }),
            connect_config: c.terminate.then(Default::default),
        });
    }
    if let Some(LoadBalancer {
        policy: LbPolicy::ConsistentHash { hash, .. },
        ..
    }) = cluster.and_then(|c| c.load_balancer.as_ref())
    {
        ra.hash_policy = hash.iter().map(hash_policy).collect();
    }
}

fn http_fault(f: &Fault) -> HttpFault {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
    HttpFault {
        abort: f.abort.as_ref().map(|a| EnvoyAbort {
            error_type: Some(match a.with {
                AbortWith::Http(s) => fault_abort::ErrorType::HttpStatus(s),
                AbortWith::Grpc(s) => fault_abort::ErrorType::GrpcStatus(s),
            }),
            percentage: Some(per_million(a.per_million)),
            ..Default::default()
        }),
        delay: f.delay.as_ref().map(|d| FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(nanos(d.fixed))),
            percentage: Some(per_million(d.per_million)),
        }),
        ..Default::default()
    }
}
