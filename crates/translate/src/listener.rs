//! Gateway listeners (the Gateway's own and those of the ListenerSets attached to it):
//! validation, conflicts, supported route kinds, their conditions as Envoy Gateway writes them,
//! ListenerSet status, and the Envoy listeners they become.

use crate::hostnames::sans_overlap;
use crate::index::Index;
use crate::ir::client::ClientSettings;
use crate::tls::{
    check_certificate_refs, frontend_validation, gateway_tls_conditions, resolve_client_validation,
    CertPair, ClientValidation, SdsRef, ServingCerts,
};
use crate::values::Age;
use flotilla_model::gateway::{Condition, Gateway, Listener, ParentReference};
use flotilla_model::routes::ListenerSet;
use flotilla_model::{Kind, Object, ResourceKey, GATEWAY_GROUP};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub(crate) mod xds;

/// A ListenerSet whose parentRef names the gateway being translated.
pub(crate) struct SetInfo<'a> {
    pub key: ResourceKey,
    pub ls: &'a ListenerSet,
    /// The Gateway's allowedListeners admit it.
    pub allowed: bool,
}

pub(crate) struct ListenerState<'a> {
    pub spec: &'a Listener,
    /// Index into the gateway's ListenerSets; `None` for the Gateway's own listeners.
    pub set: Option<usize>,
    /// Namespace and name of the owner (Gateway or ListenerSet).
    pub owner_ns: String,
    pub owner_name: String,
    /// Ready to be programmed into Envoy.
    pub valid: bool,
    pub conditions: Vec<Condition>,
    /// Route kinds the listener supports, as reported in status.
    pub supported: Vec<(Option<String>, String)>,
    pub attached: u32,
    /// Certificates for HTTPS and TLS Terminate listeners.
    pub certs: Vec<CertPair>,
    /// The DNS subjectAltNames of `certs`.
    pub sans: Vec<String>,
    /// Certificates from SDS reference secrets (their names cannot be inspected).
    pub sds: Vec<SdsRef>,
    /// Client certificate validation (Gateway `spec.tls.frontend`), HTTPS only.
    pub client: Option<ClientValidation>,
    /// The settings of the ClientTrafficPolicy that configures the listener, if any.
    pub ctp: Option<Arc<ClientSettings>>,
    /// The listener's ClientTrafficPolicy cannot be used (its status says why): as Envoy
    /// Gateway, the listener serves nothing rather than serve without it (HTTP routes answer
    /// 500, TCP and TLS routes are dropped).
    pub ctp_invalid: bool,
    /// Generation of the owner, for the conditions' observedGeneration.
    pub gen: Option<i64>,
}

impl ListenerState<'_> {
    /// `<owner ns>/<owner name>/<listener>`: Envoy Gateway's IR listener name.
    pub(crate) fn full_name(&self) -> String {
        format!("{}/{}/{}", self.owner_ns, self.owner_name, self.spec.name)
    }

    pub(crate) fn protocol(&self) -> &str {
        self.spec.protocol.as_str()
    }

    /// The certificates a TLS-terminating listener serves (inline and through SDS).
    pub(crate) fn serving_certs(&self) -> ServingCerts {
        ServingCerts {
            inline: self.certs.clone(),
            sds: self.sds.clone(),
        }
    }

    /// HTTP or HTTPS: served through the HTTP connection manager.
    pub(crate) fn is_http(&self) -> bool {
        matches!(self.protocol(), "HTTP" | "HTTPS")
    }

    pub(crate) fn tls_mode(&self) -> &str {
        self.spec
            .tls
            .as_ref()
            .and_then(|t| t.mode.as_deref())
            .unwrap_or("Terminate")
    }

    /// Whether a route of `route_kind` in the route's namespace may attach (allowedRoutes).
    pub(crate) fn allows(&self, ix: &Index, route_kind: &str, route_key: &ResourceKey) -> bool {
        if !self.supported.iter().any(|(_, k)| k == route_kind) {
            return false;
        }
        let ns = self
            .spec
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
        match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
            "All" => true,
            "Same" => route_key.namespace == self.owner_ns,
            "Selector" => ns.and_then(|n| n.selector.as_ref()).is_some_and(|sel| {
                selector_valid(sel)
                    && ix.namespace_matches(&route_key.cluster, &route_key.namespace, sel)
            }),
            _ => false,
        }
    }
}

