//! HTTPRoute rules: matches, filters and actions → Envoy routes; route status errors with
//! Envoy Gateway's semantics (`processHTTPRouteRules`); precedence.
//!
//! The pieces shared with GRPCRoute (status errors, backends of a rule, the action of a rule)
//! live here too; `grpcroute.rs` only builds its own matches.

use crate::backend::resolve_backend;
use crate::filters::{
    auto_host_rewrite, check_backend_filters, process_filters, CookieMatch, FilterScope, Filtered,
    HostRewrite, PathRewrite, RouteKind,
};
use crate::index::Index;
use crate::status::{
    accepted_reason, condition_message, set_condition, CondType, ErrorCollector, StatusError,
};
use crate::values::check_regex;
use crate::values::{self, GoDuration};
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, redirect_action, retry_policy, route, route_action,
    route_match, weighted_cluster, DirectResponseAction, HeaderMatcher, QueryParameterMatcher,
    RedirectAction, RetryPolicy, Route, RouteAction, RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use flotilla_model::gateway::Condition;
use flotilla_model::gateway::{
    HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRetry, HttpRouteTimeouts,
};
use flotilla_model::ResourceKey;
use std::collections::{BTreeMap, BTreeSet};

/// One Envoy route a rule contributes, before it is copied per host.
#[derive(Clone, Debug)]
pub(crate) struct RouteEntry {
    pub key: PrecedenceKey,
    pub route: Route,
    /// `Some(scheme)` when the route redirects without a port: the port is derived per
    /// listener (the scheme's well-known port, else the listener's).
    pub redirect_scheme: Option<Option<String>>,
    /// The rule it comes from: its index and name (`sectionName` of a policy targeting it).
    pub rule: usize,
    pub rule_name: Option<String>,
}

/// A route after per-route validation, independent of the parent it attaches to.
pub(crate) struct CheckedRoute {
    pub entries: Vec<RouteEntry>,
    /// One error per condition type (Envoy Gateway's grouped errors).
    pub errors: Vec<StatusError>,
    /// Rules with an Accepted-type error, sorted.
    pub unaccepted: Vec<usize>,
    pub rule_count: usize,
    /// Clusters that must speak HTTP/2 upstream (GRPCRoute backends).
    pub http2_clusters: BTreeSet<String>,
}

impl CheckedRoute {
    /// Applies the route's errors to one parent's conditions, as `processHTTPRouteParentRefs`
    /// does, then sets ResolvedRefs=True when nothing said otherwise.
    pub fn apply_to(&self, conds: &mut Vec<Condition>, gen: Option<i64>) {
        for e in &self.errors {
            if e.type_ == CondType::Accepted {
                if self.unaccepted.len() == self.rule_count {
                    set_condition(
                        conds,
                        Condition::new(
                            "Accepted",
                            false,
                            &e.reason,
                            condition_message(&e.message),
                            gen,
                        ),
                    );
                } else {
                    let rules: Vec<String> =
                        self.unaccepted.iter().map(|r| r.to_string()).collect();
                    set_condition(
                        conds,
                        Condition::new(
                            "PartiallyInvalid",
                            true,
                            &e.reason,
                            format!(
                                "Dropped Rule(s) [{}]: {}",
                                rules.join(" "),
                                condition_message(&e.message)
                            ),
                            gen,
                        ),
                    );
                    set_condition(
                        conds,
                        Condition::new("Accepted", true, "Accepted", "Route is accepted", gen),
                    );
                }
            } else {
                set_condition(
                    conds,
                    Condition::new(
                        e.type_.as_str(),
                        false,
                        &e.reason,
                        condition_message(&e.message),
                        gen,
                    ),
                );
            }
        }
        if !conds
            .iter()
            .any(|c| c.type_ == "ResolvedRefs" && c.status == "False")
        {
            set_condition(
                conds,
                Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "Resolved all the Object references for the Route",
                    gen,
                ),
            );
        }
    }
}

fn regex_matcher(value: &str) -> Result<RegexMatcher, String> {
    check_regex(value)?;
    Ok(RegexMatcher {
        regex: value.to_string(),
        engine_type: None,
    })
}

fn string_match(type_: Option<&str>, value: &str) -> Result<StringMatcher, String> {
    let pattern = match type_.unwrap_or("Exact") {
        "RegularExpression" => string_matcher::MatchPattern::SafeRegex(regex_matcher(value)?),
        _ => string_matcher::MatchPattern::Exact(value.to_string()),
    };
    Ok(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

pub(crate) fn header_matcher(name: &str, m: StringMatcher) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)),
        ..Default::default()
    }
}

