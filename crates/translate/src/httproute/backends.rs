//! The backends of one HTTPRoute or GRPCRoute rule: each backendRef resolved to a cluster
//! (Envoy Gateway's `processDestination`), with the status errors of the ones that do not
//! resolve and the rule-level refusals (a dynamic resolver among several backends, a host
//! rewrite from the path to a dynamic resolver).

use crate::backend::resolve_backend;
use crate::filters::{
    check_backend_filters, process_filters, FilterScope, Filtered, HostRewrite, RouteKind,
};
use crate::httproute::actions::RuleTarget;
use crate::index::Index;
use crate::status::{CondType, ErrorCollector, StatusError};
use flotilla_model::gateway::HttpBackendRef;
use flotilla_model::ResourceKey;

/// The rule whose backends are resolved.
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
