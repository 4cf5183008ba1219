//! GRPCRoute rules → Envoy routes (Envoy Gateway's `processGRPCRouteRules`): a gRPC method
//! match is a match on the HTTP/2 path `/<service>/<method>`; filters, backends and status
//! errors are shared with HTTPRoute.

use crate::filters::{process_filters, FilterScope, RouteKind};
use crate::httproute::{
    decorate, header_matcher, reject_path_regex_host_rewrite, resolve_rule_backends, rule_action,
    ActionInput, CheckedRoute, MatchShape, PrecedenceKey, RouteEntry, RuleScope,
};
use crate::index::Index;
use crate::status::{CondType, ErrorCollector, StatusError};
use crate::values::check_regex;
use envoy_types::pb::envoy::config::route::v3::{route_match, Route, RouteMatch};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use flotilla_model::routes::{GrpcRoute, GrpcRouteMatch};
use flotilla_model::ResourceKey;
use std::collections::BTreeSet;

/// Envoy Gateway's patterns for "any service" / "any method" in regex method matches.
const VALID_SERVICE_NAME: &str = r"(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*";
const VALID_METHOD_NAME: &str = r"[A-Za-z_][A-Za-z_0-9]*";

fn exact(v: String) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(v)),
        ignore_case: false,
    }
}

fn safe_regex(v: String) -> Result<RegexMatcher, String> {
    check_regex(&v)?;
    Ok(RegexMatcher {
        regex: v,
        engine_type: None,
    })
}

fn grpc_match(m: &GrpcRouteMatch) -> Result<(RouteMatch, MatchShape), String> {
    let mut shape = MatchShape {
        path_kind: 2,
        ..Default::default()
    };
    let mut rm = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
        ..Default::default()
    };
    for h in &m.headers {
        let name = h.name.to_ascii_lowercase();
        if name.is_empty() {
            return Err("header name must not be empty".into());
        }
        let sm = match h.type_.as_deref().unwrap_or("Exact") {
            "RegularExpression" => StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(safe_regex(
                    h.value.clone(),
                )?)),
                ignore_case: false,
            },
            _ => exact(h.value.clone()),
        };
        rm.headers.push(header_matcher(&name, sm));
    }
    shape.headers = m.headers.len();
    if let Some(method) = &m.method {
        let (svc, meth) = (method.service.as_deref(), method.method.as_deref());
        match method.type_.as_deref().unwrap_or("Exact") {
            "RegularExpression" => {
                if let Some(s) = svc {
                    check_regex(s)?;
                }
                if let Some(me) = meth {
                    check_regex(me)?;
                }
                let re = match (svc, meth) {
                    (Some(s), Some(me)) => Some(format!("/{s}/{me}")),
                    (None, Some(me)) => Some(format!("/{VALID_SERVICE_NAME}/{me}")),
                    (Some(s), None) => Some(format!("/{s}/{VALID_METHOD_NAME}")),
                    (None, None) => None,
                };
                if let Some(re) = re {
                    shape.path_kind = 1;
                    shape.path_len = re.len();
                    rm.path_specifier =
                        Some(route_match::PathSpecifier::SafeRegex(safe_regex(re)?));
                }
            }
            _ => match (svc, meth) {
                (Some(s), Some(me)) => {
                    let p = format!("/{s}/{me}");
                    shape.path_kind = 0;
                    shape.path_len = p.len();
                    rm.path_specifier = Some(route_match::PathSpecifier::Path(p));
                }
                (None, Some(me)) => {
                    // A suffix on `:path`: path matchers have no suffix form.
                    rm.headers.push(header_matcher(
                        ":path",
                        StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::Suffix(format!(
                                "/{me}"
                            ))),
                            ignore_case: false,
                        },
                    ));
                    shape.headers += 1;
                }
                (Some(s), None) => {
                    let p = format!("/{s}");
                    shape.path_len = p.len();
                    rm.path_specifier = Some(route_match::PathSpecifier::PathSeparatedPrefix(p));
                }
                (None, None) => {}
            },
        }
    }
    // gRPC is always a POST with a gRPC content type; EG relies on the listener (HTTP/2) for
    // this, so does Flotilla.
    Ok((rm, shape))
}