/// Header names Envoy accepts in a matcher (non-empty token, lower-cased as HTTP/2 sends).
fn matcher_header_name(name: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b))
    {
        return Err(format!("header name {name:?} is invalid"));
    }
    Ok(name.to_ascii_lowercase())
}

fn cookie_matcher(c: &CookieMatch) -> Result<HeaderMatcher, String> {
    // A cookie `name=value` anywhere in the Cookie header.
    let value = match c.type_.as_deref().unwrap_or("Exact") {
        "Exact" => regex::escape(&c.value),
        "RegularExpression" => {
            check_regex(&c.value)?;
            format!("(?:{})", c.value)
        }
        other => return Err(format!("unsupported cookie match type {other:?}")),
    };
    let re = format!("(?:^|.*;\\s*){}={}(?:;.*|$)", regex::escape(&c.name), value);
    Ok(header_matcher(
        "cookie",
        string_match(Some("RegularExpression"), &re)?,
    ))
}

/// The precedence-relevant shape of one match.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MatchShape {
    /// 0 exact, 1 regex, 2 prefix.
    pub path_kind: u8,
    pub path_len: usize,
    pub method: bool,
    pub headers: usize,
    pub queries: usize,
}

fn http_match(
    m: &HttpRouteMatch,
    cookies: &[CookieMatch],
) -> Result<(RouteMatch, MatchShape), String> {
    let path = m.path.as_ref();
    let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
    let mut shape = MatchShape::default();
    let path_specifier = match path
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix")
    {
        "Exact" => route_match::PathSpecifier::Path(value.to_string()),
        "RegularExpression" => {
            shape.path_kind = 1;
            route_match::PathSpecifier::SafeRegex(regex_matcher(value)?)
        }
        _ => {
            shape.path_kind = 2;
            if !value.starts_with('/') {
                return Err(format!("path {value:?} must start with '/'"));
            }
            let trimmed = value.trim_end_matches('/');
            if trimmed.is_empty() {
                route_match::PathSpecifier::Prefix("/".into())
            } else {
                route_match::PathSpecifier::PathSeparatedPrefix(trimmed.to_string())
            }
        }
    };
    shape.path_len = value.trim_end_matches('/').len();
    let mut headers = Vec::new();
    for h in &m.headers {
        headers.push(header_matcher(
            &matcher_header_name(&h.name)?,
            string_match(h.type_.as_deref(), &h.value)?,
        ));
    }
    shape.headers = m.headers.len();
    if let Some(method) = &m.method {
        shape.method = true;
        headers.push(header_matcher(":method", string_match(None, method)?));
    }
    for c in cookies {
        headers.push(cookie_matcher(c)?);
    }
    let mut query_parameters = Vec::new();
    for q in &m.query_params {
        if q.name.is_empty() {
            return Err("query parameter name must not be empty".into());
        }
        query_parameters.push(QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(string_match(
                    q.type_.as_deref(),
                    &q.value,
                )?),
            ),
        });
    }
    shape.queries = m.query_params.len();
    Ok((
        RouteMatch {
            path_specifier: Some(path_specifier),
            headers,
            query_parameters,
            ..Default::default()
        },
        shape,
    ))
}

/// Backends of one rule, resolved.
pub(crate) struct RuleTarget {
    /// (cluster, weight, backend-level filters)
    pub clusters: Vec<(String, u32, Filtered)>,
    pub backend_error: bool,
    pub no_endpoints: bool,
    /// Weight of the backends that failed (invalid or without endpoints): Envoy Gateway sends
    /// that share to a cluster that does not exist, answered with 500.
    pub invalid_weight: u32,
}

pub(crate) struct RuleScope<'a> {
    pub ix: &'a Index,
    pub route: &'a ResourceKey,
    pub kind: RouteKind,
    pub rule: usize,
}

