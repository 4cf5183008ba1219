//! HTTPRoute and GRPCRoute filters → what they do to an Envoy route, and the status errors
//! Envoy Gateway reports for invalid ones (`ProcessHTTPFilters` / `ProcessGRPCFilters`).
//!
//! A rule's filters are processed in order into one [`Filtered`]; each problem becomes a
//! [`StatusError`] carrying the condition type it lands on (Accepted → the rule is dropped,
//! ResolvedRefs → the rule answers 500, BackendsAvailable), with Envoy Gateway's wording.
//!
//! The filters' own modules: [`types`] (what the filters amount to, the scope they run in),
//! [`errors`] (how a filter is refused), [`rewrite`] (URLRewrite, RequestRedirect),
//! [`headers`] (header modifiers), [`mirror`] (RequestMirror), [`cors`] (CORS) and
//! [`extension`] (Envoy Gateway's HTTPRouteFilter). This file holds the processing order and
//! which filters a route kind, or a backendRef, allows; it re-exports what the routes use.

mod cors;
mod errors;
mod extension;
mod headers;
mod mirror;
mod rewrite;
mod types;

use crate::status::{CondType, ErrorCollector, StatusError};
use errors::{accepted, invalid_filter, unsupported_filter};
use flotilla_model::gateway::HttpRouteFilter;
use flotilla_model::EG_GROUP;
use mirror::{MIRROR_DIRECT_RESPONSE_CONFLICT, MIRROR_REDIRECT_CONFLICT};

pub(crate) use crate::ir::route::RouteKind;
pub(crate) use rewrite::auto_host_rewrite;
pub(crate) use types::{CookieMatch, FilterScope, Filtered, HostRewrite, PathRewrite};

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
                .map_or(Ok(()), |r| rewrite::url_rewrite(&mut f, r)),
            "RequestRedirect" => rewrite::redirect(&mut f, filter.request_redirect.as_ref()),
            "RequestHeaderModifier" => {
                filter.request_header_modifier.as_ref().map_or(Ok(()), |h| {
                    headers::header_modifier(
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
                        headers::header_modifier(
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
                .map_or(Ok(()), |m| mirror::mirror(scope, &mut f, fi, m)),
            "CORS" => {
                if let Some(c) = &filter.cors {
                    f.cors = Some(cors::cors(c));
                }
                Ok(())
            }
            "ExtensionRef" => filter
                .extension_ref
                .as_ref()
                .map_or(Ok(()), |r| extension::extension_ref(scope, &mut f, r)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_model::gateway::LocalObjectReference;

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
