//! Conflicts between the listeners of one gateway: listeners of a port that disagree on
//! protocol or hostname (Envoy Gateway's `checkListenerConflicts`), and HTTPS listeners whose
//! certificates overlap.

use crate::hostnames::sans_overlap;
use crate::listener::state::{cond, port_of, ListenerState};
use std::collections::{BTreeMap, BTreeSet};

/// HTTPS listeners of one port whose certificates overlap let a client reuse one HTTP/2
/// connection for hosts of another listener (connection coalescing); Envoy Gateway reports it
/// and serves such listeners with HTTP/1.1 only.
pub(crate) fn mark_overlapping_certificates(ls: &mut [ListenerState]) {
    let mut found: Vec<Option<String>> = vec![None; ls.len()];
    for (i, l) in ls.iter().enumerate() {
        if !l.valid || l.protocol() != "HTTPS" {
            continue;
        }
        'outer: for mine in &l.sans {
            for (j, o) in ls.iter().enumerate() {
                if j == i
                    || !o.valid
                    || o.protocol() != "HTTPS"
                    || port_of(o.spec) != port_of(l.spec)
                {
                    continue;
                }
                if let Some(theirs) = o.sans.iter().find(|t| sans_overlap(mine, t)) {
                    found[i] = Some(format!(
                        "The certificate SAN {mine} overlaps with the certificate SAN {theirs} in listener {}. ALPN will default to HTTP/1.1 to prevent HTTP/2 connection coalescing, unless explicitly configured via ClientTrafficPolicy",
                        o.spec.name
                    ));
                    break 'outer;
                }
            }
        }
    }
    // An SDS certificate's names cannot be inspected: sharing a port with other HTTPS
    // listeners is treated as an overlap.
    for (i, l) in ls.iter().enumerate() {
        let shared = ls.iter().enumerate().any(|(j, o)| {
            j != i && o.valid && o.protocol() == "HTTPS" && port_of(o.spec) == port_of(l.spec)
        });
        if found[i].is_none() && l.valid && l.protocol() == "HTTPS" && !l.sds.is_empty() && shared {
            found[i] = Some(String::new());
        }
    }
    for (l, msg) in ls.iter_mut().zip(found) {
        if let Some(msg) = msg {
            let gen = l.gen;
            l.conditions.push(if msg.is_empty() {
                cond("OverlappingTLSConfig", true, "SDSCertificateOpaque",
                    "HTTP/2 is disabled by default because one or more HTTPS listeners on this port use an SDS-backed certificate whose DNS names cannot be inspected. Configure ALPN explicitly with ClientTrafficPolicy to override this default.", gen)
            } else {
                cond("OverlappingTLSConfig", true, "OverlappingCertificates", msg, gen)
            });
        }
    }
}

/// Protocols that may share a port: HTTPS and TLS (by SNI), and TCP next to them.
pub(crate) fn protocol_class(p: &str) -> &'static str {
    match p {
        "HTTP" => "HTTP",
        "HTTPS" | "TLS" => "https/tls",
        _ => "TCP",
    }
}

