//! HTTPRoute rules → Envoy routes with Envoy Gateway's semantics (`processHTTPRouteRules`):
//! the checked route, the backends of a rule and the rule loop. Its parts:
//! [`matches`](mod@matches) (route matches), [`actions`] (what a rule does, shared with
//! GRPCRoute) and [`overlap`] (precedence and overlapping matches). The status vocabulary is
//! `crate::status`'s.

use crate::backend::resolve_backend;
use crate::filters::{
    check_backend_filters, process_filters, CookieMatch, FilterScope, Filtered, HostRewrite,
    RouteKind,
};
use crate::index::Index;
use crate::status::{
    accepted_reason, condition_message, set_condition, CondType, ErrorCollector, StatusError,
};
use envoy_types::pb::envoy::config::route::v3::Route;
use flotilla_model::gateway::Condition;
use flotilla_model::gateway::{HttpBackendRef, HttpRoute, HttpRouteMatch};
use flotilla_model::ResourceKey;
use std::collections::BTreeSet;

pub(crate) mod actions;
pub(crate) mod matches;
pub(crate) mod overlap;

pub(crate) use actions::{
    body_size_limit, cors_preflight, decorate, direct, direct_body_len, rule_action, ActionInput,
    RuleTarget,
};
pub(crate) use matches::{header_matcher, http_match, MatchShape};
pub(crate) use overlap::{OverlapTracker, PrecedenceKey};

/// One Envoy route a rule contributes, before it is copied per host.
#[derive(Clone, Debug)]
pub(crate) struct RouteEntry {
    pub key: PrecedenceKey,
    pub route: Route,
    /// `Some(scheme)` when the route redirects without a port: the port is derived per
    /// listener (the scheme's well-known port, else the listener's).
    pub redirect_scheme: Option<Option<String>>,
    /// The rule it comes from: its index and name (`sectionName` of a policy targeting it).
    pub rule: usize,
    pub rule_name: Option<String>,
}

/// A route after per-route validation, independent of the parent it attaches to.
pub(crate) struct CheckedRoute {
    pub entries: Vec<RouteEntry>,
    /// One error per condition type (Envoy Gateway's grouped errors).
    pub errors: Vec<StatusError>,
    /// Rules with an Accepted-type error, sorted.
    pub unaccepted: Vec<usize>,
    pub rule_count: usize,
    /// Clusters that must speak HTTP/2 upstream (GRPCRoute backends).
    pub http2_clusters: BTreeSet<String>,
}

impl CheckedRoute {
    /// Applies the route's errors to one parent's conditions, as `processHTTPRouteParentRefs`
    /// does, then sets ResolvedRefs=True when nothing said otherwise.
    pub fn apply_to(&self, conds: &mut Vec<Condition>, gen: Option<i64>) {
        for e in &self.errors {
            if e.type_ == CondType::Accepted {
                if self.unaccepted.len() == self.rule_count {
                    set_condition(
                        conds,
                        Condition::new(
                            "Accepted",
                            false,
                            &e.reason,
                            condition_message(&e.message),
                            gen,
                        ),
                    );
                } else {
                    let rules: Vec<String> =
                        self.unaccepted.iter().map(|r| r.to_string()).collect();
                    set_condition(
                        conds,
                        Condition::new(
                            "PartiallyInvalid",
                            true,
                            &e.reason,
                            format!(
                                "Dropped Rule(s) [{}]: {}",
                                rules.join(" "),
                                condition_message(&e.message)
                            ),
                            gen,
                        ),
                    );
                    set_condition(
                        conds,
                        Condition::new("Accepted", true, "Accepted", "Route is accepted", gen),
                    );
                }
            } else {
                set_condition(
                    conds,
                    Condition::new(
                        e.type_.as_str(),
                        false,
                        &e.reason,
                        condition_message(&e.message),
                        gen,
                    ),
                );
            }
        }
        if !conds
            .iter()
            .any(|c| c.type_ == "ResolvedRefs" && c.status == "False")
        {
            set_condition(
                conds,
                Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "Resolved all the Object references for the Route",
                    gen,
                ),
            );
        }
    }
}

pub(crate) struct RuleScope<'a> {
    pub ix: &'a Index,
    pub route: &'a ResourceKey,
    pub kind: RouteKind,
    pub rule: usize,
}

