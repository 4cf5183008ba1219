//! Route precedence (the Gateway API's order of rules across routes) and the tracking of
//! matches an earlier route already serves on a host.

use crate::httproute::matches::MatchShape;
use crate::values::RouteOrder;
use envoy_types::pb::envoy::config::route::v3::Route;
use flotilla_model::ResourceKey;
use prost::Message;
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
    buckets: HashMap<Bucket, Vec<Member>>,
}

/// A canonical match key (see [`OverlapTracker::match_key`]).
pub(crate) type MatchKey = Box<[u8]>;

/// Where a route's match is served: its listener and its match key.
pub(crate) type Bucket = (usize, MatchKey);

/// A route in a bucket: its display name (what the condition says) and its key. A bucket's
/// members are kept sorted (the order the condition names them in), in a vector: most buckets
/// hold one route.
type Member = (Arc<str>, ResourceKey);

impl OverlapTracker {
    fn display(kind: &str, key: &ResourceKey) -> String {
        format!("{kind} {}/{}", key.namespace, key.name)
    }

    /// The canonical match key of route `r` served for `host` (`None`: it has no match): the
    /// host, the path match and the header and query matches as a set, each as its protobuf
    /// encoding, length-prefixed so that no two different matches make one key.
    pub fn match_key(host: &str, r: &Route) -> Option<MatchKey> {
        fn part(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        let m = r.r#match.as_ref()?;
        let mut key = Vec::with_capacity(host.len() + 64);
        part(&mut key, host.as_bytes());
        let mut path = Vec::new();
        if let Some(p) = &m.path_specifier {
            p.encode(&mut path);
        }
        part(&mut key, &path);
        for set in [
            m.headers
                .iter()
                .map(Message::encode_to_vec)
                .collect::<Vec<_>>(),
            m.query_parameters
                .iter()
                .map(Message::encode_to_vec)
                .collect::<Vec<_>>(),
        ] {
            let mut set = set;
            set.sort();
            part(
                &mut key,
                &u32::try_from(set.len()).unwrap_or(u32::MAX).to_le_bytes(),
            );
            for item in &set {
                part(&mut key, item);
            }
        }
        Some(key.into())
    }

    /// Records the (listener, match key) buckets of a route of `kind`.
    pub fn add(&mut self, kind: &str, key: &ResourceKey, buckets: &[Bucket]) {
        let Some((first, rest)) = buckets.split_first() else {
            return;
        };
        let me: Member = (Arc::from(Self::display(kind, key)), key.clone());
        for b in rest {
            self.insert(b, me.clone());
        }
        self.insert(first, me);
    }

    fn insert(&mut self, bucket: &Bucket, me: Member) {
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
    pub fn remove(&mut self, kind: &str, key: &ResourceKey, buckets: &[Bucket]) {
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
    pub fn members(&self, buckets: &[Bucket], out: &mut BTreeSet<ResourceKey>) {
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
        buckets: &[Bucket],
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

#[cfg(test)]
mod tests {
    use super::OverlapTracker;
    use envoy_types::pb::envoy::config::route::v3::{
        route_match, HeaderMatcher, Route, RouteMatch,
    };

    fn route(path: &str, headers: &[(&str, bool)]) -> Route {
        Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix(path.into())),
                headers: headers
                    .iter()
                    .map(|(name, invert)| HeaderMatcher {
                        name: (*name).into(),
                        invert_match: *invert,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_match_key_is_the_match_as_a_set_and_nothing_else() {
        let key = |host: &str, r: &Route| OverlapTracker::match_key(host, r).expect("a match");
        let a = route("/a", &[("x", false), ("y", false)]);
        // The same headers in another order: the same match.
        assert_eq!(
            key("h", &a),
            key("h", &route("/a", &[("y", false), ("x", false)]))
        );
        // Another host, path, header, header setting or header count: another match.
        assert_ne!(key("h", &a), key("g", &a));
        assert_ne!(
            key("h", &a),
            key("h", &route("/b", &[("x", false), ("y", false)]))
        );
        assert_ne!(
            key("h", &a),
            key("h", &route("/a", &[("x", false), ("z", false)]))
        );
        assert_ne!(
            key("h", &a),
            key("h", &route("/a", &[("x", true), ("y", false)]))
        );
        assert_ne!(key("h", &a), key("h", &route("/a", &[("x", false)])));
        // Lengths prefix every part: a host ending like a path is not that path.
        assert_ne!(key("h/a", &route("", &[])), key("h", &route("/a", &[])));
        assert!(OverlapTracker::match_key("h", &Route::default()).is_none());
    }
}
