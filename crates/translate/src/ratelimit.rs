//! Rate limits in Envoy and in the rate limit service: what a checked
//! `BackendTrafficPolicy.rateLimit` ([`crate::policy::ratelimit::RateLimit`]) becomes.
//!
//! - Local: the `local_ratelimit` HTTP filter, disabled on every HTTP connection manager and
//!   enabled per route by its per-route config (a route-wide token bucket, one bucket per
//!   rule's descriptor), as Envoy Gateway's `local_ratelimit.go` builds it.
//! - Global: the `ratelimit` HTTP filter of a gateway, with the gateway's domain, calling the
//!   `ratelimit_cluster` (the configured rate limit service); each limited route gives it
//!   `rate_limits` whose actions produce the descriptors of Envoy Gateway's `ratelimit.go`
//!   (`buildRouteRateLimits`), and the same rules become the service's rules
//!   ([`RateLimitRules`], the file format of `flotilla ratelimit`, see the `flotilla-ratelimit`
//!   crate's `config` module).
//!
//! Naming: Envoy Gateway's domain is its IR listener's name (`<gw ns>/<gw name>/<listener>`);
//! Flotilla's Envoy listeners are per port and shared by a gateway's listeners, so the domain
//! is the gateway's id (`<cluster>/<ns>/<name>`: unique across the clusters one service
//! serves), and the listener is part of each route's descriptor instead:
//! `<listener>/<route name>/<host>` (Envoy Gateway's IR route name, one counter per listener,
//! route match and host, as there).

use crate::envoy::{any_of, encode, EndpointAddr};
use crate::policy::ratelimit::{CidrSelector, Cost, HeaderSelector, LocalRateLimit, Rule};
use crate::XdsResource;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    grpc_service, ApiVersion, GrpcService, RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::route::v3::rate_limit::action::{
    ActionSpecifier, GenericKey, HeaderValueMatch, MaskedRemoteAddress, RemoteAddress,
    RequestHeaders,
};
use envoy_types::pb::envoy::config::route::v3::rate_limit::{self, Action, HitsAddend};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, route, HeaderMatcher, RateLimit as RouteRateLimit, Route,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor, LocalRateLimitDescriptor, XRateLimitHeadersRfcVersion,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit as LocalFilter;
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::{
    RateLimit as GlobalFilter, RateLimitPerRoute,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::envoy::r#type::metadata::v3::{metadata_key, MetadataKey};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent, FractionalPercent, TokenBucket};
use envoy_types::pb::google::protobuf::{BoolValue, Duration, UInt32Value, UInt64Value};
use serde::Serialize;
use std::sync::Arc;

pub const LOCAL_FILTER: &str = "envoy.filters.http.local_ratelimit";
pub const GLOBAL_FILTER: &str = "envoy.filters.http.ratelimit";
/// Envoy Gateway's name of the rate limit service's cluster.
pub const SERVICE_CLUSTER: &str = "ratelimit_cluster";
const LOCAL_STAT_PREFIX: &str = "http_local_rate_limiter";
/// Envoy Gateway's bound on the buckets of a distinct selector, per route.
const MAX_DYNAMIC_DESCRIPTORS: u32 = 10_000;
/// How long Envoy waits for the service before the failure mode applies (Envoy's default is
/// 20ms; a loaded service across a network needs more).
const SERVICE_TIMEOUT_MS: i32 = 200;

/// The rate limit filters a gateway's HTTP connection managers need: none unless its routes
/// have rate limits, as in Envoy Gateway (whose choice is per listener; Flotilla's Envoy
/// listeners are shared by a gateway's listeners, so it is per gateway).
#[derive(Clone, Copy, Debug, Default)]
pub struct HcmRateLimits<'a> {
    /// A route has a local rate limit.
    pub local: bool,
    /// The gateway's domain, when a route has a global rate limit.
    pub domain: Option<&'a str>,
    /// Refuse requests when the rate limit service cannot answer.
    pub fail_closed: bool,
}

impl HcmRateLimits<'_> {
    /// The filters; `x_ratelimit_headers: false` is a ClientTrafficPolicy's
    /// `headers.disableRateLimitHeaders` (Envoy Gateway: the global filter's
    /// `enable_x_ratelimit_headers` off). The local filter's headers are set by each route's
    /// config, which knows nothing of the listener: they stay on (see `apply_local`).
    pub fn filters(&self, x_ratelimit_headers: bool) -> Vec<HttpFilter> {
        let mut out = Vec::new();
        if self.local {
            out.push(local_filter());
        }
        out.extend(
            self.domain
                .map(|d| global_filter(d, self.fail_closed, x_ratelimit_headers)),
        );
        out
    }
}

