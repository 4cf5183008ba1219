//! Route precedence (the Gateway API's order of rules across routes) and the tracking of
//! matches an earlier route already serves on a host.

use crate::httproute::matches::MatchShape;
use crate::values::RouteOrder;
use envoy_types::pb::envoy::config::route::v3::Route;
use flotilla_model::ResourceKey;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Envoy Gateway's overlap check (`checkRouteOverlaps`): routes of different xRoutes on one
/// listener whose matches are identical (same host, path, header, query and cookie matches)
/// shadow each other; each gets a RouteRulesOverlap condition naming the others.
///
/// Kept from one translation of a gateway to the next: a route's match keys are taken out when
/// it changes and put back as they are now, and the routes sharing a bucket with it are the
/// ones whose condition may change.
#[derive(Default)]
pub(crate) struct OverlapTracker {
    /// (listener, canonical match key) -> the routes with that key, by "Kind namespace/name"
    /// (the order the condition names them in). Hashed: the keys are long strings sharing
    /// their host as a prefix, and the buckets are only ever looked up, never walked.
    buckets: HashMap<(usize, String), Vec<Member>>,
}

/// A route in a bucket: its display name (what the condition says) and its key. A bucket's
/// members are kept sorted (the order the condition names them in), in a vector: most buckets
/// hold one route.
type Member = (Arc<str>, ResourceKey);

impl OverlapTracker {
    fn display(kind: &str, key: &ResourceKey) -> String {
        format!("{kind} {}/{}", key.namespace, key.name)
    }

    /// The canonical match key of route `r` served for `host` (`None`: it has no match).
    pub fn match_key(host: &str, r: &Route) -> Option<String> {
        let m = r.r#match.as_ref()?;
        let mut headers: Vec<String> = m.headers.iter().map(|h| format!("{h:?}")).collect();
        headers.sort();
        let mut queries: Vec<String> = m
            .query_parameters
            .iter()
            .map(|q| format!("{q:?}"))
            .collect();
        queries.sort();
        Some(format!(
            "{host}\0{:?}\0{}\0{}",
            m.path_specifier,
            headers.join("\x01"),
            queries.join("\x01")
        ))
    }

    /// Records the (listener, match key) buckets of a route of `kind`.
    pub fn add(&mut self, kind: &str, key: &ResourceKey, buckets: &[(usize, String)]) {
        let Some((first, rest)) = buckets.split_first() else {
            return;
        };
        let me: Member = (Arc::from(Self::display(kind, key)), key.clone());
        for b in rest {
            self.insert(b, me.clone());
        }
        self.insert(first, me);
    }

    fn insert(&mut self, bucket: &(usize, String), me: Member) {
        match self.buckets.get_mut(bucket) {
            Some(members) => {
                if let Err(at) = members.binary_search(&me) {
                    members.insert(at, me);
                }
            }
            None => {
                self.buckets.insert(bucket.clone(), vec![me]);
            }
        }
    }

    /// Takes a route's buckets out again.
    pub fn remove(&mut self, kind: &str, key: &ResourceKey, buckets: &[(usize, String)]) {
        let me: Member = (Arc::from(Self::display(kind, key)), key.clone());
        for b in buckets {
            if let Some(members) = self.buckets.get_mut(b) {
                if let Ok(at) = members.binary_search(&me) {
                    members.remove(at);
                }
                if members.is_empty() {
                    self.buckets.remove(b);
                }
            }
        }
    }

    /// The routes in `buckets` (other than none): those whose overlap condition a change of a
    /// route with these buckets can change.
    pub fn members(&self, buckets: &[(usize, String)], out: &mut BTreeSet<ResourceKey>) {
        for b in buckets {
            out.extend(
                self.buckets
                    .get(b)
                    .into_iter()
                    .flatten()
                    .map(|(_, k)| k.clone()),
            );
        }
    }

    /// The overlap message for a route with `buckets` attached through `listeners`, if it
    /// overlaps another route.
    pub fn conflicts(
        &self,
        buckets: &[(usize, String)],
        listeners: &[usize],
        kind: &str,
        key: &ResourceKey,
    ) -> Option<String> {
        // The common case, a route alone in each of its buckets, names nobody.
        let shared = || {
            buckets
                .iter()
                .filter(|b| listeners.contains(&b.0))
                .filter_map(|b| self.buckets.get(b))
                .filter(|bucket| bucket.len() > 1)
        };
        shared().next()?;
        let me = Self::display(kind, key);
        let others: BTreeSet<&str> = shared()
            .flatten()
            .map(|(n, _)| &**n)
            .filter(|n| *n != me)
            .collect();
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
/// more query matches; then the route's order (kind, age, name) and rule/match order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PrecedenceKey {
    path_kind: u8,
    neg_path_len: i64,
    no_method: bool,
    neg_headers: i64,
    neg_queries: i64,
    rank: Arc<RouteOrder>,
    rule: usize,
    matched: usize,
}

impl PrecedenceKey {
    pub(crate) fn from_shape(
        s: MatchShape,
        rank: &Arc<RouteOrder>,
        rule: usize,
        matched: usize,
    ) -> Self {
        Self {
            path_kind: s.path_kind,
            neg_path_len: -(s.path_len as i64),
            no_method: !s.method,
            neg_headers: -(s.headers as i64),
            neg_queries: -(s.queries as i64),
            rank: rank.clone(),
            rule,
            matched,
        }
    }
}
