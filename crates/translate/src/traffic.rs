//! Envoy encoding of BackendTrafficPolicy settings (Envoy Gateway's `internal/xds/translator`
//! route.go, cluster.go, fault.go, custom_response.go, compressor.go, buffer.go,
//! bandwidth_limit.go, admission_control.go): what a
//! rule's routes carry and how its clusters are built, from the typed settings of
//! [`crate::ir`]. Also the HTTP filters the connection manager holds for them, disabled until a
//! route's per-filter config enables them.

use crate::envoy::{any, any_of};
use crate::ir::cluster::*;
use crate::ir::route::*;
use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier,
    UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    health_check, socket_option, transport_socket, BindConfig, HeaderValue, HeaderValueOption,
    HealthCheck, Http2ProtocolOptions, HttpProtocolOptions as CoreHttpOptions, ProxyProtocolConfig,
    SocketOption, TcpKeepalive as EnvoyKeepalive, TransportSocket, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::route::v3::{
    retry_policy, route, route_action, route_match, FilterConfig, RetryPolicy, Route, RouteAction,
};
use envoy_types::pb::envoy::extensions::filters::http::bandwidth_limit::v3::{
    bandwidth_limit, BandwidthLimit as BandwidthLimitFilter,
};
use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::{
    buffer_per_route, Buffer, BufferPerRoute,
};
use envoy_types::pb::envoy::extensions::filters::http::custom_response::v3::CustomResponse;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort as EnvoyAbort, HttpFault,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::envoy::r#type::v3::{
    fractional_percent, FractionalPercent, Int64Range, Percent,
};
use envoy_types::pb::google::protobuf::{BoolValue, Duration, UInt32Value, UInt64Value};

pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CUSTOM_RESPONSE_FILTER: &str = "envoy.filters.http.custom_response";
/// The name of a custom response action that redirects (Envoy Gateway's).
const REDIRECT_POLICY: &str =
    "envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy";
pub const BUFFER_FILTER: &str = "envoy.filters.http.buffer";
/// Two instances of the bandwidth limit filter, one per direction (Envoy Gateway's names): a
/// route's config of one instance sets one direction's limit.
pub const BANDWIDTH_REQUEST_FILTER: &str = "envoy.filters.http.bandwidth_limit/request";
pub const BANDWIDTH_RESPONSE_FILTER: &str = "envoy.filters.http.bandwidth_limit/response";
const BANDWIDTH_STAT_PREFIX: &str = "http_bandwidth_limiter";
/// The admission control filter. Envoy takes no per-route config of
/// `envoy.filters.http.admission_control` (it refuses the route configuration: "doesn't
/// support virtual host or route specific configurations"), so the connection manager holds a
/// composite filter under a matcher instead, and a route that has admission control gives that
/// filter a per-route matcher whose action runs an admission control filter with the route's
/// settings. Each route's filter is its own (its own sampling window and success rate), as a
/// per-route config would be.
pub const ADMISSION_CONTROL_FILTER: &str = "envoy.filters.http.admission_control";
/// Runtime keys of the admission control settings (Envoy requires one; no runtime layer sets
/// them, so each value is the route's).
const ADMISSION_RUNTIME_PREFIX: &str = "flotilla.admission_control";
/// The key of a cluster's upstream HTTP protocol options.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// The load balancing policy extension of `loadBalancer.type: BackendUtilization`.
const CSWRR_POLICY: &str = "envoy.load_balancing_policies.client_side_weighted_round_robin";

fn nanos(n: Nanos) -> Duration {
    crate::values::GoDuration::from_nanos(n).to_proto()
}

fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

fn per_million(n: Option<u32>) -> FractionalPercent {
    FractionalPercent {
        numerator: n.unwrap_or(1_000_000),
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

fn disabled_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        disabled: true,
        ..Default::default()
    }
}