pub(crate) fn port_of(l: &Listener) -> u32 {
    u32::try_from(l.port).unwrap_or(0)
}

/// The RDS route configuration that serves an HTTP or HTTPS listener: one per port for HTTP
/// listeners (a plain connection says nothing about the host), one per listener for HTTPS, whose
/// SNI filter chain then answers only its own hosts (and 421 for other listeners').
pub(crate) fn route_config_name(l: &ListenerState) -> String {
    if l.protocol() == "HTTPS" {
        format!("https-{}/{}", port_of(l.spec), l.full_name())
    } else {
        format!("http-{}", port_of(l.spec))
    }
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    msg: impl Into<String>,
    gen: Option<i64>,
) -> Condition {
    Condition::new(type_, ok, reason, msg, gen)
}

/// Sets a condition, replacing one of the same type in place (Envoy Gateway's
/// `SetGatewayListenerStatusCondition`).
fn set_cond(conds: &mut Vec<Condition>, c: Condition) {
    match conds.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => conds.push(c),
    }
}

pub(crate) fn has(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_)
}

fn selector_valid(sel: &LabelSelector) -> bool {
    sel.match_expressions.iter().flatten().all(|e| {
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" => n > 0,
            "Exists" | "DoesNotExist" => n == 0,
            _ => false,
        }
    })
}

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