/// The local rate limit filter: disabled, so that only the routes whose per-route config
/// enables it are limited.
fn local_filter() -> HttpFilter {
    HttpFilter {
        name: LOCAL_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any_of(&LocalFilter {
            stat_prefix: LOCAL_STAT_PREFIX.to_string(),
            max_dynamic_descriptors: Some(UInt32Value {
                value: MAX_DYNAMIC_DESCRIPTORS,
            }),
            ..Default::default()
        }))),
        disabled: true,
        ..Default::default()
    }
}

/// The global rate limit filter of a gateway whose routes have global limits: requests go to
/// [`SERVICE_CLUSTER`] with `domain`; a failing service lets requests through unless
/// `fail_closed` (Envoy Gateway's `failClosed`, default off); the responses carry the
/// `x-ratelimit-*` headers (draft 03) when `x_ratelimit_headers`.
fn global_filter(domain: &str, fail_closed: bool, x_ratelimit_headers: bool) -> HttpFilter {
    let cfg = GlobalFilter {
        domain: domain.to_string(),
        failure_mode_deny: fail_closed,
        timeout: Some(Duration {
            seconds: 0,
            nanos: SERVICE_TIMEOUT_MS * 1_000_000,
        }),
        enable_x_ratelimit_headers: if x_ratelimit_headers {
            XRateLimitHeadersRfcVersion::DraftVersion03 as i32
        } else {
            XRateLimitHeadersRfcVersion::Off as i32
        },
        rate_limit_service: Some(RateLimitServiceConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: SERVICE_CLUSTER.to_string(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
        }),
        ..Default::default()
    };
    HttpFilter {
        name: GLOBAL_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any_of(&cfg))),
        ..Default::default()
    }
}

/// The host of a `host:port` (an IPv6 address without its brackets) and the port.
fn host_port(address: &str) -> Option<(&str, u32)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// The rate limit service's cluster: every configured `host:port` (a name is resolved by DNS),
/// over HTTP/2 (gRPC), over TLS when the options give the service's CA.
pub fn service_cluster(options: &crate::TranslateOptions) -> Arc<XdsResource> {
    let addresses = &options.rate_limit_service;
    let endpoints: Vec<EndpointAddr> = addresses
        .iter()
        .filter_map(|a| {
            let (host, port) = host_port(a)?;
            Some(EndpointAddr::local(host, port, true))
        })
        .collect();
    let mut c = Cluster {
        name: SERVICE_CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        )),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(crate::envoy::cluster_load_assignment(
            SERVICE_CLUSTER,
            &endpoints,
            false,
        )),
        ..Default::default()
    };
    // The service speaks gRPC: HTTP/2.
    crate::traffic::set_protocol_options(
        &mut c,
        crate::traffic::protocol_options(crate::traffic::UpstreamHttp::Http2, None),
    );
    if let Some(ca) = options.rate_limit_service_ca.as_deref() {
        let hosts: Vec<&str> = addresses
            .iter()
            .filter_map(|a| Some(host_port(a)?.0))
            .collect();
        c.transport_socket = Some(service_tls(ca, &hosts));
    }
    encode(crate::type_url::CLUSTER, SERVICE_CLUSTER, &c)
}

/// TLS to the rate limit service: its certificate must chain to `ca` and name one of `hosts`
/// (Envoy checks no name by itself); the first host named by DNS is the SNI; ALPN h2 (gRPC).
fn service_tls(
    ca: &str,
    hosts: &[&str],
) -> envoy_types::pb::envoy::config::core::v3::TransportSocket {
    use envoy_types::pb::envoy::config::core::v3::{
        data_source, transport_socket, DataSource, TransportSocket,
    };
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
        CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        string_matcher::MatchPattern, StringMatcher,
    };
    let sans = hosts
        .iter()
        .map(|h| SubjectAltNameMatcher {
            san_type: if h.parse::<std::net::IpAddr>().is_ok() {
                SanType::IpAddress
            } else {
                SanType::Dns
            } as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(h.to_string())),
                ignore_case: false,
            }),
            ..Default::default()
        })
        .collect();
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".into()],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString(ca.to_string())),
                        ..Default::default()
                    }),
                    match_typed_subject_alt_names: sans,
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        sni: hosts
            .iter()
            .find(|h| h.parse::<std::net::IpAddr>().is_err())
            .map(|h| h.to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any_of(&ctx))),
    }
}

/// Whether `route` forwards (only a forwarding route is limited, as in Envoy Gateway).
pub fn forwards(route: &Route) -> bool {
    matches!(route.action, Some(route::Action::Route(_)))
}