/// Inserts the filters BackendTrafficPolicy routes enable into a connection manager's list,
/// each (but the custom response filter, see there) disabled until a route's per-filter config
/// enables it, where Envoy Gateway's
/// `newOrderedHTTPFilter` puts it: custom response and fault before CORS, the request buffer
/// after session persistence, the compressors just before the router.
pub fn insert_http_filters(filters: &mut Vec<HttpFilter>) {
    let at = |filters: &Vec<HttpFilter>, name: &str| filters.iter().position(|f| f.name == name);
    let cors = at(filters, crate::envoy::CORS_FILTER).unwrap_or(0);
    filters.splice(
        cors..cors,
        [
            // Enabled, with no matcher (it answers nothing itself): a response override that
            // redirects sends the request again through whatever route matches the new URL,
            // and it is this filter on that stream that applies the redirect's status, even
            // where that route configures no override of its own.
            HttpFilter {
                name: CUSTOM_RESPONSE_FILTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any_of(
                    &CustomResponse::default(),
                ))),
                ..Default::default()
            },
            disabled_filter(FAULT_FILTER, any_of(&HttpFault::default())),
        ],
    );
    let session =
        at(filters, crate::session::STATEFUL_SESSION_FILTER).map_or(filters.len(), |i| i + 1);
    filters.insert(session, buffer_filter());
    // The bandwidth limits after the buffer: a buffered request is limited when it is sent on.
    filters.splice(
        session + 1..session + 1,
        [BANDWIDTH_REQUEST_FILTER, BANDWIDTH_RESPONSE_FILTER].map(|name| {
            disabled_filter(
                name,
                any_of(&BandwidthLimitFilter {
                    stat_prefix: BANDWIDTH_STAT_PREFIX.to_string(),
                    ..Default::default()
                }),
            )
        }),
    );
    let router = at(filters, "envoy.filters.http.router").unwrap_or(filters.len());
    filters.splice(
        router..router,
        std::iter::once(admission_control_filter()).chain(compressor_filters()),
    );
}

/// The connection manager's admission control filter: a composite filter under a matcher that
/// matches nothing, until a route's matcher (see [`ADMISSION_CONTROL_FILTER`]) says which
/// filter to run.
fn admission_control_filter() -> HttpFilter {
    use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcher;
    use envoy_types::pb::envoy::extensions::filters::http::composite::v3::Composite;
    disabled_filter(
        ADMISSION_CONTROL_FILTER,
        any_of(&ExtensionWithMatcher {
            xds_matcher: Some(Default::default()),
            extension_config: Some(TypedExtensionConfig {
                name: "envoy.filters.http.composite".into(),
                typed_config: Some(any_of(&Composite::default())),
            }),
            ..Default::default()
        }),
    )
}

/// A route's admission control: the composite filter's per-route matcher, which always runs an
/// admission control filter with these settings (Envoy Gateway's `buildAdmissionControlConfig`
/// values; its defaults are Envoy's).
fn admission_control_per_route(
    a: &AdmissionControl,
) -> envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcherPerRoute {
    use envoy_types::pb::envoy::config::core::v3::{RuntimeDouble, RuntimePercent, RuntimeUInt32};
    use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcherPerRoute;
    use envoy_types::pb::envoy::extensions::filters::http::admission_control::v3::{
        admission_control::{success_criteria, EvaluationCriteria, SuccessCriteria},
        AdmissionControl as EnvoyAdmission,
    };
    use envoy_types::pb::envoy::extensions::filters::http::composite::v3::ExecuteFilterAction;
    use envoy_types::pb::envoy::r#type::v3::Int32Range;
    use envoy_types::pb::xds::r#type::matcher::v3::{matcher, Matcher};
    let key = |k: &str| format!("{ADMISSION_RUNTIME_PREFIX}.{k}");
    let percent = |k: &str, v: u32| RuntimePercent {
        default_value: Some(Percent {
            value: f64::from(v),
        }),
        runtime_key: key(k),
    };
    let config = EnvoyAdmission {
        sampling_window: a.sampling_window.map(nanos),
        aggression: a.rejection_aggression.map(|v| RuntimeDouble {
            default_value: f64::from(v),
            runtime_key: key("aggression"),
        }),
        sr_threshold: a.min_success_rate.map(|v| percent("sr_threshold", v)),
        rps_threshold: a.min_request_rate.map(|v| RuntimeUInt32 {
            default_value: v,
            runtime_key: key("rps_threshold"),
        }),
        max_rejection_probability: a
            .max_rejection_percent
            .map(|v| percent("max_rejection_probability", v)),
        // Envoy requires the criteria; empty lists are Envoy's defaults.
        evaluation_criteria: Some(EvaluationCriteria::SuccessCriteria(SuccessCriteria {
            http_criteria: (!a.http_success.is_empty()).then(|| success_criteria::HttpCriteria {
                http_success_status: a
                    .http_success
                    .iter()
                    .map(|c| Int32Range {
                        start: *c as i32,
                        end: *c as i32 + 1,
                    })
                    .collect(),
            }),
            grpc_criteria: (!a.grpc_success.is_empty()).then(|| success_criteria::GrpcCriteria {
                grpc_success_status: a.grpc_success.clone(),
            }),
        })),
        ..Default::default()
    };
    let action = ExecuteFilterAction {
        typed_config: Some(TypedExtensionConfig {
            name: ADMISSION_CONTROL_FILTER.into(),
            typed_config: Some(any_of(&config)),
        }),
        ..Default::default()
    };
    ExtensionWithMatcherPerRoute {
        // No matcher, only the action taken when nothing matches: always.
        xds_matcher: Some(Matcher {
            matcher_type: None,
            on_no_match: Some(Box::new(matcher::OnMatch {
                on_match: Some(matcher::on_match::OnMatch::Action(
                    envoy_types::pb::xds::core::v3::TypedExtensionConfig {
                        name: "admission-control".into(),
                        typed_config: Some(any_of(&action)),
                    },
                )),
                keep_matching: false,
            })),
        }),
    }
}

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

