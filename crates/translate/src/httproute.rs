//! HTTPRoute rules → Envoy routes with Envoy Gateway's semantics (`processHTTPRouteRules`).
//! Its parts: [`rules`] (the rule loop, shared with GRPCRoute), [`checked`] (the checked route
//! and its status), [`backends`] (a rule's backends), [`matches`](mod@matches) (route
//! matches), [`actions`] (what a rule does) and [`overlap`] (precedence and overlapping
//! matches). This file says what is HTTPRoute's own: how a rule's matches are built. The
//! status vocabulary is `crate::status`'s.

use crate::filters::{CookieMatch, Filtered, RouteKind};
use crate::index::Index;
use flotilla_model::gateway::{HttpRoute, HttpRouteMatch, HttpRouteRule};
use flotilla_model::ResourceKey;

pub(crate) mod actions;
pub(crate) mod backends;
pub(crate) mod checked;
pub(crate) mod matches;
pub(crate) mod overlap;
pub(crate) mod rules;

pub(crate) use actions::{body_size_limit, direct, direct_body_len};
pub(crate) use checked::CheckedRoute;
pub(crate) use matches::{header_matcher, http_match, MatchShape};
pub(crate) use overlap::{OverlapTracker, PrecedenceKey};
pub(crate) use rules::{check_rules, BuiltMatch, Rule, RuleParts};

impl Rule for HttpRouteRule {
    const KIND: RouteKind = RouteKind::Http;
    const NAME_PREFIX: &'static str = "httproute";
    const HTTP2_UPSTREAM: bool = false;

    fn parts(&self) -> RuleParts<'_> {
        RuleParts {
            name: &self.name,
            filters: &self.filters,
            backend_refs: &self.backend_refs,
            session_persistence: self.session_persistence.as_ref(),
            timeouts: self.timeouts.as_ref(),
            retry: self.retry.as_ref(),
        }
    }

    /// Each match ANDed with each cookie match set of an HTTPRouteFilter (match-major).
    fn matches(&self, filtered: &Filtered) -> Result<Vec<BuiltMatch>, String> {
        let base: Vec<Option<&HttpRouteMatch>> = if self.matches.is_empty() {
            vec![None]
        } else {
            self.matches.iter().map(Some).collect()
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
                let (route_match, shape) = http_match(m.unwrap_or(&default), cookies)?;
                let prefix = m
                    .and_then(|m| m.path.as_ref())
                    .and_then(|p| p.value.clone())
                    .unwrap_or_else(|| "/".into());
                out.push(BuiltMatch {
                    route_match,
                    shape,
                    path_prefix: Some(prefix),
                });
            }
        }
        Ok(out)
    }
}

/// Validates the route's rules and resolves its backends (adding their clusters).
pub(crate) fn check_route(
    ix: &Index,
    key: &ResourceKey,
    route: &HttpRoute,
    rank: &std::sync::Arc<crate::values::RouteOrder>,
    clusters: &mut crate::ir::cluster::Backends,
) -> CheckedRoute {
    check_rules(ix, key, &route.spec.rules, rank, clusters)
}
