//! The action of a rule: route to its backends (with rewrites, timeouts, retries, mirrors) or
//! answer directly (redirect, direct response), and the decorations filters add to the Envoy
//! route (CORS, its preflight route). Shared by HTTPRoute and GRPCRoute.

use crate::filters::{auto_host_rewrite, Filtered, HostRewrite, PathRewrite};
use crate::httproute::matches::header_matcher;
use crate::values::{self, GoDuration};
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, redirect_action, retry_policy, route, route_action, weighted_cluster,
    DirectResponseAction, HeaderMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteMatch, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use flotilla_model::gateway::{HttpRouteRetry, HttpRouteTimeouts};

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

/// The length of a route's direct response body (0 without one).
pub(crate) fn direct_body_len(r: &Route) -> usize {
    match &r.action {
        Some(route::Action::DirectResponse(d)) => match d.body.as_ref().map(|b| &b.specifier) {
            Some(Some(data_source::Specifier::InlineString(s))) => s.len(),
            Some(Some(data_source::Specifier::InlineBytes(b))) => b.len(),
            _ => 0,
        },
        _ => 0,
    }
}

/// `max_direct_response_body_size_bytes` for a route configuration whose largest direct
/// response body is `largest` bytes: unset up to Envoy's default (4 KiB).
pub(crate) fn body_size_limit(largest: usize) -> Option<UInt32Value> {
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
pub(crate) fn cors_preflight(r: &Route, f: &Filtered) -> Option<Route> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