/// The request buffer filter.
fn buffer_filter() -> HttpFilter {
    disabled_filter(
        BUFFER_FILTER,
        any_of(&Buffer {
            // Required by Envoy; each route that enables the filter sets its own limit.
            max_request_bytes: Some(u32v(1 << 20)),
        }),
    )
}

/// The compressor filters (Envoy Gateway orders them just before the router, by name).
fn compressor_filters() -> Vec<HttpFilter> {
    use envoy_types::pb::envoy::extensions::compression::brotli::compressor::v3::Brotli;
    use envoy_types::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
    use envoy_types::pb::envoy::extensions::compression::zstd::compressor::v3::Zstd;
    use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::Compressor;
    CompressorKind::ALL
        .into_iter()
        .map(|k| {
            let (name, lib) = match k {
                CompressorKind::Brotli => (
                    "envoy.compression.brotli.compressor",
                    any_of(&Brotli::default()),
                ),
                CompressorKind::Gzip => (
                    "envoy.compression.gzip.compressor",
                    any_of(&Gzip::default()),
                ),
                CompressorKind::Zstd => (
                    "envoy.compression.zstd.compressor",
                    any_of(&Zstd::default()),
                ),
            };
            disabled_filter(
                k.filter_name(),
                any_of(&Compressor {
                    compressor_library: Some(TypedExtensionConfig {
                        name: name.to_string(),
                        typed_config: Some(lib),
                    }),
                    ..Default::default()
                }),
            )
        })
        .collect()
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

/// The custom response filter's per-route config: the first override whose status matches
/// answers with its local response, or redirects.
fn custom_response(overrides: &[ResponseOverride]) -> CustomResponse {
    use envoy_types::pb::xds::r#type::matcher::v3::{
        matcher::{
            self,
            matcher_list::{self, predicate},
        },
        string_matcher, Matcher, StringMatcher,
    };
    let status_input = || {
        Some(envoy_types::pb::xds::core::v3::TypedExtensionConfig {
            name: "status_code".into(),
            typed_config: Some(any_of(
                &envoy_types::pb::envoy::r#type::matcher::v3::HttpResponseStatusCodeMatchInput {},
            )),
        })
    };
    let exact = |code: u32| {
        predicate::MatchType::SinglePredicate(predicate::SinglePredicate {
            input: status_input(),
            matcher: Some(predicate::single_predicate::Matcher::ValueMatch(
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(code.to_string())),
                    ignore_case: false,
                },
            )),
        })
    };
    let matchers = overrides
        .iter()
        .map(|o| {
            let codes: Vec<u32> = o
                .statuses
                .iter()
                .flat_map(|s| match *s {
                    StatusMatch::Value(c) => c..=c,
                    StatusMatch::Range(a, b) => a..=b,
                })
                .collect();
            let mut all: Vec<predicate::MatchType> = Vec::new();
            match codes.len() {
                0 => {}
                1 => all.push(exact(codes[0])),
                _ => all.push(predicate::MatchType::OrMatcher(predicate::PredicateList {
                    predicate: codes
                        .into_iter()
                        .map(|c| matcher_list::Predicate {
                            match_type: Some(exact(c)),
                        })
                        .collect(),
                })),
            }
            for (name, m) in &o.headers {
                all.push(header_predicate(name, m));
            }
            let match_type = if all.len() == 1 {
                all.remove(0)
            } else {
                predicate::MatchType::AndMatcher(predicate::PredicateList {
                    predicate: all
                        .into_iter()
                        .map(|m| matcher_list::Predicate {
                            match_type: Some(m),
                        })
                        .collect(),
                })
            };
            let action = match &o.redirect {
                Some(r) => redirect_action(r),
                None => local_response_action(o),
            };
            matcher_list::FieldMatcher {
                predicate: Some(matcher_list::Predicate {
                    match_type: Some(match_type),
                }),
                on_match: Some(matcher::OnMatch {
                    on_match: Some(matcher::on_match::OnMatch::Action(action)),
                    keep_matching: false,
                }),
            }
        })
        .collect();
    CustomResponse {
        custom_response_matcher: Some(Matcher {
            matcher_type: Some(matcher::MatcherType::MatcherList(matcher::MatcherList {
                matchers,
            })),
            on_no_match: None,
        }),
    }
}