/// Resolves a rule's backendRefs (Envoy Gateway's `processDestination` per backendRef),
/// reporting each problem into `errs`.
pub(crate) fn resolve_rule_backends(
    s: &RuleScope<'_>,
    refs: &[HttpBackendRef],
    clusters: &mut crate::ir::cluster::Backends,
    errs: &mut ErrorCollector,
) -> RuleTarget {
    let ri = s.rule;
    let mut t = RuleTarget {
        clusters: vec![],
        backend_error: false,
        no_endpoints: false,
        invalid_weight: 0,
    };
    for (bi, b) in refs.iter().enumerate() {
        let wrap = |m: &str| format!("failed to process route rule {ri} backendRef {bi}: {m}");
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        if let Err(e) = check_backend_filters(&b.filters, s.kind) {
            errs.add(StatusError::new(e.type_, &e.reason, wrap(&e.message)));
            t.backend_error = true;
            t.invalid_weight = t.invalid_weight.saturating_add(weight);
            continue;
        }
        let (id, endpoints) = match resolve_backend(s.ix, s.route, b) {
            Ok(v) => v,
            Err((reason, msg)) if reason == "EndpointsNotFound" => {
                errs.add(StatusError::new(
                    CondType::BackendsAvailable,
                    reason,
                    format!("failed to find endpoints: {msg}"),
                ));
                t.no_endpoints = true;
                t.invalid_weight = t.invalid_weight.saturating_add(weight);
                continue;
            }
            Err((reason, msg)) => {
                errs.add(StatusError::new(CondType::ResolvedRefs, reason, wrap(&msg)));
                t.backend_error = true;
                t.invalid_weight = t.invalid_weight.saturating_add(weight);
                continue;
            }
        };
        let kind = b.kind.as_deref().unwrap_or("Service");
        let core = b.group.as_deref().unwrap_or("").is_empty() && kind == "Service";
        if weight > 0 && endpoints.is_empty() && (core || kind == "ServiceImport") {
            let ns = b.namespace.as_deref().unwrap_or(&s.route.namespace);
            let what = if core { "Service" } else { "ServiceImport" };
            errs.add(StatusError::new(
                CondType::BackendsAvailable,
                "EndpointsNotFound",
                format!(
                    "failed to find endpoints: no ready endpoints for the related {what} {ns}/{}",
                    b.name
                ),
            ));
            t.no_endpoints = true;
            t.invalid_weight = t.invalid_weight.saturating_add(weight);
            continue;
        }
        let mut scope = FilterScope {
            ix: s.ix,
            route: s.route,
            kind: s.kind,
            clusters,
        };
        let (filtered, ferrs) = process_filters(&mut scope, &b.filters);
        if !ferrs.is_empty() {
            let joined: Vec<String> = ferrs.iter().map(|e| e.message.clone()).collect();
            errs.add(StatusError::new(
                CondType::ResolvedRefs,
                "InvalidBackendFilters",
                wrap(&joined.join("\n")),
            ));
            t.backend_error = true;
            t.invalid_weight = t.invalid_weight.saturating_add(weight);
            continue;
        }
        let name = id.name();
        clusters.insert(name.clone(), (id, endpoints));
        if weight > 0 {
            t.clusters.push((name, weight, filtered));
        }
    }
    // Envoy Gateway: a dynamic resolver must be the rule's only backend.
    if refs.len() > 1
        && refs
            .iter()
            .any(|b| crate::backend::is_dynamic_resolver(s.ix, s.route, b))
    {
        errs.add(StatusError::new(
            CondType::ResolvedRefs,
            "InvalidBackendRef",
            format!("failed to process route rule {ri}: dynamic resolver is not supported for multiple backendRefs"),
        ));
        t.backend_error = true;
        t.clusters.clear();
    }
    t
}

/// A host rewrite taken from the path cannot go with a dynamic resolver backend: the host would
/// come from request-controlled text the forward proxy's loopback guard does not inspect
/// (Envoy Gateway rejects the rule, which answers 500).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reject_path_regex_host_rewrite(
    ix: &Index,
    key: &ResourceKey,
    ri: usize,
    refs: &[HttpBackendRef],
    filtered: &Filtered,
    filter_error: bool,
    t: &mut RuleTarget,
    errs: &mut ErrorCollector,
) {
    let path_regex = matches!(
        filtered.url_rewrite.as_ref().and_then(|u| u.host.as_ref()),
        Some(HostRewrite::PathRegex(..))
    );
    if filter_error || t.clusters.is_empty() || !path_regex {
        return;
    }
    if refs
        .iter()
        .any(|b| crate::backend::is_dynamic_resolver(ix, key, b))
    {
        errs.add(StatusError::new(
            CondType::ResolvedRefs,
            "UnsupportedValue",
            format!("failed to process route rule {ri}: host rewrite from path (PathRegex) is not supported with a dynamic resolver backend"),
        ));
        t.backend_error = true;
        t.clusters.clear();
    }
}