/// Enables the local rate limit on `route`. Its `x-ratelimit-*` headers are always on: a
/// ClientTrafficPolicy's `headers.disableRateLimitHeaders` would need the listener here, and
/// the routes are built without it (Envoy Gateway turns them off per route from its IR
/// listener).
pub fn apply_local(route: &mut Route, local: &LocalRateLimit) {
    let mut rate_limits = Vec::new();
    let mut descriptors = Vec::new();
    for (i, r) in local.rules.iter().enumerate() {
        let (actions, entries) = selector_actions(i, r);
        rate_limits.push(RouteRateLimit {
            actions,
            ..Default::default()
        });
        descriptors.push(LocalRateLimitDescriptor {
            entries: entries
                .into_iter()
                .map(|(key, value)| rate_limit_descriptor::Entry {
                    key,
                    value: value.unwrap_or_default(),
                })
                .collect(),
            token_bucket: Some(token_bucket(r.limit.requests, r.limit.unit.seconds())),
            shadow_mode: r.shadow_mode,
        });
    }
    let all = || {
        Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: fractional_percent::DenominatorType::Hundred as i32,
            }),
            runtime_key: String::new(),
        })
    };
    let cfg = LocalFilter {
        stat_prefix: LOCAL_STAT_PREFIX.to_string(),
        token_bucket: Some(token_bucket(
            local.default.requests,
            local.default.unit.seconds(),
        )),
        filter_enabled: all(),
        filter_enforced: all(),
        enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
        descriptors,
        // A request matching a rule counts against the rule's bucket only.
        always_consume_default_token_bucket: Some(BoolValue { value: false }),
        rate_limits,
        max_dynamic_descriptors: Some(UInt32Value {
            value: MAX_DYNAMIC_DESCRIPTORS,
        }),
        ..Default::default()
    };
    route
        .typed_per_filter_config
        .insert(LOCAL_FILTER.to_string(), any_of(&cfg));
}

fn token_bucket(requests: u32, seconds: u64) -> TokenBucket {
    TokenBucket {
        max_tokens: requests,
        tokens_per_fill: Some(UInt32Value { value: requests }),
        fill_interval: Some(Duration {
            seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
            nanos: 0,
        }),
    }
}

/// The actions and descriptor entries (key, value: `None` for any value) of a rule's
/// selectors, in Envoy Gateway's order: headers, then the source CIDR; a rule without
/// selectors has a key of its own.
fn selector_actions(i: usize, r: &Rule) -> (Vec<Action>, Vec<(String, Option<String>)>) {
    let mut actions = Vec::new();
    let mut entries = Vec::new();
    for (m, h) in r.headers.iter().enumerate() {
        let key = format!("rule-{i}-match-{m}");
        match h {
            HeaderSelector::Distinct { name } => {
                actions.push(action(ActionSpecifier::RequestHeaders(RequestHeaders {
                    header_name: name.clone(),
                    descriptor_key: key.clone(),
                    skip_if_absent: false,
                })));
                entries.push((key, None));
            }
            HeaderSelector::Match {
                name,
                value,
                regex,
                invert,
            } => {
                let pattern = if *regex {
                    string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                        regex: value.clone(),
                        engine_type: None,
                    })
                } else {
                    string_matcher::MatchPattern::Exact(value.clone())
                };
                actions.push(action(ActionSpecifier::HeaderValueMatch(
                    HeaderValueMatch {
                        descriptor_key: key.clone(),
                        descriptor_value: key.clone(),
                        expect_match: Some(BoolValue { value: !invert }),
                        headers: vec![HeaderMatcher {
                            name: name.clone(),
                            header_match_specifier: Some(
                                header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                                    match_pattern: Some(pattern),
                                    ignore_case: false,
                                }),
                            ),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )));
                entries.push((key.clone(), Some(key)));
            }
        }
    }
    if let Some(c) = &r.cidr {
        actions.push(action(ActionSpecifier::MaskedRemoteAddress(masked(c))));
        entries.push(("masked_remote_address".into(), Some(c.network.clone())));
        if c.distinct {
            actions.push(action(ActionSpecifier::RemoteAddress(RemoteAddress {})));
            entries.push(("remote_address".into(), None));
        }
    }
    if !r.has_selector() {
        let key = format!("rule-{i}-match--1");
        actions.push(generic_key(&key, &key));
        entries.push((key.clone(), Some(key)));
    }
    (actions, entries)
}

fn masked(c: &CidrSelector) -> MaskedRemoteAddress {
    let len = Some(UInt32Value {
        value: c.prefix_len,
    });
    if c.v6 {
        MaskedRemoteAddress {
            v6_prefix_mask_len: len,
            ..Default::default()
        }
    } else {
        MaskedRemoteAddress {
            v4_prefix_mask_len: len,
            ..Default::default()
        }
    }
}

fn action(a: ActionSpecifier) -> Action {
    Action {
        action_specifier: Some(a),
    }
}

fn generic_key(key: &str, value: &str) -> Action {
    action(ActionSpecifier::GenericKey(GenericKey {
        descriptor_key: key.to_string(),
        descriptor_value: value.to_string(),
        default_value: String::new(),
    }))
}

