//! Gateway listeners (the Gateway's own and those of the ListenerSets attached to it):
//! validation, supported route kinds and the ListenerSets a gateway admits. Its parts:
//! [`state`] (a listener being checked), [`conflicts`] (between the listeners of a port),
//! [`status`] (the conditions as Envoy Gateway writes them) and [`xds`] (the Envoy listeners
//! they become, the only part that knows Envoy and the policies).

use crate::index::Index;
use crate::tls::{check_certificate_refs, frontend_validation, resolve_client_validation};
use crate::values::Age;
use flotilla_model::gateway::{Condition, Gateway, Listener, ParentReference};
use flotilla_model::{Kind, Object, ResourceKey, GATEWAY_GROUP};
use serde_json::{json, Value};

pub(crate) mod conflicts;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod xds;

use conflicts::{mark_conflicts, mark_overlapping_certificates};
pub(crate) use state::{
    cond, port_of, route_config_name, selector_valid, set_cond, ListenerState, SetInfo,
};
pub(crate) use status::{gateway_status, listener_set_statuses, settle};

/// The ListenerSets whose parentRef names `gw`, oldest first, then by namespace/name.
pub(crate) fn listener_sets<'a>(
    ix: &'a Index,
    gw_key: &ResourceKey,
    gw: &Gateway,
) -> Vec<SetInfo<'a>> {
    let start = ResourceKey::new(&gw_key.cluster, Kind::ListenerSet, "", "");
    let mut out: Vec<SetInfo<'a>> = ix
        .resources
        .range(start..)
        .take_while(|(k, _)| k.cluster == gw_key.cluster && k.kind == Kind::ListenerSet)
        .filter_map(|(k, r)| match &r.object {
            Object::ListenerSet(ls) => Some((k, ls)),
            _ => None,
        })
        .filter(|(k, ls)| {
            let p = &ls.spec.parent_ref;
            p.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                && p.namespace.as_deref().unwrap_or(&k.namespace) == gw_key.namespace
                && p.name == gw_key.name
        })
        .map(|(k, ls)| SetInfo {
            key: k.clone(),
            ls,
            allowed: listener_set_allowed(ix, gw_key, gw, &k.namespace),
        })
        .collect();
    out.sort_by(|a, b| {
        Age::of(&a.ls.metadata, &a.key)
            .cmp(&Age::of(&b.ls.metadata, &b.key))
            .then_with(|| a.key.cmp(&b.key))
    });
    out
}

fn listener_set_allowed(ix: &Index, gw_key: &ResourceKey, gw: &Gateway, ns: &str) -> bool {
    let Some(n) = gw
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    else {
        return false;
    };
    match n.from.as_deref() {
        Some("All") => true,
        Some("Same") => ns == gw_key.namespace,
        Some("Selector") => n.selector.as_ref().is_some_and(|sel| {
            selector_valid(sel) && ix.namespace_matches(&gw_key.cluster, ns, sel)
        }),
        _ => false,
    }
}

/// The Gateway status when one of its addresses has a type other than IPAddress or Hostname:
/// Accepted=False with UnsupportedAddress, and nothing else is translated.
pub(crate) fn unsupported_address_status(gw: &Gateway) -> Option<Value> {
    let bad = gw
        .spec
        .addresses
        .iter()
        .filter_map(|a| a.type_.as_deref())
        .find(|t| !matches!(*t, "IPAddress" | "Hostname"))?;
    Some(json!({"conditions": [cond(
        "Accepted",
        false,
        "UnsupportedAddress",
        format!("Gateway has an address with an unsupported type: {bad}"),
        gw.metadata.generation,
    )]}))
}