/// The action of an override that redirects: Envoy's custom response redirect policy, with the
/// parts of the URL the override sets (Envoy Gateway's `buildRedirectAction`).
fn redirect_action(r: &Redirect) -> envoy_types::pb::xds::core::v3::TypedExtensionConfig {
    use envoy_types::pb::envoy::config::route::v3::redirect_action::{
        PathRewriteSpecifier, SchemeRewriteSpecifier,
    };
    use envoy_types::pb::envoy::config::route::v3::RedirectAction;
    use envoy_types::pb::envoy::extensions::http::custom_response::redirect_policy::v3::{
        redirect_policy::RedirectActionSpecifier, RedirectPolicy,
    };
    let action = RedirectAction {
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: r.port.unwrap_or_default(),
        path_rewrite_specifier: r.path.clone().map(PathRewriteSpecifier::PathRedirect),
        ..Default::default()
    };
    envoy_types::pb::xds::core::v3::TypedExtensionConfig {
        name: REDIRECT_POLICY.into(),
        typed_config: Some(any_of(&RedirectPolicy {
            redirect_action_specifier: Some(RedirectActionSpecifier::RedirectAction(action)),
            status_code: Some(u32v(r.status)),
            ..Default::default()
        })),
    }
}

/// The action of an override that answers itself: Envoy's local response policy.
fn local_response_action(
    o: &ResponseOverride,
) -> envoy_types::pb::xds::core::v3::TypedExtensionConfig {
    use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
    use envoy_types::pb::envoy::extensions::http::custom_response::local_response_policy::v3::LocalResponsePolicy;
    let policy = LocalResponsePolicy {
                body: o.body.as_ref().map(|b| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(b.clone())),
                    ..Default::default()
                }),
                status_code: o.status.map(u32v),
                response_headers_to_add: o
                    .content_type
                    .iter()
                    .map(|ct| HeaderValueOption {
                        header: Some(HeaderValue {
                            key: "content-type".into(),
                            value: ct.clone(),
                            ..Default::default()
                        }),
                        append_action: envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
    envoy_types::pb::xds::core::v3::TypedExtensionConfig {
        name: "local_response".into(),
        typed_config: Some(any_of(&policy)),
    }
}

/// A custom response matcher's predicate on one response header.
fn header_predicate(
    name: &str,
    m: &ValueMatch,
) -> envoy_types::pb::xds::r#type::matcher::v3::matcher::matcher_list::predicate::MatchType {
    use envoy_types::pb::xds::r#type::matcher::v3::{
        matcher::matcher_list::predicate, regex_matcher, string_matcher, RegexMatcher,
        StringMatcher,
    };
    let pattern = match m {
        ValueMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        ValueMatch::Prefix(v) => string_matcher::MatchPattern::Prefix(v.clone()),
        ValueMatch::Suffix(v) => string_matcher::MatchPattern::Suffix(v.clone()),
        ValueMatch::Regex(v) => string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: v.clone(),
            engine_type: Some(regex_matcher::EngineType::GoogleRe2(
                regex_matcher::GoogleRe2 {},
            )),
        }),
    };
    predicate::MatchType::SinglePredicate(predicate::SinglePredicate {
        input: Some(envoy_types::pb::xds::core::v3::TypedExtensionConfig {
            name: "response_header".into(),
            typed_config: Some(any_of(
                &envoy_types::pb::envoy::r#type::matcher::v3::HttpResponseHeaderMatchInput {
                    header_name: name.to_string(),
                },
            )),
        }),
        matcher: Some(predicate::single_predicate::Matcher::ValueMatch(
            StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            },
        )),
    })
}