pub(crate) fn direct(status: u32, body: Option<&[u8]>) -> route::Action {
    route::Action::DirectResponse(DirectResponseAction {
        status,
        body: body.map(|b| DataSource {
            specifier: Some(match std::str::from_utf8(b) {
                Ok(text) => data_source::Specifier::InlineString(text.to_string()),
                Err(_) => data_source::Specifier::InlineBytes(b.to_vec()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Envoy refuses direct response bodies over 4 KiB unless the route configuration raises the
/// limit; Envoy Gateway accepts larger bodies, so the limit follows the largest one.
pub(crate) fn direct_body_limit(
    vhosts: &[envoy_types::pb::envoy::config::route::v3::VirtualHost],
) -> Option<UInt32Value> {
    let largest = vhosts
        .iter()
        .flat_map(|v| &v.routes)
        .filter_map(|r| match &r.action {
            Some(route::Action::DirectResponse(d)) => d.body.as_ref(),
            _ => None,
        })
        .map(|b| match &b.specifier {
            Some(data_source::Specifier::InlineString(s)) => s.len(),
            Some(data_source::Specifier::InlineBytes(b)) => b.len(),
            _ => 0,
        })
        .max()?;
    (largest > 4096).then(|| UInt32Value {
        value: u32::try_from(largest).unwrap_or(u32::MAX),
    })
}

fn regex_sub(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern.to_string(),
            engine_type: None,
        }),
        substitution: substitution.to_string(),
    }
}

/// How a prefix replacement maps onto Envoy for a match on `prefix`: a plain `prefix_rewrite`
/// when that is exact, else a regex that also swallows the separator so no `//` appears.
enum PrefixPlan {
    Prefix(String),
    Regex(RegexMatchAndSubstitute),
}

fn prefix_plan(prefix: &str, replacement: &str) -> PrefixPlan {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        let sub = if replacement.ends_with('/') {
            replacement.to_string()
        } else {
            format!("{replacement}/")
        };
        return PrefixPlan::Regex(regex_sub("^/", &sub));
    }
    if replacement.ends_with('/') {
        PrefixPlan::Regex(regex_sub(&format!("^{}/*", regex::escape(p)), replacement))
    } else {
        PrefixPlan::Prefix(replacement.to_string())
    }
}

pub(crate) struct ActionInput<'a> {
    pub filtered: &'a Filtered,
    pub filter_error: bool,
    pub target: &'a RuleTarget,
    /// The match's path prefix (for ReplacePrefixMatch).
    pub path_prefix: Option<&'a str>,
    pub timeouts: Option<&'a HttpRouteTimeouts>,
    pub retry: Option<&'a HttpRouteRetry>,
}

/// Envoy Gateway's `HTTPRequestTimeout` (15s), what a route timeout that does not parse becomes.
const DEFAULT_REQUEST_TIMEOUT_NANOS: i64 = 15_000_000_000;

/// The action of one route of a rule (Envoy Gateway's choice among 500, redirect, direct
/// response, 503 and forwarding) and, for a redirect without a port, its scheme.
pub(crate) fn rule_action(a: &ActionInput<'_>) -> (route::Action, Option<Option<String>>) {
    let f = a.filtered;
    if a.filter_error {
        return (direct(500, None), None);
    }
    if let Some(dr) = &f.direct_response {
        return (direct(dr.status, dr.body.as_deref()), None);
    }
    if let Some(r) = &f.redirect {
        let mut ra = RedirectAction {
            host_redirect: r.hostname.clone().unwrap_or_default(),
            port_redirect: r.port.unwrap_or(0),
            response_code: match r.status_code {
                Some(301) => redirect_action::RedirectResponseCode::MovedPermanently as i32,
                Some(303) => redirect_action::RedirectResponseCode::SeeOther as i32,
                Some(307) => redirect_action::RedirectResponseCode::TemporaryRedirect as i32,
                Some(308) => redirect_action::RedirectResponseCode::PermanentRedirect as i32,
                _ => redirect_action::RedirectResponseCode::Found as i32,
            },
            scheme_rewrite_specifier: r
                .scheme
                .clone()
                .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
            ..Default::default()
        };
        ra.path_rewrite_specifier = match &r.path {
            Some(PathRewrite::Full(p)) => Some(
                redirect_action::PathRewriteSpecifier::PathRedirect(p.clone()),
            ),
            Some(PathRewrite::Prefix(p)) => {
                Some(match prefix_plan(a.path_prefix.unwrap_or("/"), p) {
                    PrefixPlan::Prefix(p) => {
                        redirect_action::PathRewriteSpecifier::PrefixRewrite(p)
                    }
                    PrefixPlan::Regex(r) => redirect_action::PathRewriteSpecifier::RegexRewrite(r),
                })
            }
            Some(PathRewrite::Regex(p, s)) => Some(
                redirect_action::PathRewriteSpecifier::RegexRewrite(regex_sub(p, s)),
            ),
            None => None,
        };
        let derive = r.port.is_none().then(|| r.scheme.clone());
        return (route::Action::Redirect(ra), derive);
    }
    let t = a.target;
    if t.clusters.is_empty() {
        let status = if !t.backend_error && t.no_endpoints {
            503
        } else {
            500
        };
        return (direct(status, None), None);
    }
    let mut ra = RouteAction::default();
    let plain =
        t.invalid_weight == 0 && t.clusters.len() == 1 && t.clusters[0].2 == Filtered::default();
    if t.invalid_weight > 0 {
        // The failed share goes to a cluster that never exists, answered with 500.
        ra.cluster_not_found_response_code =
            route_action::ClusterNotFoundResponseCode::InternalServerError as i32;
    }
    ra.cluster_specifier = Some(if plain {
        route_action::ClusterSpecifier::Cluster(t.clusters[0].0.clone())
    } else {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: (t.invalid_weight > 0)
                .then(|| weighted_cluster::ClusterWeight {
                    name: crate::backend::INVALID_BACKEND_CLUSTER.to_string(),
                    weight: Some(UInt32Value {
                        value: t.invalid_weight,
                    }),
                    ..Default::default()
                })
                .into_iter()
                .chain(t
                .clusters
                .iter()
                .map(|(name, w, bf)| weighted_cluster::ClusterWeight {
                    name: name.clone(),
                    weight: Some(UInt32Value { value: *w }),
                    request_headers_to_add: bf.request_add.clone(),
                    request_headers_to_remove: bf.request_remove.clone(),
                    response_headers_to_add: bf.response_add.clone(),
                    response_headers_to_remove: bf.response_remove.clone(),
                    host_rewrite_specifier: match bf.url_rewrite.as_ref().and_then(|u| u.host.as_ref()) {
                        Some(HostRewrite::Literal(h)) => Some(
                            weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h.clone()),
                        ),
                        _ => None,
                    },
                    ..Default::default()
                }))
                .collect(),
            ..Default::default()
        })
    });
    if let Some(rw) = &f.url_rewrite {
        match &rw.path {
            Some(PathRewrite::Full(p)) => ra.regex_rewrite = Some(regex_sub("^/.*$", p)),
            Some(PathRewrite::Prefix(p)) => match prefix_plan(a.path_prefix.unwrap_or("/"), p) {
                PrefixPlan::Prefix(p) => ra.prefix_rewrite = p,
                PrefixPlan::Regex(r) => ra.regex_rewrite = Some(r),
            },
            Some(PathRewrite::Regex(p, s)) => ra.regex_rewrite = Some(regex_sub(p, s)),
            None => {}
        }
        ra.host_rewrite_specifier = match &rw.host {
            Some(HostRewrite::Literal(h)) => Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(h.clone()),
            ),
            Some(HostRewrite::Header(h)) => Some(
                route_action::HostRewriteSpecifier::HostRewriteHeader(h.clone()),
            ),
            Some(HostRewrite::Backend) => Some(
                route_action::HostRewriteSpecifier::AutoHostRewrite(auto_host_rewrite()),
            ),
            Some(HostRewrite::PathRegex(p, s)) => Some(
                route_action::HostRewriteSpecifier::HostRewritePathRegex(regex_sub(p, s)),
            ),
            None => None,
        };
    }
    ra.request_mirror_policies = f.mirrors.clone();
    let timeouts = a.timeouts;
    if let Some(to) = timeouts {
        // Envoy Gateway's processRouteTimeout: a timeout that does not parse becomes its
        // default request timeout (15s); no condition reports it.
        let timeout = |s: &str| {
            values::parse_gateway_duration(s)
                .unwrap_or(GoDuration::from_nanos(DEFAULT_REQUEST_TIMEOUT_NANOS))
                .to_proto()
        };
        if let Some(r) = &to.request {
            ra.timeout = Some(timeout(r));
        }
        if let (Some(b), None) = (&to.backend_request, a.retry) {
            ra.timeout = Some(timeout(b));
        }
    }
    if let Some(r) = a.retry {
        let mut rp = RetryPolicy {
            num_retries: r
                .attempts
                .and_then(|n| u32::try_from(n).ok())
                .map(|value| UInt32Value { value }),
            ..Default::default()
        };
        // Gateway API retries connection errors (disconnect, reset, per-try timeout, connect
        // failure) whether or not codes are listed: `reset` on top of Envoy Gateway's triggers.
        if r.codes.is_empty() {
            rp.retry_on =
                "reset,connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                    .into();
            rp.retriable_status_codes = vec![503];
        } else {
            rp.retry_on = "reset,connect-failure,refused-stream,retriable-status-codes".into();
            rp.retriable_status_codes = r
                .codes
                .iter()
                .filter_map(|c| u32::try_from(*c).ok())
                .collect();
        }
        // Envoy Gateway's processRouteRetry drops a backoff or a per-try timeout that does not
        // parse, silently; Envoy refuses a zero base interval, so that is dropped too.
        let parsed = |s: Option<&str>| s.and_then(|s| values::parse_gateway_duration(s).ok());
        if let Some(b) = parsed(r.backoff.as_deref()).filter(|b| !b.is_zero()) {
            rp.retry_back_off = Some(retry_policy::RetryBackOff {
                base_interval: Some(b.to_proto()),
                max_interval: None,
            });
        }
        // The backend request timeout bounds each attempt (GEP-1742), backoff or not.
        rp.per_try_timeout =
            parsed(timeouts.and_then(|t| t.backend_request.as_deref())).map(GoDuration::to_proto);
        ra.retry_policy = Some(rp);
    }
    (route::Action::Route(ra), None)
}