/// Validates every listener of the gateway and of its admitted ListenerSets, then marks
/// conflicts between them and settles their conditions.
pub(crate) fn check_listeners<'a>(
    ix: &Index,
    gw_key: &ResourceKey,
    gw: &'a Gateway,
    sets: &[SetInfo<'a>],
) -> Vec<ListenerState<'a>> {
    let gen = gw.metadata.generation;
    let mut out: Vec<ListenerState<'a>> = Vec::new();
    for l in &gw.spec.listeners {
        out.push(validate(
            ix,
            gw_key,
            gw,
            l,
            None,
            &gw_key.namespace,
            &gw_key.name,
            gen,
        ));
    }
    for (si, s) in sets.iter().enumerate().filter(|(_, s)| s.allowed) {
        let sgen = s.ls.metadata.generation;
        for l in &s.ls.spec.listeners {
            out.push(validate(
                ix,
                gw_key,
                gw,
                l,
                Some(si),
                &s.key.namespace,
                &s.key.name,
                sgen,
            ));
        }
    }
    mark_conflicts(&mut out);
    for l in &mut out {
        settle(l);
    }
    mark_overlapping_certificates(&mut out);
    out
}

#[allow(clippy::too_many_arguments)]
fn validate<'a>(
    ix: &Index,
    gw_key: &ResourceKey,
    gw: &Gateway,
    l: &'a Listener,
    set: Option<usize>,
    owner_ns: &str,
    owner_name: &str,
    gen: Option<i64>,
) -> ListenerState<'a> {
    let mut st = ListenerState {
        spec: l,
        set,
        owner_ns: owner_ns.to_string(),
        owner_name: owner_name.to_string(),
        valid: false,
        conditions: vec![],
        supported: vec![],
        attached: 0,
        certs: vec![],
        sans: vec![],
        sds: vec![],
        client: None,
        ctp: None,
        ctp_invalid: false,
        gen,
    };
    let c = &mut st.conditions;
    let mode = l.tls.as_ref().and_then(|t| t.mode.as_deref());
    // Supported kinds by protocol (and TLS mode).
    let kinds: &[&str] = match l.protocol.as_str() {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TLS" => match (l.tls.is_some(), mode) {
            (true, Some("Passthrough")) => &["TLSRoute"],

            _ => &["TCPRoute", "TLSRoute"],
        },
        "TCP" => &["TCPRoute"],
        "UDP" => &["UDPRoute"],
        p => {
            set_cond(
                c,
                cond(
                    "Accepted",
                    false,
                    "UnsupportedProtocol",
                    format!("Protocol {p} is unsupported, must be HTTP, HTTPS, TCP or UDP."),
                    gen,
                ),
            );
            &[]
        }
    };
    if !kinds.is_empty() {
        st.supported = allowed_kinds(l, kinds, c, gen);
    }
    if !(1..=65535).contains(&l.port) {
        set_cond(
            c,
            cond(
                "Accepted",
                false,
                "UnsupportedValue",
                format!("Port {} is invalid, must be between 1 and 65535.", l.port),
                gen,
            ),
        );
    }
    // allowedRoutes.namespaces
    if let Some(ns) = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    {
        if ns.from.as_deref() == Some("Selector") {
            match &ns.selector {
                None => set_cond(c, cond("Programmed", false, "Invalid",
                    "The allowedRoutes.namespaces.selector field must be specified when allowedRoutes.namespaces.from is set to \"Selector\".", gen)),
                Some(sel) if !selector_valid(sel) => set_cond(c, cond("Programmed", false, "Invalid",
                    "The allowedRoutes.namespaces.selector could not be parsed.", gen)),
                Some(_) => {}
            }
        }
    }
    // TLS configuration
    let owner_kind = if set.is_some() {
        "ListenerSet"
    } else {
        "Gateway"
    };
    let invalid = |msg: String| cond("Programmed", false, "Invalid", msg, gen);
    match l.protocol.as_str() {
        p @ ("HTTP" | "TCP" | "UDP") if l.tls.is_some() => {
            set_cond(
                c,
                invalid(format!(
                    "Listener must not have TLS set when protocol is {p}."
                )),
            );
        }
        p @ ("HTTPS" | "TLS") => {
            match &l.tls {
                None => set_cond(
                    c,
                    invalid(format!("Listener must have TLS set when protocol is {p}.")),
                ),
                Some(tls) => {
                    let mode = tls.mode.as_deref().unwrap_or("Terminate");
                    let terminate = match (p, mode) {
                        ("HTTPS", "Terminate") | ("TLS", "Terminate") => true,
                        ("HTTPS", m) => {
                            set_cond(c, cond("Programmed", false, "UnsupportedTLSMode",
                            format!("TLS {m} mode is not supported, TLS mode must be Terminate."), gen));
                            false
                        }
                        (_, "Passthrough") => {
                            if !tls.certificate_refs.is_empty() {
                                set_cond(c, invalid("Listener must not have TLS certificate refs set for TLS mode Passthrough.".into()));
                            }
                            false
                        }
                        (_, m) => {
                            set_cond(c, cond("Programmed", false, "UnsupportedTLSMode",
                            format!("TLS {m} mode is not supported, TLS mode must be Terminate or Passthrough."), gen));
                            false
                        }
                    };
                    if terminate {
                        if tls.certificate_refs.is_empty() {
                            let msg = if p == "HTTPS" {
                                "Listener must have at least 1 TLS certificate ref".to_string()
                            } else {
                                "Listener must have TLS certificate refs set for TLS mode Terminate.".to_string()
                            };
                            set_cond(c, invalid(msg));
                        } else {
                            let check = check_certificate_refs(
                                ix,
                                &gw_key.cluster,
                                owner_kind,
                                owner_ns,
                                tls,
                            );
                            let errs = check
                                .errors
                                .iter()
                                .map(|(_, m)| m.as_str())
                                .collect::<Vec<_>>()
                                .join(", ");
                            if check.certs.is_empty() && check.sds.is_empty() {
                                let reason = check
                                    .errors
                                    .first()
                                    .map_or("InvalidCertificateRef", |e| e.0);
                                set_cond(
                                    c,
                                    cond(
                                        "ResolvedRefs",
                                        false,
                                        reason,
                                        format!("No valid secrets exist: {errs}"),
                                        gen,
                                    ),
                                );
                                // A reference that is not permitted leaves it unaccepted.
                                if reason != "RefNotPermitted" {
                                    set_cond(
                                        c,
                                        cond(
                                            "Accepted",
                                            true,
                                            "Accepted",
                                            "Listener has been successfully translated",
                                            gen,
                                        ),
                                    );
                                }
                            } else if !check.errors.is_empty() {
                                set_cond(
                                    c,
                                    cond(
                                        "ResolvedRefs",
                                        false,
                                        "PartiallyInvalidCertificateRef",
                                        format!("Some secrets are invalid: {errs}"),
                                        gen,
                                    ),
                                );
                                set_cond(
                                    c,
                                    cond(
                                        "Accepted",
                                        true,
                                        "Accepted",
                                        "Listener has been successfully translated",
                                        gen,
                                    ),
                                );
                                set_cond(c, cond("Programmed", true, "Programmed", "Sending translated listener configuration to the data plane", gen));
                            }
                            st.certs = check.certs;
                            st.sans = check.sans.into_iter().flatten().collect();
                            st.sds = check.sds;
                        }
                    }
                }
            }
        }
        _ => {}
    }
    // Client certificate validation (Gateway `spec.tls.frontend`) of HTTPS listeners.
    if l.protocol == "HTTPS" {
        if let Some(v) = frontend_validation(gw.spec.tls.as_ref(), l.port) {
            match resolve_client_validation(ix, &gw_key.cluster, &gw_key.namespace, v) {
                Ok(c) => st.client = Some(c),
                Err((reason, e)) => {
                    let msg = format!(
                        "Listener has invalid caCertificateRef for frontend TLS validation: {e}"
                    );
                    let c = &mut st.conditions;
                    set_cond(c, cond("ResolvedRefs", false, reason, msg.clone(), gen));
                    set_cond(c, cond("Programmed", false, reason, msg.clone(), gen));
                    set_cond(c, cond("Accepted", false, "NoValidCACertificate", msg, gen));
                }
            }
        }
    }
    // Hostname
    if matches!(l.protocol.as_str(), "TCP" | "UDP") && l.hostname.is_some() {
        set_cond(
            &mut st.conditions,
            invalid(format!(
                "Listener must not have hostname set when protocol is {}.",
                l.protocol
            )),
        );
    }
    st.valid = st.conditions.is_empty()
        || st
            .conditions
            .iter()
            .all(|c| c.status == "True" || c.reason == "PartiallyInvalidCertificateRef");
    st
}