/// How a cluster talks HTTP upstream, before BackendTrafficPolicy settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamHttp {
    Http1,
    Http2,
}

/// Builds the cluster's upstream HTTP protocol options from its protocol and the settings;
/// `None` when Envoy's defaults (HTTP/1.1, no limits) are what is wanted.
pub fn protocol_options(
    proto: UpstreamHttp,
    s: Option<&ClusterSettings>,
) -> Option<HttpProtocolOptions> {
    let h2 = || {
        let h = s.and_then(|s| s.http2.as_ref());
        Http2ProtocolOptions {
            initial_stream_window_size: h.and_then(|h| h.initial_stream_window_size).map(u32v),
            initial_connection_window_size: h
                .and_then(|h| h.initial_connection_window_size)
                .map(u32v),
            max_concurrent_streams: h.and_then(|h| h.max_concurrent_streams).map(u32v),
            override_stream_error_on_invalid_http_message: h
                .and_then(|h| h.terminate_stream_on_invalid)
                .map(|value| BoolValue { value }),
            ..Default::default()
        }
    };
    let common = CoreHttpOptions {
        idle_timeout: s.and_then(|s| s.idle_timeout).map(nanos),
        max_connection_duration: s.and_then(|s| s.max_connection_duration).map(nanos),
        max_requests_per_connection: s
            .and_then(|s| s.circuit_breaker.as_ref())
            .and_then(|c| c.max_requests_per_connection)
            .map(u32v),
        ..Default::default()
    };
    let client = s.is_some_and(|s| s.use_client_protocol);
    let has_common = common != CoreHttpOptions::default();
    if proto == UpstreamHttp::Http1 && !client && !has_common {
        return None;
    }
    let upstream = if client {
        UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
            http2_protocol_options: Some(h2()),
            ..Default::default()
        })
    } else {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(match proto {
                UpstreamHttp::Http2 => {
                    explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2())
                }
                UpstreamHttp::Http1 => {
                    explicit_http_config::ProtocolConfig::HttpProtocolOptions(Default::default())
                }
            }),
        })
    };
    Some(HttpProtocolOptions {
        common_http_protocol_options: has_common.then_some(common),
        upstream_protocol_options: Some(upstream),
        ..Default::default()
    })
}

/// Sets the protocol options on `c` (the only entry of its map: deterministic encoding).
pub fn set_protocol_options(c: &mut Cluster, opts: Option<HttpProtocolOptions>) {
    c.typed_extension_protocol_options.clear();
    if let Some(o) = opts {
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS.to_string(),
            any(&format!("type.googleapis.com/{HTTP_OPTIONS}"), &o),
        );
    }
}

