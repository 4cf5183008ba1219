//! Route rules' `sessionPersistence` → Envoy's stateful session filter.
//!
//! As Envoy Gateway does it: the HTTP connection manager carries the
//! `envoy.filters.http.stateful_session` filter disabled, and each route of a rule with session
//! persistence enables it with its own `StatefulSessionPerRoute`: a cookie (named by
//! `sessionName`, or `httproute-NS-NAME-rule-I` when unnamed; path derived from the route's path
//! match; a TTL only for a Permanent cookie with an absoluteTimeout) or a header. Envoy encodes
//! the chosen upstream host in that cookie/header and prefers it on the next request.

use crate::ir::route::RouteKind;
use crate::values;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::route::v3::{route_match, Route, RouteMatch};
use envoy_types::pb::envoy::extensions::filters::http::stateful_session::v3::{
    stateful_session_per_route, StatefulSession, StatefulSessionPerRoute,
};
use envoy_types::pb::envoy::extensions::http::stateful_session::cookie::v3::CookieBasedSessionState;
use envoy_types::pb::envoy::extensions::http::stateful_session::header::v3::HeaderBasedSessionState;
use envoy_types::pb::envoy::r#type::http::v3::Cookie;
use envoy_types::pb::google::protobuf::Duration;
use flotilla_model::gateway::SessionPersistence;
use flotilla_model::ResourceKey;
use prost::Name;

/// Name of the stateful session HTTP filter; routes enable it in `typed_per_filter_config`.
pub const STATEFUL_SESSION_FILTER: &str = "envoy.filters.http.stateful_session";

/// Where a rule keeps its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Session {
    Cookie { name: String, ttl: Option<Duration> },
    Header { name: String },
}

/// Validates a rule's session persistence as Envoy Gateway does and resolves its defaults.
/// `Err` is the rule's error message (the rule is then not accepted).
pub(crate) fn session_persistence(
    sp: Option<&SessionPersistence>,
    kind: RouteKind,
    route: &ResourceKey,
    rule: usize,
) -> Result<Option<Session>, String> {
    let Some(sp) = sp else { return Ok(None) };
    if sp.idle_timeout.is_some() {
        return Err("idle timeout is not supported in envoy gateway".into());
    }
    let name = match &sp.session_name {
        Some(n) => n.clone(),
        // Envoy needs a name; unique per rule ('/' is not allowed in a header name).
        None => {
            let kind = match kind {
                RouteKind::Http => "httproute",
                RouteKind::Grpc => "grpcroute",
            };
            format!("{kind}-{}-{}-rule-{rule}", route.namespace, route.name)
        }
    };
    match sp.type_.as_deref() {
        None | Some("Cookie") => {
            check_token(&name, "cookie")?;
            let permanent = sp
                .cookie_config
                .as_ref()
                .and_then(|c| c.lifetime_type.as_deref())
                == Some("Permanent");
            let ttl = match (&sp.absolute_timeout, permanent) {
                // Envoy Gateway refuses the rule with Go's parse error (UnsupportedValue).
                (Some(t), true) => Some(
                    values::parse_gateway_duration(t)
                        .map_err(|e| e.to_string())?
                        .to_proto(),
                ),
                _ => None,
            };
            Ok(Some(Session::Cookie { name, ttl }))
        }
        Some("Header") => {
            check_token(&name, "header")?;
            Ok(Some(Session::Header { name }))
        }
        Some(other) => Err(format!("unknown session persistence type {other}")),
    }
}

/// A cookie name and a header name are both RFC 7230 tokens; Envoy rejects anything else, so
/// such a name is refused here rather than sent.
fn check_token(name: &str, what: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "session name {name:?} is not a valid {what} name (RFC 7230 token characters only)"
        ))
    }
}