/// allowedRoutes.kinds against the kinds the protocol supports: the supported ones (as
/// written), and an InvalidRouteKinds condition for each other.
fn allowed_kinds(
    l: &Listener,
    kinds: &[&str],
    c: &mut Vec<Condition>,
    gen: Option<i64>,
) -> Vec<(Option<String>, String)> {
    let requested = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.as_ref())
        .filter(|k| !k.is_empty());
    let Some(requested) = requested else {
        return kinds
            .iter()
            .map(|k| (Some(GATEWAY_GROUP.to_string()), k.to_string()))
            .collect();
    };
    let mut supported = Vec::new();
    let mut unsupported = Vec::new();
    for k in requested {
        if k.group.as_deref().is_some_and(|g| g != GATEWAY_GROUP) {
            set_cond(
                c,
                cond(
                    "ResolvedRefs",
                    false,
                    "InvalidRouteKinds",
                    format!("Group is not supported, group must be {GATEWAY_GROUP}"),
                    gen,
                ),
            );
            continue;
        }
        if kinds.contains(&k.kind.as_str()) {
            supported.push((k.group.clone(), k.kind.clone()));
        } else {
            unsupported.push(k.kind.clone());
        }
    }
    for k in unsupported {
        let print: Vec<String> = if supported.is_empty() {
            kinds.iter().map(|s| s.to_string()).collect()
        } else {
            supported.iter().map(|(_, k)| k.clone()).collect()
        };
        set_cond(
            c,
            cond(
                "ResolvedRefs",
                false,
                "InvalidRouteKinds",
                format!(
                    "{k} is not supported, kind must be one of [{}]",
                    print.join(" ")
                ),
                gen,
            ),
        );
    }
    supported
}