/// Applies the cluster-level settings to `c` (a built EDS, STRICT_DNS or dynamic forward proxy
/// cluster; its protocol options are set by [`set_protocol_options`]).
pub fn apply_cluster(c: &mut Cluster, s: &ClusterSettings) {
    let provided_lb = c.lb_policy == cluster::LbPolicy::ClusterProvided as i32;
    if let (Some(lb), false) = (&s.load_balancer, provided_lb) {
        apply_lb(c, lb);
    }
    if let Some(cb) = &s.circuit_breaker {
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_connections: cb.max_connections.map(u32v),
                max_pending_requests: cb.max_pending_requests.map(u32v),
                max_requests: cb.max_parallel_requests.map(u32v),
                max_retries: cb.max_parallel_retries.map(u32v),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if let Some(hc) = &s.active_health_check {
        c.health_checks = vec![health_check(hc)];
    }
    if let Some(o) = &s.outlier_detection {
        c.outlier_detection = Some(EnvoyOutlier {
            consecutive_5xx: o.consecutive_5xx.map(u32v),
            consecutive_gateway_failure: o.consecutive_gateway_errors.map(u32v),
            consecutive_local_origin_failure: o.consecutive_local_origin_failures.map(u32v),
            split_external_local_origin_errors: o
                .split_external_local_origin_errors
                .unwrap_or(false),
            interval: o.interval.map(nanos),
            base_ejection_time: o.base_ejection_time.map(nanos),
            max_ejection_percent: o.max_ejection_percent.map(u32v),
            ..Default::default()
        });
    }
    if let Some(b) = s.buffer_limit {
        c.per_connection_buffer_limit_bytes = Some(u32v(b));
    }
    if let Some(b) = s.socket_buffer_limit {
        // SOL_SOCKET / SO_SNDBUF and SO_RCVBUF (Linux), set before the socket connects.
        let opt = |name: i64, description: &str| SocketOption {
            description: description.into(),
            level: 1,
            name,
            value: Some(socket_option::Value::IntValue(i64::from(b))),
            state: socket_option::SocketState::StatePrebind as i32,
            ..Default::default()
        };
        c.upstream_bind_config = Some(BindConfig {
            socket_options: vec![opt(7, "SO_SNDBUF"), opt(8, "SO_RCVBUF")],
            ..Default::default()
        });
    }
    if let Some(k) = &s.tcp_keepalive {
        c.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(EnvoyKeepalive {
                keepalive_probes: k.probes.map(u32v),
                keepalive_time: k.idle_time.map(u32v),
                keepalive_interval: k.interval.map(u32v),
            }),
            ..Default::default()
        });
    }
    if let Some(v) = s.proxy_protocol {
        c.transport_socket = Some(proxy_protocol_socket(v, c.transport_socket.take()));
    }
    let dns = c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
    if let (Some(d), true) = (&s.dns, dns) {
        // Envoy deprecates these in favour of a DNS cluster extension, but still takes them
        // (as Envoy Gateway writes them).
        #[allow(deprecated)]
        {
            c.dns_refresh_rate = d.refresh_rate.map(nanos);
            if let Some(t) = d.respect_ttl {
                c.respect_dns_ttl = t;
            }
        }
        if let Some(f) = d.lookup_family {
            c.dns_lookup_family = match f {
                DnsFamily::V4Only => cluster::DnsLookupFamily::V4Only,
                DnsFamily::V6Only => cluster::DnsLookupFamily::V6Only,
                DnsFamily::V4Preferred => cluster::DnsLookupFamily::V4Preferred,
                DnsFamily::V6Preferred => cluster::DnsLookupFamily::Auto,
                DnsFamily::All => cluster::DnsLookupFamily::All,
            } as i32;
        }
    }
    if let Some(t) = s.connect_timeout {
        c.connect_timeout = Some(nanos(t));
    }
    if let Some((per, predictive)) = s.preconnect {
        use envoy_types::pb::google::protobuf::DoubleValue;
        let ratio = |p: u32| DoubleValue {
            value: f64::from(p) / 100.0,
        };
        c.preconnect_policy = Some(cluster::PreconnectPolicy {
            per_upstream_preconnect_ratio: per.map(ratio),
            predictive_preconnect_ratio: predictive.map(ratio),
            ..Default::default()
        });
    }
}

