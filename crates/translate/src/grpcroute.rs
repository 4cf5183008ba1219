//! GRPCRoute rules → Envoy routes (Envoy Gateway's `processGRPCRouteRules`): a gRPC method
//! match is a match on the HTTP/2 path `/<service>/<method>`; the rule loop (filters, backends,
//! actions, status errors) is HTTPRoute's (`crate::httproute::rules`), this file says how a
//! GRPCRoute rule's matches are built.

use crate::filters::{Filtered, RouteKind};
use crate::httproute::{
    check_rules, header_matcher, BuiltMatch, CheckedRoute, MatchShape, Rule, RuleParts,
};
use crate::index::Index;
use crate::values::check_regex;
use envoy_types::pb::envoy::config::route::v3::{route_match, RouteMatch};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use flotilla_model::routes::{GrpcRoute, GrpcRouteMatch, GrpcRouteRule};
use flotilla_model::ResourceKey;

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

impl Rule for GrpcRouteRule {
    const KIND: RouteKind = RouteKind::Grpc;
    const NAME_PREFIX: &'static str = "grpcroute";
    // gRPC needs HTTP/2 to the backends (and to the mirrors).
    const HTTP2_UPSTREAM: bool = true;

    fn parts(&self) -> RuleParts<'_> {
        RuleParts {
            name: &self.name,
            filters: &self.filters,
            backend_refs: &self.backend_refs,
            session_persistence: self.session_persistence.as_ref(),
            timeouts: None,
            retry: None,
        }
    }

    /// Method and header matches only: the cookie matches of an HTTPRouteFilter do not apply.
    fn matches(&self, _filtered: &Filtered) -> Result<Vec<BuiltMatch>, String> {
        let built = |m: &GrpcRouteMatch| {
            grpc_match(m).map(|(route_match, shape)| BuiltMatch {
                route_match,
                shape,
                path_prefix: None,
            })
        };
        if self.matches.is_empty() {
            Ok(vec![built(&GrpcRouteMatch::default())?])
        } else {
            self.matches.iter().map(built).collect()
        }
    }
}

/// Validates the GRPCRoute's rules and resolves its backends (adding their clusters).
pub(crate) fn check_route(
    ix: &Index,
    key: &ResourceKey,
    route: &GrpcRoute,
    rank: &std::sync::Arc<crate::values::RouteOrder>,
    clusters: &mut crate::ir::cluster::Backends,
) -> CheckedRoute {
    check_rules(ix, key, &route.spec.rules, rank, clusters)
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