/// The listeners a parentRef selects, if it refers to this gateway or one of its admitted
/// ListenerSets: all of the parent's listeners, narrowed by sectionName and port.
pub(crate) fn parent_candidates(
    ls: &[ListenerState],
    sets: &[SetInfo],
    pref: &ParentReference,
    route_ns: &str,
    gw: &ResourceKey,
) -> Option<Vec<usize>> {
    let group_ok = pref.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP;
    let ns = pref.namespace.as_deref().unwrap_or(route_ns);
    let owner: Option<usize> = match pref.kind.as_deref().unwrap_or("Gateway") {
        "Gateway" if group_ok && ns == gw.namespace && pref.name == gw.name => None,
        "ListenerSet" if group_ok => {
            let si = sets
                .iter()
                .position(|s| s.key.namespace == ns && s.key.name == pref.name)?;
            Some(si)
        }
        _ => return None,
    };
    Some(
        ls.iter()
            .enumerate()
            .filter(|(_, l)| l.set == owner)
            .filter(|(_, l)| pref.section_name.as_ref().is_none_or(|s| *s == l.spec.name))
            .filter(|(_, l)| pref.port.is_none_or(|p| p == l.spec.port))
            .map(|(i, _)| i)
            .collect(),
    )
}

/// Whether `pref` names this gateway or one of its ListenerSets.
pub(crate) fn refers_to(
    sets: &[SetInfo],
    pref: &ParentReference,
    route_ns: &str,
    gw: &ResourceKey,
) -> bool {
    let group_ok = pref.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP;
    let ns = pref.namespace.as_deref().unwrap_or(route_ns);
    match pref.kind.as_deref().unwrap_or("Gateway") {
        "Gateway" => group_ok && ns == gw.namespace && pref.name == gw.name,
        "ListenerSet" => {
            group_ok
                && sets
                    .iter()
                    .any(|s| s.allowed && s.key.namespace == ns && s.key.name == pref.name)
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
