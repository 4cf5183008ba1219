//! HTTPRoute and GRPCRoute filters → what they do to an Envoy route, and the status errors
//! Envoy Gateway reports for invalid ones (`ProcessHTTPFilters` / `ProcessGRPCFilters`).
//!
//! A rule's filters are processed in order into one [`Filtered`]; each problem becomes a
//! [`StatusError`] carrying the condition type it lands on (Accepted → the rule is dropped,
//! ResolvedRefs → the rule answers 500, BackendsAvailable), with Envoy Gateway's wording.

use crate::backend::resolve_backend;
use crate::index::Index;
pub(crate) use crate::ir::route::RouteKind;
use crate::status::{CondType, ErrorCollector, StatusError};
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
    RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::BoolValue;
use flotilla_model::gateway::{
    HttpBackendRef, HttpCors, HttpHeaderFilter, HttpRequestMirror, HttpRequestRedirect,
    HttpRouteFilter, HttpUrlRewrite, LocalObjectReference,
};
use flotilla_model::{Kind, Object, ResourceKey, EG_GROUP};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HostRewrite {
    Literal(String),
    Header(String),
    Backend,
    PathRegex(String, String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PathRewrite {
    Full(String),
    Prefix(String),
    Regex(String, String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct UrlRewrite {
    pub host: Option<HostRewrite>,
    pub path: Option<PathRewrite>,
}

impl UrlRewrite {
    fn has_core(&self) -> bool {
        matches!(
            self.path,
            Some(PathRewrite::Full(_) | PathRewrite::Prefix(_))
        ) || matches!(self.host, Some(HostRewrite::Literal(_)))
    }
    fn has_extension(&self) -> bool {
        matches!(self.path, Some(PathRewrite::Regex(..)))
            || matches!(
                self.host,
                Some(HostRewrite::Header(_) | HostRewrite::Backend | HostRewrite::PathRegex(..))
            )
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathRewrite>,
    pub port: Option<u32>,
    pub status_code: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DirectResponse {
    pub status: u32,
    pub body: Option<Vec<u8>>,
}

/// A cookie match contributed by an Envoy Gateway HTTPRouteFilter's `matches`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CookieMatch {
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// What a rule's filters amount to.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Filtered {
    pub direct_response: Option<DirectResponse>,
    pub redirect: Option<Redirect>,
    pub url_rewrite: Option<UrlRewrite>,
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    pub mirrors: Vec<RequestMirrorPolicy>,
    pub cors: Option<CorsPolicy>,
    /// Cookie matches of an HTTPRouteFilter, ANDed with the rule's matches (one set per
    /// filter match).
    pub cookie_matches: Vec<Vec<CookieMatch>>,
}

/// Everything the filters of one rule need from outside.
pub(crate) struct FilterScope<'a> {
    pub ix: &'a Index,
    pub route: &'a ResourceKey,
    pub kind: RouteKind,
    pub clusters: &'a mut crate::ir::cluster::Backends,
}

const MIRROR_DIRECT_RESPONSE_CONFLICT: &str =
    "RequestMirror filter cannot be used when the rule also configures a DirectResponse filter";
const MIRROR_REDIRECT_CONFLICT: &str =
    "RequestMirror filter cannot be used when the rule also configures a RequestRedirect filter";

fn accepted(reason: &str, msg: impl Into<String>) -> StatusError {
    StatusError::new(CondType::Accepted, reason, msg)
}

fn unsupported(msg: impl Into<String>) -> StatusError {
    accepted("UnsupportedValue", msg)
}

/// Processes a rule's (or a backendRef's) filters in order, as Envoy Gateway does: an invalid
/// filter makes the rule answer 500 and stops the processing of the filters after it.
pub(crate) fn process_filters(
    scope: &mut FilterScope<'_>,
    filters: &[HttpRouteFilter],
) -> (Filtered, Vec<StatusError>) {
    let mut f = Filtered::default();
    let mut errs = ErrorCollector::default();
    for (fi, filter) in filters.iter().enumerate() {
        if f.direct_response.is_some() {
            break;
        }
        if let Err(e) = validate_filter(filter, scope.kind) {
            errs.add(invalid_filter(&mut f, &filter.type_, &e));
            continue;
        }
        let res = match filter.type_.as_str() {
            "URLRewrite" => filter
                .url_rewrite
                .as_ref()
                .map_or(Ok(()), |r| url_rewrite(&mut f, r)),
            "RequestRedirect" => redirect(&mut f, filter.request_redirect.as_ref()),
            "RequestHeaderModifier" => {
                filter.request_header_modifier.as_ref().map_or(Ok(()), |h| {
                    header_modifier(
                        h,
                        "RequestHeaderModifier",
                        &mut f.request_add,
                        &mut f.request_remove,
                    )
                })
            }
            "ResponseHeaderModifier" => {
                filter
                    .response_header_modifier
                    .as_ref()
                    .map_or(Ok(()), |h| {
                        header_modifier(
                            h,
                            "ResponseHeaderModifier",
                            &mut f.response_add,
                            &mut f.response_remove,
                        )
                    })
            }
            "RequestMirror" => filter
                .request_mirror
                .as_ref()
                .map_or(Ok(()), |m| mirror(scope, &mut f, fi, m)),
            "CORS" => {
                if let Some(c) = &filter.cors {
                    f.cors = Some(cors(c));
                }
                Ok(())
            }
            "ExtensionRef" => filter
                .extension_ref
                .as_ref()
                .map_or(Ok(()), |r| extension_ref(scope, &mut f, r)),
            other => Err(unsupported_filter(&mut f, other)),
        };
        if let Err(e) = res {
            errs.add(e);
        }
    }
    if f.direct_response.is_some() && !f.mirrors.is_empty() {
        f.direct_response = None;
        f.mirrors.clear();
        errs.add(accepted(
            "IncompatibleFilters",
            MIRROR_DIRECT_RESPONSE_CONFLICT,
        ));
    }
    if f.redirect.is_some() && !f.mirrors.is_empty() {
        f.redirect = None;
        f.mirrors.clear();
        errs.add(accepted("IncompatibleFilters", MIRROR_REDIRECT_CONFLICT));
    }
    (f, errs.into_errors())
}

fn validate_filter(filter: &HttpRouteFilter, kind: RouteKind) -> Result<(), String> {
    let core: &[&str] = match kind {
        RouteKind::Http => &[
            "RequestMirror",
            "URLRewrite",
            "RequestRedirect",
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "CORS",
        ],
        RouteKind::Grpc => &[
            "RequestMirror",
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
        ],
    };
    if core.contains(&filter.type_.as_str()) {
        return Ok(());
    }
    if filter.type_ != "ExtensionRef" {
        return Err(format!("unsupported filter type {}", filter.type_));
    }
    match &filter.extension_ref {
        None => Err("extensionRef field must be specified for an extended filter".into()),
        Some(r) if r.group == EG_GROUP && r.kind == "HTTPRouteFilter" => Ok(()),
        Some(r) => Err(format!("unknown kind {}/{}", r.group, r.kind)),
    }
}

fn invalid_filter(f: &mut Filtered, filter_type: &str, err: &str) -> StatusError {
    f.direct_response = Some(DirectResponse {
        status: 500,
        body: None,
    });
    unsupported(format!("invalid filter {filter_type}: {err}"))
}

fn unsupported_filter(f: &mut Filtered, filter_type: &str) -> StatusError {
    f.direct_response = Some(DirectResponse {
        status: 500,
        body: None,
    });
    StatusError::new(
        CondType::ResolvedRefs,
        "UnsupportedValue",
        format!("unsupported filter type: {filter_type}"),
    )
}

fn unresolved_filter(f: &mut Filtered, msg: String) -> StatusError {
    f.direct_response = Some(DirectResponse {
        status: 500,
        body: None,
    });
    StatusError::new(CondType::ResolvedRefs, "UnsupportedValue", msg)
}

const MULTIPLE_REWRITES: &str =
    "cannot configure multiple urlRewrite filters for a single HTTPRouteRule";

fn url_rewrite(f: &mut Filtered, r: &HttpUrlRewrite) -> Result<(), StatusError> {
    let wants = r.hostname.is_some() || r.path.is_some();
    if let Some(ctx) = &f.url_rewrite {
        let conflicting = (r.hostname.is_some()
            && matches!(
                ctx.host,
                Some(HostRewrite::Header(_) | HostRewrite::Backend | HostRewrite::PathRegex(..))
            ))
            || (r.path.is_some() && matches!(ctx.path, Some(PathRewrite::Regex(..))));
        if (ctx.has_core() && wants) || conflicting {
            return Err(unsupported(MULTIPLE_REWRITES));
        }
    }
    if let Some(h) = &r.hostname {
        validate_hostname(h).map_err(unsupported)?;
        let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
        if ctx.host.is_none() {
            ctx.host = Some(HostRewrite::Literal(h.clone()));
        }
    }
    if let Some(p) = &r.path {
        let modifier = match p.type_.as_str() {
            "ReplaceFullPath" => {
                if p.replace_prefix_match.is_some() {
                    return Err(unsupported(
                        "ReplacePrefixMatch cannot be set when rewrite path type is \"ReplaceFullPath\"",
                    ));
                }
                let Some(v) = &p.replace_full_path else {
                    return Err(unsupported(
                        "ReplaceFullPath must be set when rewrite path type is \"ReplaceFullPath\"",
                    ));
                };
                PathRewrite::Full(v.clone())
            }
            "ReplacePrefixMatch" => {
                if p.replace_full_path.is_some() {
                    return Err(unsupported(
                        "ReplaceFullPath cannot be set when rewrite path type is \"ReplacePrefixMatch\"",
                    ));
                }
                let Some(v) = &p.replace_prefix_match else {
                    return Err(unsupported(
                        "ReplacePrefixMatch must be set when rewrite path type is \"ReplacePrefixMatch\"",
                    ));
                };
                PathRewrite::Prefix(v.clone())
            }
            other => {
                return Err(unsupported(format!(
                    "rewrite path type: {other} is invalid, only \"ReplaceFullPath\" and \"ReplacePrefixMatch\" are supported"
                )))
            }
        };
        let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
        if ctx.path.is_none() {
            ctx.path = Some(modifier);
        }
    }
    Ok(())
}

fn redirect(f: &mut Filtered, r: Option<&HttpRequestRedirect>) -> Result<(), StatusError> {
    if f.redirect.is_some() {
        return Err(unsupported(
            "cannot configure multiple requestRedirect filters for a single HTTPRouteRule",
        ));
    }
    let Some(r) = r else { return Ok(()) };
    let mut out = Redirect::default();
    if let Some(s) = &r.scheme {
        if s != "http" && s != "https" {
            return Err(unsupported(format!(
                "scheme: {s} is unsupported, only 'https' and 'http' are supported"
            )));
        }
        out.scheme = Some(s.clone());
    }
    if let Some(h) = &r.hostname {
        validate_hostname(h).map_err(unsupported)?;
        out.hostname = Some(h.clone());
    }
    if let Some(p) = &r.path {
        match p.type_.as_str() {
            "ReplaceFullPath" => out.path = p.replace_full_path.clone().map(PathRewrite::Full),
            "ReplacePrefixMatch" => {
                out.path = p.replace_prefix_match.clone().map(PathRewrite::Prefix)
            }
            other => {
                return Err(unsupported(format!(
                    "redirect path type: {other} is invalid, only \"ReplaceFullPath\" and \"ReplacePrefixMatch\" are supported"
                )))
            }
        }
    }
    if let Some(code) = r.status_code {
        // Every code Envoy's RedirectResponseCode has (the Gateway API enum: 301, 302, 303, 307,
        // 308); the message for any other is Envoy Gateway's.
        if !matches!(code, 301 | 302 | 303 | 307 | 308) {
            return Err(unsupported(format!(
                "status code {code} is invalid, only 302 and 301 are supported"
            )));
        }
        out.status_code = Some(code);
    }
    if let Some(port) = r.port {
        out.port = u32::try_from(port).ok().filter(|p| (1..=65535).contains(p));
    }
    f.redirect = Some(out);
    Ok(())
}

/// Gateway API's header value pattern (RFC 7230): visible characters, single inner spaces or
/// tabs, no leading or trailing whitespace.
fn valid_header_value(v: &str) -> bool {
    let visible = |c: char| ('!'..='~').contains(&c);
    if v.is_empty()
        || !v.chars().next().is_some_and(visible)
        || !v.chars().last().is_some_and(visible)
    {
        return false;
    }
    let mut prev_ws = false;
    for c in v.chars() {
        if c == ' ' || c == '\t' {
            if prev_ws {
                return false;
            }
            prev_ws = true;
        } else if visible(c) {
            prev_ws = false;
        } else {
            return false;
        }
    }
    true
}

fn modifiable(name: &str) -> bool {
    !name.contains('/') && !name.contains(':') && !name.eq_ignore_ascii_case("host")
}

/// Is `name` a token Envoy accepts as a header name (RFC 7230 tchar)?
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_option(name: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: if append {
            HeaderAppendAction::AppendIfExistsOrAdd as i32
        } else {
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        },
        ..Default::default()
    }
}

fn header_modifier(
    h: &HttpHeaderFilter,
    which: &str,
    add: &mut Vec<HeaderValueOption>,
    remove: &mut Vec<String>,
) -> Result<(), StatusError> {
    let request = which == "RequestHeaderModifier";
    let mut empty = true;
    let mut errs: Vec<String> = Vec::new();
    let has = |add: &Vec<HeaderValueOption>, n: &str| {
        add.iter().any(|o| {
            o.header
                .as_ref()
                .is_some_and(|h| h.key.eq_ignore_ascii_case(n))
        })
    };
    for (verb, list, append) in [("add", &h.add, true), ("set", &h.set, false)] {
        if !list.is_empty() {
            empty = false;
        }
        for hd in list {
            if hd.name.is_empty() {
                errs.push(format!(
                    "{which} Filter cannot {verb} a header with an empty name"
                ));
                continue;
            }
            if !modifiable(&hd.name) {
                // Envoy Gateway words the response case as "set" for both verbs.
                let verb = if request { verb } else { "set" };
                let tail = if request {
                    " To modify the Host header use the URLRewrite or the HTTPRouteFilter filter."
                } else {
                    ""
                };
                errs.push(format!(
                    "Header: {:?}. The {which} filter cannot {verb} the Host header or headers with a '/' or ':' character in them.{tail}",
                    hd.name
                ));
                continue;
            }
            if !valid_header_value(&hd.value) {
                errs.push(format!(
                    "Header: {:?}. {which} Filter cannot {verb} a header with an invalid value.",
                    hd.name
                ));
                continue;
            }
            if !valid_header_name(&hd.name) || has(add, &hd.name) {
                // Envoy would reject the name; a duplicate is ignored as Envoy Gateway does.
                continue;
            }
            add.push(header_option(&hd.name, &hd.value, append));
        }
    }
    if !h.remove.is_empty() {
        empty = false;
    }
    for r in &h.remove {
        if r.is_empty() {
            errs.push(format!(
                "{which} Filter cannot remove a header with an empty name"
            ));
            continue;
        }
        if !modifiable(r) {
            errs.push(format!(
                "Header: {r:?}. The {which} filter cannot remove the Host header or headers with a '/' or ':' character in them."
            ));
            continue;
        }
        if valid_header_name(r) && !remove.iter().any(|x| x.eq_ignore_ascii_case(r)) {
            remove.push(r.clone());
        }
    }
    if add.is_empty() && remove.is_empty() && !empty {
        let what = if request {
            "add/set/remove"
        } else {
            "add/remove"
        };
        return Err(unsupported(format!(
            "{which} Filter did not provide valid configuration to {what} any headers"
        )));
    }
    if !errs.is_empty() {
        return Err(unsupported(errs.join("\n")));
    }
    Ok(())
}

fn mirror(
    scope: &mut FilterScope<'_>,
    f: &mut Filtered,
    _filter_index: usize,
    m: &HttpRequestMirror,
) -> Result<(), StatusError> {
    let b = HttpBackendRef::from_object_ref(&m.backend_ref);
    let wrap = |msg: &str| format!("failed to validate the RequestMirror filter: {msg}");
    match resolve_backend(scope.ix, scope.route, &b) {
        Ok((id, endpoints)) => {
            let empty = endpoints.is_empty();
            let name = id.name();
            scope.clusters.insert(name.clone(), (id, endpoints));
            if empty {
                let ns = b.namespace.as_deref().unwrap_or(&scope.route.namespace);
                return Err(StatusError::new(
                    CondType::BackendsAvailable,
                    "EndpointsNotFound",
                    wrap(&format!(
                        "no ready endpoints for the related Service {ns}/{}",
                        b.name
                    )),
                ));
            }
            let percent = match (&m.fraction, m.percent) {
                (Some(fr), _) => {
                    let den = fr.denominator.unwrap_or(100).max(1) as u64;
                    Some((fr.numerator.max(0) as u64 * 1_000_000 / den).min(1_000_000))
                }
                (None, Some(p)) => Some((p.clamp(0, 100) as u64) * 10_000),
                (None, None) => None,
            };
            f.mirrors.push(RequestMirrorPolicy {
                cluster: name,
                runtime_fraction: percent.map(|millionths| RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        numerator: millionths as u32,
                        denominator: DenominatorType::Million as i32,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
            Ok(())
        }
        Err((reason, msg)) if reason == "EndpointsNotFound" => Err(StatusError::new(
            CondType::BackendsAvailable,
            reason,
            wrap(&msg),
        )),
        Err((reason, msg)) => Err(StatusError::new(CondType::ResolvedRefs, reason, wrap(&msg))),
    }
}

fn cors(c: &HttpCors) -> CorsPolicy {
    let allow_origin_string_match = c
        .allow_origins
        .iter()
        .map(|o| {
            let pattern = if o.contains('*') {
                string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: wildcard_to_regex(o),
                    engine_type: None,
                })
            } else {
                string_matcher::MatchPattern::Exact(o.clone())
            };
            StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            }
        })
        .collect();
    CorsPolicy {
        allow_origin_string_match,
        allow_methods: c.allow_methods.join(", "),
        allow_headers: c.allow_headers.join(", "),
        expose_headers: c.expose_headers.join(", "),
        max_age: c.max_age.map(|a| a.to_string()).unwrap_or_default(),
        allow_credentials: Some(BoolValue {
            value: c.allow_credentials.unwrap_or(false),
        }),
        // Envoy answers a preflight from an origin not allowed itself (without CORS headers)
        // instead of forwarding it, as Envoy Gateway configures it.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// `*` in a CORS origin matches any run of characters (Envoy Gateway's `wildcard2regex`).
pub(crate) fn wildcard_to_regex(s: &str) -> String {
    let parts: Vec<String> = s.split('*').map(regex::escape).collect();
    format!("^{}$", parts.join(".*"))
}

/// The spec of Envoy Gateway's HTTPRouteFilter, as far as Flotilla translates it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgFilterSpec {
    #[serde(default)]
    url_rewrite: Option<EgUrlRewrite>,
    #[serde(default)]
    direct_response: Option<EgDirectResponse>,
    #[serde(default)]
    credential_injection: Option<EgCredentialInjection>,
    #[serde(default)]
    matches: Option<Vec<EgMatch>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgMatch {
    #[serde(default)]
    cookies: Option<Vec<CookieMatch>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgUrlRewrite {
    #[serde(default)]
    hostname: Option<EgHostname>,
    #[serde(default)]
    path: Option<EgPath>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgHostname {
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    path_regex: Option<EgRegex>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgPath {
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    replace_regex_match: Option<EgRegex>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgRegex {
    #[serde(default)]
    pattern: String,
    #[serde(default)]
    substitution: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgDirectResponse {
    #[serde(default)]
    status_code: Option<i64>,
    #[serde(default)]
    body: Option<EgBody>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgBody {
    #[serde(default)]
    inline: Option<String>,
    #[serde(default)]
    value_ref: Option<LocalObjectReference>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgCredentialInjection {
    #[serde(default)]
    credential: EgCredential,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgCredential {
    #[serde(default)]
    value_ref: EgSecretRef,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EgSecretRef {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

fn extension_ref(
    scope: &mut FilterScope<'_>,
    f: &mut Filtered,
    r: &LocalObjectReference,
) -> Result<(), StatusError> {
    let ns = &scope.route.namespace;
    let key = ResourceKey::new(&scope.route.cluster, Kind::HTTPRouteFilter, ns, &r.name);
    let Some(res) = scope.ix.resources.get(&key) else {
        return Err(unresolved_filter(
            f,
            format!("Unable to translate HTTPRouteFilter: {ns}/{}", r.name),
        ));
    };
    let spec: EgFilterSpec = match &res.object {
        Object::Extension(_, o) => serde_json::from_value(o.spec.clone()).unwrap_or_default(),
        _ => EgFilterSpec::default(),
    };
    let matches: Vec<Vec<CookieMatch>> = spec
        .matches
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.cookies.unwrap_or_default())
        .collect();
    if !matches.is_empty() && !f.cookie_matches.is_empty() {
        return Err(unsupported(
            "only one HTTPRouteFilter with matches is supported per HTTPRouteRule",
        ));
    }
    if !matches.is_empty() {
        for m in matches.iter().flatten() {
            if m.type_.as_deref() == Some("RegularExpression") {
                crate::values::check_regex(&m.value).map_err(unsupported)?;
            }
        }
        f.cookie_matches = matches;
    }
    if let Some(rw) = &spec.url_rewrite {
        let wants = rw.hostname.is_some() || rw.path.is_some();
        if let Some(ctx) = &f.url_rewrite {
            let conflicting = (rw.hostname.is_some()
                && matches!(ctx.host, Some(HostRewrite::Literal(_))))
                || (rw.path.is_some()
                    && matches!(
                        ctx.path,
                        Some(PathRewrite::Full(_) | PathRewrite::Prefix(_))
                    ));
            if (ctx.has_extension() && wants) || conflicting {
                return Err(unsupported(MULTIPLE_REWRITES));
            }
        }
        if let Some(p) = &rw.path {
            if p.type_ == "ReplaceRegexMatch" {
                let rm = p
                    .replace_regex_match
                    .as_ref()
                    .filter(|m| !m.pattern.is_empty());
                let Some(rm) = rm else {
                    return Err(unsupported(
                        "ReplaceRegexMatch Pattern must be set when rewrite path type is \"ReplaceRegexMatch\"",
                    ));
                };
                if crate::values::check_regex(&rm.pattern).is_err() {
                    return Err(unsupported(
                        "ReplaceRegexMatch must be a valid RE2 regular expression",
                    ));
                }
                let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
                if ctx.path.is_none() {
                    ctx.path = Some(PathRewrite::Regex(
                        rm.pattern.clone(),
                        rm.substitution.clone(),
                    ));
                }
            }
        }
        if let Some(h) = &rw.hostname {
            let hm = match h.type_.as_str() {
                "Header" => match &h.header {
                    Some(name) => Some(HostRewrite::Header(name.clone())),
                    None => {
                        return Err(unsupported(
                            "Header must be set when rewrite path type is \"Header\"",
                        ))
                    }
                },
                "Backend" => Some(HostRewrite::Backend),
                "PathRegex" => {
                    let pr = h
                        .path_regex
                        .as_ref()
                        .filter(|p| !p.pattern.is_empty() && !p.substitution.is_empty());
                    let Some(pr) = pr else {
                        return Err(unsupported(
                            "PathRegex Pattern and Substitution must be set when rewrite hostname type is \"PathRegex\"",
                        ));
                    };
                    if crate::values::check_regex(&pr.pattern).is_err() {
                        return Err(unsupported(
                            "PathRegex must be a valid RE2 regular expression",
                        ));
                    }
                    Some(HostRewrite::PathRegex(
                        pr.pattern.clone(),
                        pr.substitution.clone(),
                    ))
                }
                _ => None,
            };
            if let Some(hm) = hm {
                let ctx = f.url_rewrite.get_or_insert_with(UrlRewrite::default);
                if ctx.host.is_none() {
                    ctx.host = Some(hm);
                }
            }
        }
    }
    if let Some(dr) = &spec.direct_response {
        let status = dr.status_code.unwrap_or(200);
        if scope.kind == RouteKind::Grpc && (200..300).contains(&status) {
            return Err(unsupported(
                "DirectResponse with a 2xx status code is not supported for GRPCRoute: a 2xx status maps to the gRPC OK status, but a direct response cannot carry a gRPC response message, so the client would receive an invalid response. Use a non-2xx status code to deny or block the request instead.",
            ));
        }
        let mut body = None;
        if let Some(b) = &dr.body {
            if let Some(inline) = &b.inline {
                body = Some(inline.clone().into_bytes());
            } else if let Some(vr) = &b.value_ref {
                let cm = ResourceKey::new(&scope.route.cluster, Kind::ConfigMap, ns, &vr.name);
                match scope.ix.resources.get(&cm).map(|r| &r.object) {
                    Some(Object::ConfigMap(c)) => {
                        let text = c
                            .data
                            .as_ref()
                            .and_then(|d| d.get("response.body").or_else(|| d.values().next()))
                            .map(|v| v.clone().into_bytes());
                        let binary = || {
                            c.binary_data
                                .as_ref()
                                .and_then(|d| d.get("response.body").or_else(|| d.values().next()))
                        };
                        body = text.or_else(|| binary().map(|b| b.0.clone()));
                    }
                    _ => {
                        let e = format!("configmap {ns}/{} not found", vr.name);
                        return Err(invalid_filter(f, "HTTPRouteFilter", &e));
                    }
                }
            }
        }
        f.direct_response = Some(DirectResponse {
            status: u32::try_from(status).unwrap_or(200).clamp(200, 599),
            body,
        });
    }
    if let Some(ci) = &spec.credential_injection {
        let sref = &ci.credential.value_ref;
        let sns = sref.namespace.as_deref().unwrap_or(ns);
        let sk = ResourceKey::new(&scope.route.cluster, Kind::Secret, sns, &sref.name);
        if !matches!(
            scope.ix.resources.get(&sk).map(|r| &r.object),
            Some(Object::Secret(_))
        ) {
            let e = format!("secret {sns}/{} does not exist", sref.name);
            return Err(invalid_filter(f, "HTTPRouteFilter", &e));
        }
    }
    Ok(())
}

/// Kubernetes' RFC 1123 subdomain check, worded as Envoy Gateway's `validateHostname` reports it.
pub(crate) fn validate_hostname(h: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if h.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !h.split('.').all(label_ok) {
        errs.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("hostname {h:?} is invalid: [{}]", errs.join(" ")))
    }
}

/// BackendRef-level filters: which are allowed there (Envoy Gateway's `validateBackendRef`).
pub(crate) fn check_backend_filters(
    filters: &[HttpRouteFilter],
    kind: RouteKind,
) -> Result<(), StatusError> {
    for f in filters {
        let ok = match f.type_.as_str() {
            "RequestHeaderModifier" | "ResponseHeaderModifier" => true,
            "URLRewrite" => kind == RouteKind::Http,
            "ExtensionRef" => f
                .extension_ref
                .as_ref()
                .is_some_and(|r| r.group == EG_GROUP && r.kind == "HTTPRouteFilter"),
            _ => false,
        };
        if !ok {
            return Err(StatusError::new(
                CondType::ResolvedRefs,
                "UnsupportedRefValue",
                "Specific filter is not supported within BackendRef, only RequestHeaderModifier, ResponseHeaderModifier, URLRewrite and gateway.envoyproxy.io/HTTPRouteFilter are supported",
            ));
        }
        if f.url_rewrite.as_ref().is_some_and(|r| r.path.is_some()) {
            return Err(StatusError::new(
                CondType::ResolvedRefs,
                "UnsupportedRefValue",
                "URLRewrite path modifier is not supported within BackendRef",
            ));
        }
    }
    Ok(())
}

pub(crate) fn auto_host_rewrite() -> BoolValue {
    BoolValue { value: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_rfc7230() {
        assert!(valid_header_value("a b"));
        assert!(valid_header_value("x"));
        assert!(!valid_header_value(""));
        assert!(!valid_header_value(" a"));
        assert!(!valid_header_value("a  b"));
        assert!(!valid_header_value("a\nb"));
    }

    #[test]
    fn hostnames_are_rfc1123() {
        assert!(validate_hostname("rewrite.example.com").is_ok());
        let e = validate_hostname("-rewrite.com").unwrap_err();
        assert!(e.starts_with("hostname \"-rewrite.com\" is invalid: [a lowercase RFC 1123"));
    }

    #[test]
    fn wildcard_origins_become_anchored_regexes() {
        assert_eq!(
            wildcard_to_regex("https://*.foo.com"),
            "^https://.*\\.foo\\.com$"
        );
    }

    #[test]
    fn filter_validation_names_unknown_kinds() {
        let f = HttpRouteFilter {
            type_: "ExtensionRef".into(),
            extension_ref: Some(LocalObjectReference {
                group: "unknown.group".into(),
                kind: "HTTPRouteFilter".into(),
                name: "x".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            validate_filter(&f, RouteKind::Http).unwrap_err(),
            "unknown kind unknown.group/HTTPRouteFilter"
        );
        let cors = HttpRouteFilter {
            type_: "CORS".into(),
            ..Default::default()
        };
        assert!(validate_filter(&cors, RouteKind::Http).is_ok());
        assert!(validate_filter(&cors, RouteKind::Grpc).is_err());
    }
}