/// Resolves a rule's backendRefs (Envoy Gateway's `processDestination` per backendRef),
/// reporting each problem into `errs`.
pub(crate) fn resolve_rule_backends(
    s: &RuleScope<'_>,
    refs: &[HttpBackendRef],
    clusters: &mut crate::ir::cluster::Backends,
    errs: &mut ErrorCollector,
) -> RuleTarget {
    let ri = s.rule;
    let mut t = RuleTarget {
        clusters: vec![],
        backend_error: false,
        no_endpoints: false,
        invalid_weight: 0,
    };
    for (bi, b) in refs.iter().enumerate() {
        let wrap = |m: &str| format!("failed to process route rule {ri} backendRef {bi}: {m}");
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        if let Err(e) = check_backend_filters(&b.filters, s.kind) {
            errs.add(StatusError::new(e.type_, &e.reason, wrap(&e.message)));
            t.backend_error = true;
            t.invalid_weight = t.invalid_weight.saturating_add(weight);
            continue;
        }
        let (id, endpoints) = match resolve_backend(s.ix, s.route, b) {
            Ok(v) => v,
            Err((reason, msg)) if reason == "EndpointsNotFound" => {
                errs.add(StatusError::new(
                    CondType::BackendsAvailable,
                    reason,
                    format!("failed to find endpoints: {msg}"),
                ));
                t.no_endpoints = true;
                t.invalid_weight = t.invalid_weight.saturating_add(weight);
                continue;
            }
            Err((reason, msg)) => {
                errs.add(StatusError::new(CondType::ResolvedRefs, reason, wrap(&msg)));
                t.backend_error = true;
                t.invalid_weight = t.invalid_weight.saturating_add(weight);
                continue;
            }
        };
        let kind = b.kind.as_deref().unwrap_or("Service");
        let core = b.group.as_deref().unwrap_or("").is_empty() && kind == "Service";
        if weight > 0 && endpoints.is_empty() && (core || kind == "ServiceImport") {
            let ns = b.namespace.as_deref().unwrap_or(&s.route.namespace);
            let what = if core { "Service" } else { "ServiceImport" };
            errs.add(StatusError::new(
                CondType::BackendsAvailable,
                "EndpointsNotFound",
                format!(
                    "failed to find endpoints: no ready endpoints for the related {what} {ns}/{}",
                    b.name
                ),
            ));
            t.no_endpoints = true;
            t.invalid_weight = t.invalid_weight.saturating_add(weight);
            continue;
        }
        let mut scope = FilterScope {
            ix: s.ix,
            route: s.route,
            kind: s.kind,
            clusters,
        };
        let (filtered, ferrs) = process_filters(&mut scope, &b.filters);
        if !ferrs.is_empty() {
            let joined: Vec<String> = ferrs.iter().map(|e| e.message.clone()).collect();
            errs.add(StatusError::new(
                CondType::ResolvedRefs,
                "InvalidBackendFilters",
                wrap(&joined.join("\n")),
            ));
            t.backend_error = true;
            t.invalid_weight = t.invalid_weight.saturating_add(weight);
            continue;
        }
        let name = id.name();
        clusters.insert(name.clone(), (id, endpoints));
        if weight > 0 {
            t.clusters.push((name, weight, filtered));
        }
    }
    // Envoy Gateway: a dynamic resolver must be the rule's only backend.
    if refs.len() > 1
        && refs
            .iter()
            .any(|b| crate::backend::is_dynamic_resolver(s.ix, s.route, b))
    {
        errs.add(StatusError::new(
            CondType::ResolvedRefs,
            "InvalidBackendRef",
            format!("failed to process route rule {ri}: dynamic resolver is not supported for multiple backendRefs"),
        ));
        t.backend_error = true;
        t.clusters.clear();
    }
    t
}

/// A host rewrite taken from the path cannot go with a dynamic resolver backend: the host would
/// come from request-controlled text the forward proxy's loopback guard does not inspect
/// (Envoy Gateway rejects the rule, which answers 500).
#[allow(clippy::too_many_arguments)]
pub(crate) fn reject_path_regex_host_rewrite(
    ix: &Index,
    key: &ResourceKey,
    ri: usize,
    refs: &[HttpBackendRef],
    filtered: &Filtered,
    filter_error: bool,
    t: &mut RuleTarget,
    errs: &mut ErrorCollector,
) {
    let path_regex = matches!(
        filtered.url_rewrite.as_ref().and_then(|u| u.host.as_ref()),
        Some(HostRewrite::PathRegex(..))
    );
    if filter_error || t.clusters.is_empty() || !path_regex {
        return;
    }
    if refs
        .iter()
        .any(|b| crate::backend::is_dynamic_resolver(ix, key, b))
    {
        errs.add(StatusError::new(
            CondType::ResolvedRefs,
            "UnsupportedValue",
            format!("failed to process route rule {ri}: host rewrite from path (PathRegex) is not supported with a dynamic resolver backend"),
        ));
        t.backend_error = true;
        t.clusters.clear();
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
    let mut errs = ErrorCollector::default();
    let mut unaccepted = BTreeSet::new();
    let mut entries = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let mut scope = FilterScope {
            ix,
            route: key,
            kind: RouteKind::Http,
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
            RouteKind::Http,
            key,
            ri,
        )
        .and_then(|session| {
            let base: Vec<Option<&HttpRouteMatch>> = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches.iter().map(Some).collect()
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
                    let (rm, shape) = http_match(m.unwrap_or(&default), cookies)?;
                    let prefix = m
                        .and_then(|m| m.path.as_ref())
                        .and_then(|p| p.value.clone())
                        .unwrap_or_else(|| "/".into());
                    out.push((rm, shape, prefix));
                }
            }
            Ok((out, session))
        });
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
                kind: RouteKind::Http,
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
        for (mi, (rm, shape, prefix)) in matches.into_iter().enumerate() {
            let (action, redirect_scheme) = rule_action(&ActionInput {
                filtered: &filtered,
                filter_error,
                target: &target,
                path_prefix: Some(&prefix),
                timeouts: rule.timeouts.as_ref(),
                retry: rule.retry.as_ref(),
            });
            let mut r = Route {
                name: format!(
                    "httproute/{}/{}/rule/{ri}/match/{mi}",
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
            let preflight = cors_preflight(&r, &filtered);
            entries.push(RouteEntry {
                key: PrecedenceKey::from_shape(shape, rank, ri, mi),
                route: r,
                redirect_scheme: redirect_scheme.clone(),
                rule: ri,
                rule_name: rule.name.clone(),
            });
            if let Some(p) = preflight {
                entries.push(RouteEntry {
                    key: PrecedenceKey::from_shape(shape, rank, ri, mi),
                    route: p,
                    redirect_scheme,
                    rule: ri,
                    rule_name: rule.name.clone(),
                });
            }
        }
    }
    CheckedRoute {
        entries,
        errors: errs.into_errors(),
        unaccepted: unaccepted.into_iter().collect(),
        rule_count: route.spec.rules.len(),
        http2_clusters: BTreeSet::new(),
    }
}