/// Adds the header mutations and CORS policy of the rule's filters to `route`.
pub(crate) fn decorate(route: &mut Route, f: &Filtered) {
    route.request_headers_to_add = f.request_add.clone();
    route.request_headers_to_remove = f.request_remove.clone();
    route.response_headers_to_add = f.response_add.clone();
    route.response_headers_to_remove = f.response_remove.clone();
    if let Some(c) = &f.cors {
        // One entry only: proto maps are encoded in hash-map order.
        route.typed_per_filter_config.insert(
            crate::envoy::CORS_FILTER.to_string(),
            crate::envoy::any(crate::envoy::CORS_POLICY_TYPE, c),
        );
    }
}

/// A CORS preflight (OPTIONS) never matches a route restricted to another method, so the
/// CORS filter would not see it: Envoy Gateway adds a twin route for the preflight, with the
/// method match replaced by OPTIONS + Origin + Access-Control-Request-Method. Not for cookie
/// matches (browsers send no cookies on preflights).
fn cors_preflight(r: &Route, f: &Filtered) -> Option<Route> {
    f.cors.as_ref()?;
    let m = r.r#match.as_ref()?;
    if !f.cookie_matches.is_empty() {
        return None;
    }
    let method = m.headers.iter().find(|h| h.name == ":method")?;
    let is_options = matches!(
        &method.header_match_specifier,
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(v)),
            ..
        })) if v == "OPTIONS"
    );
    if is_options {
        return None;
    }
    let any = || StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: ".*".into(),
            engine_type: None,
        })),
        ignore_case: false,
    };
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .filter(|h| h.name != ":method")
        .cloned()
        .collect();
    headers.push(header_matcher(
        ":method",
        StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact("OPTIONS".into())),
            ignore_case: false,
        },
    ));
    headers.push(header_matcher("origin", any()));
    headers.push(header_matcher("access-control-request-method", any()));
    let mut p = r.clone();
    p.name = format!("{}/cors-preflight", r.name);
    p.r#match = Some(RouteMatch {
        headers,
        ..m.clone()
    });
    Some(p)
}

