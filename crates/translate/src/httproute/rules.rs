//! The rule loop HTTPRoute and GRPCRoute share (Envoy Gateway's `processHTTPRouteRules` and
//! `processGRPCRouteRules` walk a rule the same way): filters, session persistence, matches,
//! backends, the action, then one [`RouteEntry`] per match. What differs between the kinds
//! is said by their rule type's [`Rule`] impl: how its matches are built, the prefix of the
//! Envoy route names, and whether its clusters speak HTTP/2 upstream.

use crate::filters::{process_filters, FilterScope, Filtered, RouteKind};
use crate::httproute::actions::{cors_preflight, decorate, rule_action, ActionInput};
use crate::httproute::backends::{
    reject_path_regex_host_rewrite, resolve_rule_backends, RuleScope,
};
use crate::httproute::checked::{CheckedRoute, RouteEntry};
use crate::httproute::matches::MatchShape;
use crate::httproute::overlap::PrecedenceKey;
use crate::index::Index;
use crate::status::{accepted_reason, CondType, ErrorCollector, StatusError};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteMatch};
use flotilla_model::gateway::{
    HttpBackendRef, HttpRouteFilter, HttpRouteRetry, HttpRouteTimeouts, SessionPersistence,
};
use flotilla_model::ResourceKey;
use std::collections::BTreeSet;

/// The fields of a rule the loop reads the same way for both kinds.
pub(crate) struct RuleParts<'r> {
    pub name: &'r Option<String>,
    pub filters: &'r [HttpRouteFilter],
    pub backend_refs: &'r [HttpBackendRef],
    pub session_persistence: Option<&'r SessionPersistence>,
    /// HTTPRoute only: a GRPCRoute rule has no timeouts or retry.
    pub timeouts: Option<&'r HttpRouteTimeouts>,
    pub retry: Option<&'r HttpRouteRetry>,
}

/// One Envoy match of a rule, with what precedence and the action need to know of it.
pub(crate) struct BuiltMatch {
    pub route_match: RouteMatch,
    pub shape: MatchShape,
    /// The path a prefix rewrite replaces (HTTPRoute's path match, `/` without one); `None`
    /// for GRPCRoute, whose rules cannot rewrite.
    pub path_prefix: Option<String>,
}

/// A rule of a route kind the shared loop walks.
pub(crate) trait Rule {
    /// The kind its filters and session persistence are checked as.
    const KIND: RouteKind;
    /// First segment of the Envoy route names: `<prefix>/<ns>/<name>/rule/<r>/match/<m>`.
    const NAME_PREFIX: &'static str;
    /// Whether the rule's clusters (backends and mirrors) speak HTTP/2 upstream.
    const HTTP2_UPSTREAM: bool;

    fn parts(&self) -> RuleParts<'_>;

    /// The rule's matches, in order (a rule without matches matches everything). An error
    /// drops the rule with Accepted=False.
    fn matches(&self, filtered: &Filtered) -> Result<Vec<BuiltMatch>, String>;
}

/// Validates a route's rules and resolves their backends (adding their clusters).
pub(crate) fn check_rules<R: Rule>(
    ix: &Index,
    key: &ResourceKey,
    rules: &[R],
    rank: &std::sync::Arc<crate::values::RouteOrder>,
    clusters: &mut crate::ir::cluster::Backends,
) -> CheckedRoute {
    let mut errs = ErrorCollector::default();
    let mut unaccepted = BTreeSet::new();
    let mut entries = Vec::new();
    let mut http2_clusters = BTreeSet::new();
    for (ri, rule) in rules.iter().enumerate() {
        let parts = rule.parts();
        let mut scope = FilterScope {
            ix,
            route: key,
            kind: R::KIND,
            clusters,
        };
        let (filtered, ferrs) = process_filters(&mut scope, parts.filters);
        let filter_error = !ferrs.is_empty();
        for e in ferrs {
            if e.type_ == CondType::Accepted {
                unaccepted.insert(ri);
            }
            errs.add(e);
        }
        let built =
            crate::session::session_persistence(parts.session_persistence, R::KIND, key, ri)
                .and_then(|session| Ok((rule.matches(&filtered)?, session)));
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
                kind: R::KIND,
                rule: ri,
            },
            parts.backend_refs,
            clusters,
            &mut errs,
        );
        reject_path_regex_host_rewrite(
            ix,
            key,
            ri,
            parts.backend_refs,
            &filtered,
            filter_error,
            &mut target,
            &mut errs,
        );
        if R::HTTP2_UPSTREAM {
            http2_clusters.extend(target.clusters.iter().map(|(name, _, _)| name.clone()));
            http2_clusters.extend(filtered.mirrors.iter().map(|m| m.cluster.clone()));
        }
        for (mi, m) in matches.into_iter().enumerate() {
            let (action, redirect_scheme) = rule_action(&ActionInput {
                filtered: &filtered,
                filter_error,
                target: &target,
                path_prefix: m.path_prefix.as_deref(),
                timeouts: parts.timeouts,
                retry: parts.retry,
            });
            let mut r = Route {
                name: format!(
                    "{}/{}/{}/rule/{ri}/match/{mi}",
                    R::NAME_PREFIX,
                    key.namespace,
                    key.name
                ),
                r#match: Some(m.route_match),
                action: Some(action),
                ..Default::default()
            };
            decorate(&mut r, &filtered);
            if let Some(s) = &session {
                crate::session::apply(&mut r, s);
            }
            // Only HTTPRoute has one: a GRPCRoute's filters never set CORS (`validate_filter`
            // refuses the CORS filter there and an HTTPRouteFilter does not carry one).
            let preflight = cors_preflight(&r, &filtered);
            entries.push(RouteEntry {
                key: PrecedenceKey::from_shape(m.shape, rank, ri, mi),
                route: r,
                redirect_scheme: redirect_scheme.clone(),
                rule: ri,
                rule_name: parts.name.clone(),
            });
            if let Some(p) = preflight {
                entries.push(RouteEntry {
                    key: PrecedenceKey::from_shape(m.shape, rank, ri, mi),
                    route: p,
                    redirect_scheme,
                    rule: ri,
                    rule_name: parts.name.clone(),
                });
            }
        }
    }
    CheckedRoute {
        entries,
        errors: errs.into_errors(),
        unaccepted: unaccepted.into_iter().collect(),
        rule_count: rules.len(),
        http2_clusters,
    }
}