/// Enables the stateful session filter on `route` (whose match is final) with `session`.
pub(crate) fn apply(route: &mut Route, session: &Session) {
    let (ext_name, typed_config) = match session {
        Session::Cookie { name, ttl } => (
            "envoy.http.stateful_session.cookie",
            crate::envoy::any_of(&CookieBasedSessionState {
                cookie: Some(Cookie {
                    name: name.clone(),
                    ttl: *ttl,
                    path: cookie_path(route.r#match.as_ref()),
                    attributes: Vec::new(),
                }),
            }),
        ),
        Session::Header { name } => (
            "envoy.http.stateful_session.header",
            crate::envoy::any_of(&HeaderBasedSessionState { name: name.clone() }),
        ),
    };
    let per_route = StatefulSessionPerRoute {
        r#override: Some(stateful_session_per_route::Override::StatefulSession(
            StatefulSession {
                session_state: Some(TypedExtensionConfig {
                    name: ext_name.into(),
                    typed_config: Some(typed_config),
                }),
                ..Default::default()
            },
        )),
    };
    route.typed_per_filter_config.insert(
        STATEFUL_SESSION_FILTER.into(),
        crate::envoy::any(&StatefulSessionPerRoute::type_url(), &per_route),
    );
}

/// The cookie's Path (GEP-1619): the matched path for Exact and PathPrefix matches, the longest
/// literal prefix (whole segments) of a regular expression.
fn cookie_path(m: Option<&RouteMatch>) -> String {
    let Some(spec) = m.and_then(|m| m.path_specifier.as_ref()) else {
        return "/".into();
    };
    match spec {
        route_match::PathSpecifier::Path(p) => p.clone(),
        route_match::PathSpecifier::Prefix(p) => p.clone(),
        route_match::PathSpecifier::PathSeparatedPrefix(p) => p.clone(),
        route_match::PathSpecifier::SafeRegex(r) => literal_prefix(&r.regex),
        _ => "/".into(),
    }
}

fn literal_prefix(regex: &str) -> String {
    const META: &[char] = &[
        '.', '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
    ];
    let mut out: Vec<&str> = Vec::new();
    for seg in regex.split('/') {
        if seg.contains(META) {
            break;
        }
        out.push(seg);
    }
    let p = out.join("/");
    if p.is_empty() {
        "/".into()
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_model::gateway::CookieConfig;
    use flotilla_model::Kind;

    fn key() -> ResourceKey {
        ResourceKey::new("c1", Kind::HTTPRoute, "default", "r1")
    }

    fn sp(type_: Option<&str>, name: Option<&str>) -> SessionPersistence {
        SessionPersistence {
            session_name: name.map(Into::into),
            type_: type_.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_errors() {
        let k = key();
        assert_eq!(
            session_persistence(Some(&sp(None, None)), RouteKind::Http, &k, 2),
            Ok(Some(Session::Cookie {
                name: "httproute-default-r1-rule-2".into(),
                ttl: None
            }))
        );
        assert_eq!(
            session_persistence(
                Some(&sp(Some("Header"), Some("x-s"))),
                RouteKind::Http,
                &k,
                0
            ),
            Ok(Some(Session::Header { name: "x-s".into() }))
        );
        assert!(session_persistence(
            Some(&sp(Some("Header"), Some("bad name"))),
            RouteKind::Http,
            &k,
            0
        )
        .unwrap_err()
        .contains("not a valid header name"));
        let mut idle = sp(None, None);
        idle.idle_timeout = Some("1h".into());
        assert_eq!(
            session_persistence(Some(&idle), RouteKind::Http, &k, 0),
            Err("idle timeout is not supported in envoy gateway".into())
        );
        // A TTL only for a Permanent cookie.
        let mut perm = sp(None, Some("s"));
        perm.absolute_timeout = Some("1h".into());
        assert_eq!(
            session_persistence(Some(&perm), RouteKind::Http, &k, 0),
            Ok(Some(Session::Cookie {
                name: "s".into(),
                ttl: None
            }))
        );
        perm.cookie_config = Some(CookieConfig {
            lifetime_type: Some("Permanent".into()),
        });
        assert_eq!(
            session_persistence(Some(&perm), RouteKind::Http, &k, 0),
            Ok(Some(Session::Cookie {
                name: "s".into(),
                ttl: Some(Duration {
                    seconds: 3600,
                    nanos: 0
                })
            }))
        );
    }

    #[test]
    fn cookie_paths() {
        assert_eq!(literal_prefix("/p1/p2/.*/p3"), "/p1/p2");
        assert_eq!(literal_prefix("/v[0-9]+/x"), "/");
        assert_eq!(literal_prefix("/api/v1"), "/api/v1");
    }
}