/// Validates the route's rules and resolves its backends (adding their clusters).
pub(crate) fn check_route(
    ix: &Index,
    key: &ResourceKey,
    route: &HttpRoute,
    rank: usize,
    clusters: &mut crate::ir::cluster::Backends,
) -> CheckedRoute {
    let mut errs = ErrorCollector::default();
    let mut unaccepted = BTreeSet::new();
    let mut entries = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let mut scope = FilterScope {
            ix,
            route: key,
            kind: RouteKind::Http,
            clusters,
        };
        let (filtered, ferrs) = process_filters(&mut scope, &rule.filters);
        let filter_error = !ferrs.is_empty();
        for e in ferrs {
            if e.type_ == CondType::Accepted {
                unaccepted.insert(ri);
            }
            errs.add(e);
        }
        let built = crate::session::session_persistence(
            rule.session_persistence.as_ref(),
            RouteKind::Http,
            key,
            ri,
        )
        .and_then(|session| {
            let base: Vec<Option<&HttpRouteMatch>> = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches.iter().map(Some).collect()
            };
            let cookie_sets: Vec<&[CookieMatch]> = if filtered.cookie_matches.is_empty() {
                vec![&[]]
            } else {
                filtered
                    .cookie_matches
                    .iter()
                    .map(|v| v.as_slice())
                    .collect()
            };
            let mut out = Vec::new();
            for m in &base {
                for cookies in &cookie_sets {
                    let default = HttpRouteMatch::default();
                    let (rm, shape) = http_match(m.unwrap_or(&default), cookies)?;
                    let prefix = m
                        .and_then(|m| m.path.as_ref())
                        .and_then(|p| p.value.clone())
                        .unwrap_or_else(|| "/".into());
                    out.push((rm, shape, prefix));
                }
            }
            Ok((out, session))
        });
        let (matches, session) = match built {
            Ok(m) => m,
            Err(e) => {
                errs.add(StatusError::new(
                    CondType::Accepted,
                    accepted_reason("UnsupportedValue"),
                    format!("failed to process route rule {ri}: {e}"),
                ));
                unaccepted.insert(ri);
                continue;
            }
        };
        let mut target = resolve_rule_backends(
            &RuleScope {
                ix,
                route: key,
                kind: RouteKind::Http,
                rule: ri,
            },
            &rule.backend_refs,
            clusters,
            &mut errs,
        );
        reject_path_regex_host_rewrite(
            ix,
            key,
            ri,
            &rule.backend_refs,
            &filtered,
            filter_error,
            &mut target,
            &mut errs,
        );
        for (mi, (rm, shape, prefix)) in matches.into_iter().enumerate() {
            let (action, redirect_scheme) = rule_action(&ActionInput {
                filtered: &filtered,
                filter_error,
                target: &target,
                path_prefix: Some(&prefix),
                timeouts: rule.timeouts.as_ref(),
                retry: rule.retry.as_ref(),
            });
            let mut r = Route {
                name: format!(
                    "httproute/{}/{}/rule/{ri}/match/{mi}",
                    key.namespace, key.name
                ),
                r#match: Some(rm),
                action: Some(action),
                ..Default::default()
            };
            decorate(&mut r, &filtered);
            if let Some(s) = &session {
                crate::session::apply(&mut r, s);
            }
            let preflight = cors_preflight(&r, &filtered);
            entries.push(RouteEntry {
                key: PrecedenceKey::from_shape(shape, rank, ri, mi),
                route: r,
                redirect_scheme: redirect_scheme.clone(),
                rule: ri,
                rule_name: rule.name.clone(),
            });
            if let Some(p) = preflight {
                entries.push(RouteEntry {
                    key: PrecedenceKey::from_shape(shape, rank, ri, mi),
                    route: p,
                    redirect_scheme,
                    rule: ri,
                    rule_name: rule.name.clone(),
                });
            }
        }
    }
    CheckedRoute {
        entries,
        errors: errs.into_errors(),
        unaccepted: unaccepted.into_iter().collect(),
        rule_count: route.spec.rules.len(),
        http2_clusters: BTreeSet::new(),
    }
}