fn apply_lb(c: &mut Cluster, lb: &LoadBalancer) {
    use cluster::LbConfig as L;
    let slow_start = lb.slow_start_window.map(|w| cluster::SlowStartConfig {
        slow_start_window: Some(nanos(w)),
        ..Default::default()
    });
    match &lb.policy {
        LbPolicy::RoundRobin => {
            c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
            c.lb_config = slow_start.map(|s| {
                L::RoundRobinLbConfig(cluster::RoundRobinLbConfig {
                    slow_start_config: Some(s),
                })
            });
        }
        LbPolicy::LeastRequest => {
            c.lb_policy = cluster::LbPolicy::LeastRequest as i32;
            c.lb_config = slow_start.map(|s| {
                L::LeastRequestLbConfig(cluster::LeastRequestLbConfig {
                    slow_start_config: Some(s),
                    ..Default::default()
                })
            });
        }
        LbPolicy::Random => c.lb_policy = cluster::LbPolicy::Random as i32,
        LbPolicy::ConsistentHash { table_size, .. } => {
            c.lb_policy = cluster::LbPolicy::Maglev as i32;
            c.lb_config = table_size.map(|t| {
                L::MaglevLbConfig(cluster::MaglevLbConfig {
                    table_size: Some(UInt64Value { value: t }),
                })
            });
        }
        LbPolicy::BackendUtilization(bu) => {
            c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
            c.lb_config = None;
            c.load_balancing_policy = Some(envoy_types::pb::envoy::config::cluster::v3::LoadBalancingPolicy {
                policies: vec![envoy_types::pb::envoy::config::cluster::v3::load_balancing_policy::Policy {
                    typed_extension_config: Some(TypedExtensionConfig {
                        name: CSWRR_POLICY.into(),
                        typed_config: Some(any_of(&client_side_weighted_round_robin(
                            bu,
                            lb.slow_start_window,
                        ))),
                    }),
                }],
            });
        }
    }
    if let Some(z) = &lb.zone_aware {
        let common = c.common_lb_config.get_or_insert_with(Default::default);
        common.locality_config_specifier = Some(
            cluster::common_lb_config::LocalityConfigSpecifier::ZoneAwareLbConfig(
                cluster::common_lb_config::ZoneAwareLbConfig {
                    routing_enabled: z.percentage_enabled.map(|p| Percent {
                        value: f64::from(p),
                    }),
                    min_cluster_size: z.min_endpoints_threshold.map(|value| UInt64Value { value }),
                    ..Default::default()
                },
            ),
        );
    }
}

/// Envoy Gateway's defaults for `backendUtilization` (Envoy's own, written out).
const DEFAULT_BLACKOUT_PERIOD: Nanos = 10_000_000_000;
const DEFAULT_WEIGHT_EXPIRATION_PERIOD: Nanos = 180_000_000_000;
const DEFAULT_WEIGHT_UPDATE_PERIOD: Nanos = 1_000_000_000;

/// `loadBalancer.type: BackendUtilization` (Envoy Gateway's `buildClientSideWeightedRoundRobin`
/// in cluster.go).
fn client_side_weighted_round_robin(
    bu: &BackendUtilization,
    slow_start_window: Option<Nanos>,
) -> envoy_types::pb::envoy::extensions::load_balancing_policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin{
    use envoy_types::pb::envoy::extensions::load_balancing_policies::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin;
    use envoy_types::pb::envoy::extensions::load_balancing_policies::common::v3::{
        OrcaOobReportingConfig, SlowStartConfig,
    };
    use envoy_types::pb::google::protobuf::FloatValue;
    let oob = bu.out_of_band.as_ref();
    ClientSideWeightedRoundRobin {
        enable_oob_load_report: oob.map(|_| BoolValue { value: true }),
        oob_reporting_period: oob.and_then(|o| o.reporting_period).map(nanos),
        oob_reporting_config: oob
            .filter(|o| o.port.is_some() || o.authority.is_some())
            .map(|o| OrcaOobReportingConfig {
                port_value: o.port.unwrap_or_default(),
                authority: o.authority.clone().unwrap_or_default(),
                ..Default::default()
            }),
        blackout_period: Some(nanos(bu.blackout_period.unwrap_or(DEFAULT_BLACKOUT_PERIOD))),
        weight_expiration_period: Some(nanos(
            bu.weight_expiration_period
                .unwrap_or(DEFAULT_WEIGHT_EXPIRATION_PERIOD),
        )),
        weight_update_period: Some(nanos(
            bu.weight_update_period
                .unwrap_or(DEFAULT_WEIGHT_UPDATE_PERIOD),
        )),
        error_utilization_penalty: bu.error_utilization_penalty_percent.map(|p| FloatValue {
            value: p as f32 / 100.0,
        }),
        metric_names_for_computing_utilization: bu.metric_names.clone(),
        slow_start_config: slow_start_window.map(|w| SlowStartConfig {
            slow_start_window: Some(nanos(w)),
            ..Default::default()
        }),
    }
}

