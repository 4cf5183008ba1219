//! Route precedence (the Gateway API's order of rules across routes) and the tracking of
//! matches an earlier route already serves on a host.

use crate::httproute::matches::MatchShape;
use envoy_types::pb::envoy::config::route::v3::Route;
use flotilla_model::ResourceKey;
use std::collections::{BTreeMap, BTreeSet};

/// Envoy Gateway's overlap check (`checkRouteOverlaps`): routes of different xRoutes on one
/// listener whose matches are identical (same host, path, header, query and cookie matches)
/// shadow each other; each gets a RouteRulesOverlap condition naming the others.
#[derive(Default)]
pub(crate) struct OverlapTracker {
    /// listener -> canonical match key -> "Kind namespace/name" of the routes with that key
    by_listener: BTreeMap<usize, BTreeMap<String, BTreeSet<String>>>,
    /// "Kind namespace/name" -> the (listener, match key) buckets it is in, so that finding a
    /// route's conflicts reads only its own buckets (not every bucket of its listeners).
    by_route: BTreeMap<String, BTreeSet<(usize, String)>>,
}

impl OverlapTracker {
    fn display(kind: &str, key: &ResourceKey) -> String {
        format!("{kind} {}/{}", key.namespace, key.name)
    }

    pub fn record(
        &mut self,
        listener: usize,
        host: &str,
        kind: &str,
        key: &ResourceKey,
        r: &Route,
    ) {
        let Some(m) = &r.r#match else { return };
        let mut headers: Vec<String> = m.headers.iter().map(|h| format!("{h:?}")).collect();
        headers.sort();
        let mut queries: Vec<String> = m
            .query_parameters
            .iter()
            .map(|q| format!("{q:?}"))
            .collect();
        queries.sort();
        let k = format!(
            "{host}\0{:?}\0{}\0{}",
            m.path_specifier,
            headers.join("\x01"),
            queries.join("\x01")
        );
        let me = Self::display(kind, key);
        self.by_route
            .entry(me.clone())
            .or_default()
            .insert((listener, k.clone()));
        self.by_listener
            .entry(listener)
            .or_default()
            .entry(k)
            .or_default()
            .insert(me);
    }

    /// The overlap message for a route attached to `listeners`, if it overlaps another route.
    pub fn conflicts(&self, listeners: &[usize], kind: &str, key: &ResourceKey) -> Option<String> {
        let me = Self::display(kind, key);
        let mut others = BTreeSet::new();
        for (li, k) in self.by_route.get(&me).into_iter().flatten() {
            if !listeners.contains(li) {
                continue;
            }
            let Some(bucket) = self.by_listener.get(li).and_then(|b| b.get(k)) else {
                continue;
            };
            if bucket.len() > 1 {
                others.extend(bucket.iter().filter(|n| **n != me).cloned());
            }
        }
        (!others.is_empty()).then(|| {
            format!(
                "Overlapping match conditions with route(s): {}",
                others.into_iter().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Gateway API route precedence, as a sort key (smaller sorts first = matched first):
/// exact path over regex over prefix; longer paths first; then method, more header matches,
/// more query matches; then route age/name (rank) and rule/match order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PrecedenceKey {
    path_kind: u8,
    neg_path_len: i64,
    no_method: bool,
    neg_headers: i64,
    neg_queries: i64,
    rank: usize,
    rule: usize,
    matched: usize,
}

impl PrecedenceKey {
    pub(crate) fn from_shape(s: MatchShape, rank: usize, rule: usize, matched: usize) -> Self {
        Self {
            path_kind: s.path_kind,
            neg_path_len: -(s.path_len as i64),
            no_method: !s.method,
            neg_headers: -(s.headers as i64),
            neg_queries: -(s.queries as i64),
            rank,
            rule,
            matched,
        }
    }
}