/// Envoy Gateway's overlap check (`checkRouteOverlaps`): routes of different xRoutes on one
/// listener whose matches are identical (same host, path, header, query and cookie matches)
/// shadow each other; each gets a RouteRulesOverlap condition naming the others.
#[derive(Default)]
pub(crate) struct OverlapTracker {
    /// listener -> canonical match key -> "Kind namespace/name" of the routes with that key
    by_listener: BTreeMap<usize, BTreeMap<String, BTreeSet<String>>>,
    /// "Kind namespace/name" -> the (listener, match key) buckets it is in, so that finding a
    /// route's conflicts reads only its own buckets (not every bucket of its listeners).
    by_route: BTreeMap<String, BTreeSet<(usize, String)>>,
}

impl OverlapTracker {
    fn display(kind: &str, key: &ResourceKey) -> String {
        format!("{kind} {}/{}", key.namespace, key.name)
    }

    pub fn record(
        &mut self,
        listener: usize,
        host: &str,
        kind: &str,
        key: &ResourceKey,
        r: &Route,
    ) {
        let Some(m) = &r.r#match else { return };
        let mut headers: Vec<String> = m.headers.iter().map(|h| format!("{h:?}")).collect();
        headers.sort();
        let mut queries: Vec<String> = m
            .query_parameters
            .iter()
            .map(|q| format!("{q:?}"))
            .collect();
        queries.sort();
        let k = format!(
            "{host}\0{:?}\0{}\0{}",
            m.path_specifier,
            headers.join("\x01"),
            queries.join("\x01")
        );
        let me = Self::display(kind, key);
        self.by_route
            .entry(me.clone())
            .or_default()
            .insert((listener, k.clone()));
        self.by_listener
            .entry(listener)
            .or_default()
            .entry(k)
            .or_default()
            .insert(me);
    }