/// HTTPS listeners of one port whose certificates overlap let a client reuse one HTTP/2
/// connection for hosts of another listener (connection coalescing); Envoy Gateway reports it
/// and serves such listeners with HTTP/1.1 only.
fn mark_overlapping_certificates(ls: &mut [ListenerState]) {
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

/// Protocols that may share a port: HTTPS and TLS (by SNI), and TCP next to them.
fn protocol_class(p: &str) -> &'static str {
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
fn mark_conflicts(ls: &mut [ListenerState]) {
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

/// Envoy Gateway's `validateListenerConditions`: a listener with no condition is programmed;
/// any other gets Programmed=False and ResolvedRefs=True unless set already.
fn settle(l: &mut ListenerState) {
    let gen = l.gen;
    if l.conditions.is_empty() {
        l.conditions = vec![
            cond(
                "Programmed",
                true,
                "Programmed",
                "Sending translated listener configuration to the data plane",
                gen,
            ),
            cond(
                "Accepted",
                true,
                "Accepted",
                "Listener has been successfully translated",
                gen,
            ),
            cond(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Listener references have been resolved",
                gen,
            ),
        ];
        l.valid = true;
    } else if !l.valid {
        if !has(&l.conditions, "Programmed") {
            let reason = if l.set.is_some() {
                "ListenersNotValid"
            } else {
                "Invalid"
            };
            l.conditions.push(cond(
                "Programmed",
                false,
                reason,
                "Listener is invalid, see other Conditions for details.",
                gen,
            ));
        }
        if !has(&l.conditions, "ResolvedRefs") {
            l.conditions.push(cond(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Listener references have been resolved",
                gen,
            ));
        }
    }
    if l.set.is_some() && l.valid {
        l.conditions.push(cond(
            "Conflicted",
            false,
            "NoConflicts",
            "No conflicts detected",
            gen,
        ));
    }
}

/// One listener's status entry.
pub(crate) fn listener_status(l: &ListenerState) -> Value {
    json!({
        "name": l.spec.name,
        "supportedKinds": l.supported.iter().map(|(g, k)| match g {
            Some(g) => json!({"group": g, "kind": k}),
            None => json!({"kind": k}),
        }).collect::<Vec<_>>(),
        "attachedRoutes": l.attached,
        "conditions": l.conditions,
    })
}

/// The Gateway's own listeners' status entries.
pub(crate) fn gateway_listener_statuses(ls: &[ListenerState]) -> Vec<Value> {
    ls.iter()
        .filter(|l| l.set.is_none())
        .map(listener_status)
        .collect()
}

/// The Gateway's status: its listeners and, when ListenerSets name it, how many are attached
/// (accepted).
pub(crate) fn gateway_status(
    ix: &Index,
    gw_key: &ResourceKey,
    gw: &Gateway,
    ls: &[ListenerState],
    sets: &[SetInfo],
    set_statuses: &[(ResourceKey, Value)],
) -> Value {
    let mut st = json!({ "listeners": gateway_listener_statuses(ls) });
    // Flotilla runs Envoy on hosts: the addresses a Gateway asks for are the ones its proxies
    // bind, so they are also the addresses it has.
    let addresses: Vec<Value> = gw
        .spec
        .addresses
        .iter()
        .filter(|a| !a.value.is_empty())
        .map(|a| json!({"type": a.type_.as_deref().unwrap_or("IPAddress"), "value": a.value}))
        .collect();
    if !addresses.is_empty() {
        st["addresses"] = json!(addresses);
    }
    let conds = gateway_tls_conditions(ix, gw_key, gw.spec.tls.as_ref(), gw.metadata.generation);
    if !conds.is_empty() {
        st["conditions"] = json!(conds);
    }
    if !sets.is_empty() {
        let attached = set_statuses
            .iter()
            .filter(|(_, v)| v["conditions"][0]["status"] == "True")
            .count();
        st["attachedListenerSets"] = json!(attached);
    }
    st
}

/// The status of every ListenerSet that names the gateway.
pub(crate) fn listener_set_statuses(
    sets: &[SetInfo],
    ls: &[ListenerState],
) -> Vec<(ResourceKey, Value)> {
    sets.iter()
        .enumerate()
        .map(|(si, s)| {
            let gen = s.ls.metadata.generation;
            if !s.allowed {
                let p = &s.ls.spec.parent_ref;
                let gw_ns = p.namespace.as_deref().unwrap_or(&s.key.namespace);
                return (
                    s.key.clone(),
                    json!({"conditions": [
                        cond("Accepted", false, "NotAllowed", format!(
                            "ListenerSet attachment from namespace {} not allowed by Gateway {gw_ns}/{}",
                            s.key.namespace, p.name), gen),
                        cond("Programmed", false, "NotAllowed", "Not Programmed", gen),
                    ]}),
                );
            }
            let mine: Vec<&ListenerState> = ls.iter().filter(|l| l.set == Some(si)).collect();
            let is = |l: &ListenerState, t: &str| l.conditions.iter().any(|c| c.type_ == t && c.status == "True");
            let accepted: Vec<bool> = mine.iter().map(|l| is(l, "Accepted")).collect();
            let programmed: Vec<bool> = mine.iter().map(|l| is(l, "Programmed")).collect();
            let acc = if accepted.iter().all(|b| *b) {
                cond("Accepted", true, "Accepted", "All listeners are accepted", gen)
            } else if accepted.iter().any(|b| *b) {
                cond("Accepted", true, "ListenersNotValid", "Some listeners are invalid", gen)
            } else {
                cond("Accepted", false, "ListenersNotValid", "No listeners are accepted", gen)
            };
            let prog = if programmed.iter().all(|b| *b) {
                cond("Programmed", true, "Programmed", "All listeners are programmed", gen)
            } else if programmed.iter().any(|b| *b) {
                cond("Programmed", true, "Programmed", "Some listeners are not programmed", gen)
            } else {
                cond("Programmed", false, "ListenersNotValid", "No listeners are programmed", gen)
            };
            (
                s.key.clone(),
                json!({
                    "conditions": [acc, prog],
                    "listeners": mine.iter().map(|l| listener_status(l)).collect::<Vec<_>>(),
                }),
            )
        })
        .collect()
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