/// Marks conflicts among the listeners that passed validation. The Gateway's own listeners
/// win over ListenerSet listeners: a ListenerSet listener conflicts when its protocol differs
/// from the Gateway's on that port, or its hostname repeats another's; Gateway listeners are
/// judged only among themselves.
pub(crate) fn mark_conflicts(ls: &mut [ListenerState]) {
    let mut by_port: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, l) in ls.iter().enumerate() {
        if l.valid && l.protocol() != "UDP" {
            by_port.entry(port_of(l.spec)).or_default().push(i);
        }
    }
    let mut conflicts: Vec<Option<(&'static str, String)>> = vec![None; ls.len()];
    for idx in by_port.values() {
        let list = |ids: &mut dyn Iterator<Item = usize>| {
            let mut names: Vec<String> = ids.map(|i| ls[i].full_name()).collect();
            names.sort();
            names.join(", ")
        };
        let proto_msg = format!(
            "All listeners for a given port must use a compatible protocol, conflicting listeners: {}",
            list(&mut idx.iter().copied())
        );
        // Owners in precedence order: the Gateway (`None`) first, then its ListenerSets.
        let mut owners: Vec<Option<usize>> = idx.iter().map(|&i| ls[i].set).collect();
        owners.dedup();
        let class = |i: usize| protocol_class(ls[i].protocol());
        // The protocols of the first owner on the port hold it; a later owner's listener of
        // another protocol conflicts. Within the first owner, mixed protocols all conflict.
        let mut established: Option<BTreeSet<&str>> = None;
        for owner in &owners {
            let mine: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| ls[i].set == *owner)
                .collect();
            let classes: BTreeSet<&str> = mine.iter().map(|&i| class(i)).collect();
            match &established {
                None => {
                    if classes.len() > 1 {
                        for &i in &mine {
                            conflicts[i] = Some(("ProtocolConflict", proto_msg.clone()));
                        }
                    }
                    established = Some(classes);
                }
                Some(held) => {
                    for &i in &mine {
                        if held.len() > 1 || !held.contains(class(i)) {
                            conflicts[i] = Some(("ProtocolConflict", proto_msg.clone()));
                        }
                    }
                }
            }
        }
        // Hostnames, among the listeners (not TCP) left: a hostname repeated within one owner
        // conflicts there; a ListenerSet listener also conflicts with a hostname an earlier
        // owner holds.
        let host = |i: usize| ls[i].spec.hostname.clone().unwrap_or_default();
        let rest: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| conflicts[i].is_none() && ls[i].protocol() != "TCP")
            .collect();
        let mut held: BTreeSet<String> = BTreeSet::new();
        for owner in &owners {
            let mine: Vec<usize> = rest
                .iter()
                .copied()
                .filter(|&i| ls[i].set == *owner)
                .collect();
            for &i in &mine {
                let twins = mine.iter().filter(|&&j| host(j) == host(i)).count();
                if twins > 1 || (owner.is_some() && held.contains(&host(i))) {
                    let same = rest.iter().copied().filter(|&j| host(j) == host(i));
                    let msg = format!(
                        "All listeners for a given port must use a unique hostname, conflicting listeners: {}",
                        list(&mut same.into_iter())
                    );
                    conflicts[i] = Some(("HostnameConflict", msg));
                }
            }
            held.extend(mine.iter().map(|&i| host(i)));
        }
    }
    // Only one TCP (and one UDP) listener may use a port: the first wins.
    let mut l4: BTreeMap<(&str, u32), Vec<usize>> = BTreeMap::new();
    for (i, l) in ls.iter().enumerate() {
        if l.valid && matches!(l.protocol(), "TCP" | "UDP") {
            l4.entry((l.protocol(), port_of(l.spec)))
                .or_default()
                .push(i);
        }
    }
    let mut l4_conflict: Vec<Option<String>> = vec![None; ls.len()];
    for ((proto, _), idx) in &l4 {
        for &i in idx.iter().skip(1) {
            l4_conflict[i] = Some(format!(
                "Only one {proto} listener is allowed in a given port"
            ));
        }
    }
    for (i, l) in ls.iter_mut().enumerate() {
        let (reason, msg) = match (&conflicts[i], &l4_conflict[i]) {
            (Some((r, m)), _) => (*r, m.clone()),
            (None, Some(m)) => ("ProtocolConflict", m.clone()),
            (None, None) => continue,
        };
        l.valid = false;
        let conflicted_msg = l4_conflict[i].clone().unwrap_or_else(|| msg.clone());
        let gen = l.gen;
        let mut conds = vec![cond("Conflicted", true, reason, conflicted_msg, gen)];
        if l.set.is_some() {
            conds.push(cond("Accepted", false, reason, msg.clone(), gen));
            conds.push(cond("Programmed", false, reason, msg, gen));
        }
        conds.append(&mut l.conditions);
        l.conditions = conds;
    }
}
