//! Hostnames as Gateway API compares them: intersection of a listener's hostname with a
//! route's, wildcard coverage, certificate name overlap, SNI names. A leaf: it imports
//! nothing of the crate.

use std::collections::BTreeSet;

/// Does every host that `inner` (a hostname or `*.wildcard`) matches also match `outer`
/// (`None` or `*` match every host)?
pub(crate) fn covers(outer: Option<&str>, inner: &str) -> bool {
    let Some(outer) = outer.filter(|o| *o != "*") else {
        return true;
    };
    if outer.eq_ignore_ascii_case(inner) {
        return true;
    }
    let Some(suffix) = outer.strip_prefix('*') else {
        return false;
    };
    let host = inner.strip_prefix('*').unwrap_or(inner);
    host.len() > suffix.len()
        && host
            .to_ascii_lowercase()
            .ends_with(&suffix.to_ascii_lowercase())
}

/// Gateway API hostname intersection: a listener hostname (possibly `*.wildcard`) and the
/// route's hostnames. Returns the domains to serve; `*` when neither restricts.
pub(crate) fn intersect_hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = match (listener, route.is_empty()) {
        (None, true) => ["*".to_string()].into(),
        (Some(l), true) => [l.to_string()].into(),
        (None, false) => route.iter().cloned().collect(),
        (Some(l), false) => route
            .iter()
            .filter_map(|r| host_intersection(l, r))
            .collect(),
    };
    set.into_iter().collect()
}

pub(crate) fn host_intersection(a: &str, b: &str) -> Option<String> {
    if a == b {
        return Some(a.to_string());
    }
    let wild_match = |wild: &str, host: &str| {
        wild.strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
    };
    if wild_match(a, b) {
        return Some(b.to_string());
    }
    if wild_match(b, a) {
        return Some(a.to_string());
    }
    None
}

/// Whether two certificate names can match one host name.
pub(crate) fn sans_overlap(a: &str, b: &str) -> bool {
    let wild = |w: &str, h: &str| {
        w.strip_prefix("*.").is_some_and(|suffix| {
            h.split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
        })
    };
    a == b || wild(a, b) || wild(b, a)
}

/// The SNI names a listener hostname matches: none (any name) for no hostname or `*`, which
/// Envoy does not take as a server name.
pub(crate) fn sni_names(hostname: Option<&str>) -> Vec<String> {
    hostname
        .filter(|h| !h.is_empty() && *h != "*")
        .map(|h| vec![h.to_string()])
        .unwrap_or_default()
}