/// Validates the GRPCRoute's rules and resolves its backends (adding their clusters).
pub(crate) fn check_route(
    ix: &Index,
    key: &ResourceKey,
    route: &GrpcRoute,
    rank: &std::sync::Arc<crate::values::RouteOrder>,
    clusters: &mut crate::ir::cluster::Backends,
) -> CheckedRoute {
    let mut errs = ErrorCollector::default();
    let mut unaccepted = BTreeSet::new();
    let mut entries = Vec::new();
    let mut http2_clusters = BTreeSet::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let mut scope = FilterScope {
            ix,
            route: key,
            kind: RouteKind::Grpc,
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
            RouteKind::Grpc,
            key,
            ri,
        )
        .and_then(|session| {
            let matches = if rule.matches.is_empty() {
                vec![grpc_match(&GrpcRouteMatch::default())?]
            } else {
                rule.matches
                    .iter()
                    .map(grpc_match)
                    .collect::<Result<Vec<_>, _>>()?
            };
            Ok((matches, session))
        });
        let (matches, session) = match built {
            Ok(m) => m,
            Err(e) => {
                unaccepted.insert(ri);
                errs.add(StatusError::new(
                    CondType::Accepted,
                    "UnsupportedValue",
                    format!("failed to process route rule {ri}: {e}"),
                ));
                continue;
            }
        };
        let mut target = resolve_rule_backends(
            &RuleScope {
                ix,
                route: key,
                kind: RouteKind::Grpc,
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
        http2_clusters.extend(target.clusters.iter().map(|(name, _, _)| name.clone()));
        http2_clusters.extend(filtered.mirrors.iter().map(|m| m.cluster.clone()));
        for (mi, (rm, shape)) in matches.into_iter().enumerate() {
            let (action, redirect_scheme) = rule_action(&ActionInput {
                filtered: &filtered,
                filter_error,
                target: &target,
                path_prefix: None,
                timeouts: None,
                retry: None,
            });
            let mut r = Route {
                name: format!(
                    "grpcroute/{}/{}/rule/{ri}/match/{mi}",
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
            entries.push(RouteEntry {
                key: PrecedenceKey::from_shape(shape, rank, ri, mi),
                route: r,
                redirect_scheme,
                rule: ri,
                rule_name: rule.name.clone(),
            });
        }
    }
    CheckedRoute {
        entries,
        errors: errs.into_errors(),
        unaccepted: unaccepted.into_iter().collect(),
        rule_count: route.spec.rules.len(),
        http2_clusters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_model::routes::GrpcMethodMatch;

    fn method(t: Option<&str>, s: Option<&str>, m: Option<&str>) -> GrpcRouteMatch {
        GrpcRouteMatch {
            method: Some(GrpcMethodMatch {
                type_: t.map(str::to_string),
                service: s.map(str::to_string),
                method: m.map(str::to_string),
            }),
            headers: vec![],
        }
    }

    #[test]
    fn exact_service_and_method_is_an_exact_path() {
        let (rm, _) = grpc_match(&method(None, Some("com.example"), Some("Get"))).unwrap();
        assert_eq!(
            rm.path_specifier,
            Some(route_match::PathSpecifier::Path("/com.example/Get".into()))
        );
    }

    #[test]
    fn method_only_is_a_path_suffix() {
        let (rm, _) = grpc_match(&method(None, None, Some("Get"))).unwrap();
        assert_eq!(rm.headers[0].name, ":path");
    }

    #[test]
    fn regex_service_gets_a_method_pattern() {
        let (rm, _) = grpc_match(&method(Some("RegularExpression"), Some("foo.*"), None)).unwrap();
        match rm.path_specifier {
            Some(route_match::PathSpecifier::SafeRegex(r)) => {
                assert_eq!(r.regex, format!("/foo.*/{VALID_METHOD_NAME}"))
            }
            other => panic!("{other:?}"),
        }
        assert!(grpc_match(&method(Some("RegularExpression"), Some("*x"), None)).is_err());
    }
}