/// The descriptor key (and value) naming one limited route: see the module doc. `*` is
/// spelled out, as a trailing `*` is a prefix in the service's rules.
pub fn route_descriptor(listener: &str, route_name: &str, host: &str) -> String {
    bounded(format!(
        "{listener}/{route_name}/{}",
        host.replace('.', "_").replace('*', "all")
    ))
}

/// The longest descriptor key the rate limit service takes (its `Limits::max_key_len`).
const MAX_DESCRIPTOR_KEY: usize = 256;

/// `key`, or when longer than the service takes, a digest of it (`sha256:` and 32 hex
/// digits): still one key per route, the same on every replica.
fn bounded(key: String) -> String {
    if key.len() <= MAX_DESCRIPTOR_KEY {
        return key;
    }
    use sha2::{Digest, Sha256};
    format!(
        "sha256:{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..32]
    )
}

/// Enables the global rate limit on `route` (its descriptor `key`), returning the rules the
/// service needs for it.
pub fn apply_global(route: &mut Route, rules: &[Rule], key: &str) -> Vec<ServiceRule> {
    let mut rate_limits = Vec::new();
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let (selectors, entries) = selector_actions(i, r);
        // A shared rule has one counter for every route of the policy (in this gateway's
        // domain: Envoy Gateway's shared domain spans gateways, Flotilla's domains do not).
        let shared_key = bounded(format!("backendtrafficpolicy/{}", r.policy));
        let key = if r.shared { shared_key.as_str() } else { key };
        let mut actions = vec![generic_key(key, key)];
        actions.extend(selectors);
        let hits = |c: &Option<Cost>| {
            c.as_ref().map(|c| match c {
                Cost::Number(n) => HitsAddend {
                    number: Some(UInt64Value { value: *n }),
                    ..Default::default()
                },
                Cost::Metadata { namespace, key } => HitsAddend {
                    format: format!("%DYNAMIC_METADATA({namespace}:{key})%"),
                    ..Default::default()
                },
            })
        };
        // `limit.fromMetadata`: Envoy sends the limit it finds there with the descriptor, and
        // the service counts against it instead of the rule's.
        let limit = r
            .limit_from_metadata
            .as_ref()
            .map(|(namespace, key)| rate_limit::Override {
                override_specifier: Some(
                    rate_limit::r#override::OverrideSpecifier::DynamicMetadata(
                        rate_limit::r#override::DynamicMetadata {
                            metadata_key: Some(MetadataKey {
                                key: namespace.clone(),
                                path: vec![metadata_key::PathSegment {
                                    segment: Some(metadata_key::path_segment::Segment::Key(
                                        key.clone(),
                                    )),
                                }],
                            }),
                        },
                    ),
                ),
            });
        rate_limits.push(RouteRateLimit {
            actions: actions.clone(),
            hits_addend: hits(&r.request_cost),
            limit: limit.clone(),
            ..Default::default()
        });
        // The response's cost is counted when the stream ends (Envoy Gateway's second entry).
        if r.response_cost.is_some() {
            rate_limits.push(RouteRateLimit {
                actions,
                hits_addend: hits(&r.response_cost),
                limit,
                apply_on_stream_done: true,
                ..Default::default()
            });
        }
        let mut descriptor = vec![DescriptorEntry {
            key: key.to_string(),
            value: Some(key.to_string()),
        }];
        descriptor.extend(
            entries
                .into_iter()
                .map(|(key, value)| DescriptorEntry { key, value }),
        );
        out.push(ServiceRule {
            descriptor,
            limit: ServiceLimit {
                requests_per_unit: r.limit.requests,
                unit: r.limit.unit.service_name(),
            },
            shadow_mode: r.shadow_mode,
            name: Some(r.name.clone()),
        });
    }
    route.typed_per_filter_config.insert(
        GLOBAL_FILTER.to_string(),
        any_of(&RateLimitPerRoute {
            rate_limits,
            ..Default::default()
        }),
    );
    out
}

/// The rate limit service's rules for every gateway: the file format of `flotilla ratelimit
/// --config` (`flotilla_ratelimit::RateLimitConfig`), in domain order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RateLimitRules {
    pub domains: Vec<RateLimitDomain>,
}

/// One gateway's rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimitDomain {
    pub domain: String,
    pub rules: Vec<ServiceRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceRule {
    pub descriptor: Vec<DescriptorEntry>,
    pub limit: ServiceLimit,
    pub shadow_mode: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct DescriptorEntry {
    pub key: String,
    /// `None`: any value, a counter per value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ServiceLimit {
    pub requests_per_unit: u32,
    pub unit: &'static str,
}

#[cfg(test)]
mod tests;