    /// The overlap message for a route attached to `listeners`, if it overlaps another route.
    pub fn conflicts(&self, listeners: &[usize], kind: &str, key: &ResourceKey) -> Option<String> {
        let me = Self::display(kind, key);
        let mut others = BTreeSet::new();
        for (li, k) in self.by_route.get(&me).into_iter().flatten() {
            if !listeners.contains(li) {
                continue;
            }
            let Some(bucket) = self.by_listener.get(li).and_then(|b| b.get(k)) else {
                continue;
            };
            if bucket.len() > 1 {
                others.extend(bucket.iter().filter(|n| **n != me).cloned());
            }
        }
        (!others.is_empty()).then(|| {
            format!(
                "Overlapping match conditions with route(s): {}",
                others.into_iter().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Gateway API route precedence, as a sort key (smaller sorts first = matched first):
/// exact path over regex over prefix; longer paths first; then method, more header matches,
/// more query matches; then route age/name (rank) and rule/match order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PrecedenceKey {
    path_kind: u8,
    neg_path_len: i64,
    no_method: bool,
    neg_headers: i64,
    neg_queries: i64,
    rank: usize,
    rule: usize,
    matched: usize,
}

impl PrecedenceKey {
    pub(crate) fn from_shape(s: MatchShape, rank: usize, rule: usize, matched: usize) -> Self {
        Self {
            path_kind: s.path_kind,
            neg_path_len: -(s.path_len as i64),
            no_method: !s.method,
            neg_headers: -(s.headers as i64),
            neg_queries: -(s.queries as i64),
            rank,
            rule,
            matched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_messages_are_capitalized_with_a_period() {
        assert_eq!(
            condition_message("status code 1 is bad"),
            "Status code 1 is bad."
        );
        assert_eq!(condition_message("Already."), "Already.");
    }

    #[test]
    fn collector_joins_per_type() {
        let mut c = ErrorCollector::default();
        c.add(StatusError::new(
            CondType::ResolvedRefs,
            "BackendNotFound",
            "a not found",
        ));
        c.add(StatusError::new(
            CondType::ResolvedRefs,
            "InvalidKind",
            "b bad",
        ));
        c.add(StatusError::new(
            CondType::Accepted,
            "UnsupportedValue",
            "x",
        ));
        let errs = c.into_errors();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].type_, CondType::Accepted);
        assert_eq!(errs[0].message, "x");
        assert_eq!(errs[1].reason, "BackendNotFound,InvalidKind");
        assert_eq!(errs[1].message, "A not found.\nB bad.");
    }

    #[test]
    fn regex_errors_read_like_go() {
        let e = check_regex("*regex*").unwrap_err();
        assert_eq!(
            e,
            "regex \"*regex*\" is invalid: error parsing regexp: missing argument to repetition operator: `*`"
        );
        assert!(check_regex("^/v[0-9]+/.*").is_ok());
        assert!(check_regex("a+?b*?c{2}?").is_ok());
        assert!(check_regex("[*+]+").is_ok());
        assert!(check_regex(r"\*+").is_ok());
        assert_eq!(
            check_regex("\"([a-z]+)\"*+?").unwrap_err(),
            "regex \"\\\"([a-z]+)\\\"*+?\" is invalid: error parsing regexp: invalid nested repetition operator: `*+`"
        );
    }

    #[test]
    fn prefix_replacement_avoids_double_slashes() {
        match prefix_plan("/foo", "/") {
            PrefixPlan::Regex(r) => {
                assert_eq!(r.pattern.unwrap().regex, "^/foo/*");
                assert_eq!(r.substitution, "/");
            }
            PrefixPlan::Prefix(_) => panic!("expected a regex"),
        }
        assert!(matches!(prefix_plan("/foo/", "/bar"), PrefixPlan::Prefix(p) if p == "/bar"));
    }
}