/// The response headers an endpoint reports its load in (ORCA, text/JSON and binary forms).
pub(crate) const ORCA_HEADERS: [&str; 2] = ["endpoint-load-metrics", "endpoint-load-metrics-bin"];

fn payload(p: &Payload) -> health_check::Payload {
    health_check::Payload {
        payload: Some(match p {
            Payload::Text(t) => health_check::payload::Payload::Text(hex::encode(t.as_bytes())),
            Payload::Binary(b) => health_check::payload::Payload::Binary(b.clone()),
        }),
    }
}

fn health_check(hc: &ActiveHealthCheck) -> HealthCheck {
    use envoy_types::pb::envoy::config::core::v3::RequestMethod;
    let checker = match &hc.kind {
        HealthCheckKind::Http {
            path,
            host,
            method,
            expected,
            retriable,
            response,
            request,
        } => health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            path: path.clone(),
            host: host.clone().unwrap_or_default(),
            method: match method.as_deref() {
                Some("HEAD") => RequestMethod::Head,
                Some("POST") => RequestMethod::Post,
                Some("PUT") => RequestMethod::Put,
                Some("DELETE") => RequestMethod::Delete,
                Some("OPTIONS") => RequestMethod::Options,
                Some("TRACE") => RequestMethod::Trace,
                Some("PATCH") => RequestMethod::Patch,
                _ => RequestMethod::MethodUnspecified,
            } as i32,
            expected_statuses: expected
                .iter()
                .map(|(a, b)| Int64Range {
                    start: i64::from(*a),
                    end: i64::from(*b),
                })
                .collect(),
            retriable_statuses: retriable
                .iter()
                .map(|(a, b)| Int64Range {
                    start: i64::from(*a),
                    end: i64::from(*b),
                })
                .collect(),
            receive: response.iter().map(payload).collect(),
            send: request.as_ref().map(payload),
            ..Default::default()
        }),
        HealthCheckKind::Tcp { send, receive } => {
            health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck {
                send: send.as_ref().map(payload),
                receive: receive.iter().map(payload).collect(),
                ..Default::default()
            })
        }
        HealthCheckKind::Grpc { service } => {
            health_check::HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
                service_name: service.clone().unwrap_or_default(),
                ..Default::default()
            })
        }
    };
    HealthCheck {
        timeout: Some(nanos(hc.timeout)),
        interval: Some(nanos(hc.interval)),
        initial_jitter: hc.initial_jitter.map(nanos),
        unhealthy_threshold: Some(u32v(hc.unhealthy_threshold)),
        healthy_threshold: Some(u32v(hc.healthy_threshold)),
        health_checker: Some(checker),
        ..Default::default()
    }
}

fn proxy_protocol_socket(
    v: ProxyProtocolVersion,
    inner: Option<TransportSocket>,
) -> TransportSocket {
    use envoy_types::pb::envoy::config::core::v3::proxy_protocol_config::Version;
    use envoy_types::pb::envoy::extensions::transport_sockets::proxy_protocol::v3::ProxyProtocolUpstreamTransport;
    use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
    let inner = inner.unwrap_or_else(|| TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            &RawBuffer::default(),
        ))),
    });
    TransportSocket {
        name: "envoy.transport_sockets.upstream_proxy_protocol".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(
            &ProxyProtocolUpstreamTransport {
                config: Some(ProxyProtocolConfig {
                    version: match v {
                        ProxyProtocolVersion::V1 => Version::V1,
                        ProxyProtocolVersion::V2 => Version::V2,
                    } as i32,
                    ..Default::default()
                }),
                transport_socket: Some(inner),
                ..Default::default()
            },
        ))),
    }
}

#[cfg(test)]
mod tests;
