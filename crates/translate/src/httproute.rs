//! HTTPRoute rules: matches, filters and actions → Envoy routes; precedence.

use crate::backend::resolve_backend;
use crate::envoy::EndpointAddr;
use crate::index::Index;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route, route_action, route_match, weighted_cluster,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RouteAction, RouteMatch,
    WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::UInt32Value;
use flotilla_model::gateway::{HttpRoute, HttpRouteMatch, HttpRouteRule};
use flotilla_model::ResourceKey;
use std::collections::BTreeMap;

/// A route after per-route validation, independent of the parent it attaches to.
pub(crate) struct CheckedRoute {
    /// Rules that survived validation, with their index in the spec.
    pub rules: Vec<(usize, CheckedRule)>,
    pub dropped: Vec<String>,
    pub unresolved: Vec<(&'static str, String)>,
}

pub(crate) struct CheckedRule {
    pub matches: Vec<RouteMatch>,
    pub action: route::Action,
}

pub(crate) fn dropped_indices(c: &CheckedRoute) -> String {
    let idx: Vec<String> = c
        .dropped
        .iter()
        .filter_map(|m| {
            m.strip_prefix("Failed to process route rule ")
                .and_then(|s| s.split(':').next())
                .map(str::to_string)
        })
        .collect();
    format!("[{}]", idx.join(", "))
}

/// Validates the route's rules and resolves its backends (adding their clusters).
pub(crate) fn check_route(
    ix: &Index,
    key: &ResourceKey,
    route: &HttpRoute,
    clusters: &mut BTreeMap<String, Vec<EndpointAddr>>,
) -> CheckedRoute {
    let mut out = CheckedRoute {
        rules: vec![],
        dropped: vec![],
        unresolved: vec![],
    };
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let matches = match rule_matches(rule) {
            Ok(m) => m,
            Err(e) => {
                out.dropped
                    .push(format!("Failed to process route rule {ri}: {e}."));
                continue;
            }
        };
        let mut weighted = Vec::new();
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            match resolve_backend(ix, key, b) {
                Ok((name, endpoints)) => {
                    clusters.insert(name.clone(), endpoints);
                    let w = b.weight.unwrap_or(1).max(0) as u32;
                    if w > 0 {
                        weighted.push((name, w));
                    }
                }
                Err((reason, msg)) => out.unresolved.push((
                    reason,
                    format!("Failed to process route rule {ri} backendRef {bi}: {msg}."),
                )),
            }
        }
        let action = match weighted.len() {
            0 => route::Action::DirectResponse(DirectResponseAction {
                status: 500,
                ..Default::default()
            }),
            1 => route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    weighted[0].0.clone(),
                )),
                ..Default::default()
            }),
            _ => route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                    WeightedCluster {
                        clusters: weighted
                            .into_iter()
                            .map(|(name, w)| weighted_cluster::ClusterWeight {
                                name,
                                weight: Some(UInt32Value { value: w }),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
        };
        out.rules.push((ri, CheckedRule { matches, action }));
    }
    out
}

fn rule_matches(rule: &HttpRouteRule) -> Result<Vec<RouteMatch>, String> {
    if rule.matches.is_empty() {
        return Ok(vec![RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }]);
    }
    rule.matches.iter().map(route_match_of).collect()
}

fn regex(value: &str) -> Result<RegexMatcher, String> {
    // Envoy evaluates RE2. The `regex` crate accepts the same syntax (both guarantee linear
    // time and reject backreferences/lookaround), so a pattern it rejects would be NACKed.
    regex::Regex::new(value)
        .map_err(|e| format!("regex {value:?} is invalid: {}", first_line(&e.to_string())))?;
    Ok(RegexMatcher {
        regex: value.to_string(),
        engine_type: None,
    })
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

fn string_match(type_: Option<&str>, value: &str) -> Result<StringMatcher, String> {
    let pattern = match type_.unwrap_or("Exact") {
        "Exact" => string_matcher::MatchPattern::Exact(value.to_string()),
        "RegularExpression" => string_matcher::MatchPattern::SafeRegex(regex(value)?),
        other => return Err(format!("match type {other:?} is not supported")),
    };
    Ok(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

fn route_match_of(m: &HttpRouteMatch) -> Result<RouteMatch, String> {
    let path = m.path.as_ref();
    let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
    let path_specifier = match path
        .and_then(|p| p.type_.as_deref())
        .unwrap_or("PathPrefix")
    {
        "Exact" => route_match::PathSpecifier::Path(value.to_string()),
        "PathPrefix" => {
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
        "RegularExpression" => route_match::PathSpecifier::SafeRegex(regex(value)?),
        other => return Err(format!("path match type {other:?} is not supported")),
    };
    let mut headers = Vec::new();
    for h in &m.headers {
        headers.push(HeaderMatcher {
            name: h.name.to_ascii_lowercase(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_match(h.type_.as_deref(), &h.value)?,
            )),
            ..Default::default()
        });
    }
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_match(None, method)?,
            )),
            ..Default::default()
        });
    }
    let mut query_parameters = Vec::new();
    for q in &m.query_params {
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
    Ok(RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters,
        ..Default::default()
    })
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
    pub(crate) fn new(
        m: Option<&HttpRouteMatch>,
        rank: usize,
        rule: usize,
        matched: usize,
    ) -> Self {
        let path = m.and_then(|m| m.path.as_ref());
        let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
        let path_kind = match path
            .and_then(|p| p.type_.as_deref())
            .unwrap_or("PathPrefix")
        {
            "Exact" => 0,
            "RegularExpression" => 1,
            _ => 2,
        };
        Self {
            path_kind,
            neg_path_len: -(value.trim_end_matches('/').len() as i64),
            no_method: m.is_none_or(|m| m.method.is_none()),
            neg_headers: -(m.map_or(0, |m| m.headers.len()) as i64),
            neg_queries: -(m.map_or(0, |m| m.query_params.len()) as i64),
            rank,
            rule,
            matched,
        }
    }
}
