//! HTTPRoute matches → Envoy route matches: path, headers, query parameters, method, cookies
//! (Envoy Gateway's `buildXdsRoute` matchers), with the checks that refuse a match.

use crate::filters::CookieMatch;
use crate::values::check_regex;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route_match, HeaderMatcher, QueryParameterMatcher,
    RouteMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use flotilla_model::gateway::HttpRouteMatch;

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

pub(crate) fn http_match(
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
