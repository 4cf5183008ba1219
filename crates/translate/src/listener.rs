//! Gateway listeners: validation, conflicts, supported route kinds and their conditions.

use flotilla_model::gateway::{Condition, Listener};
use flotilla_model::GATEWAY_GROUP;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(crate) struct ListenerState<'a> {
    pub spec: &'a Listener,
    pub valid: bool,
    pub conditions: Vec<Condition>,
    pub attached: u32,
}

pub(crate) fn port_of(l: &Listener) -> u32 {
    u32::try_from(l.port).unwrap_or(0)
}

pub(crate) fn supported_kinds(l: &Listener) -> Value {
    match l.protocol.as_str() {
        "HTTP" | "HTTPS" => json!([
            {"group": GATEWAY_GROUP, "kind": "HTTPRoute"},
            {"group": GATEWAY_GROUP, "kind": "GRPCRoute"},
        ]),
        "TLS" => json!([{"group": GATEWAY_GROUP, "kind": "TLSRoute"}]),
        "TCP" => json!([{"group": GATEWAY_GROUP, "kind": "TCPRoute"}]),
        "UDP" => json!([{"group": GATEWAY_GROUP, "kind": "UDPRoute"}]),
        _ => json!([]),
    }
}

pub(crate) fn check_listener(l: &Listener, gen: Option<i64>) -> ListenerState<'_> {
    let mut conditions = Vec::new();
    let valid = match l.protocol.as_str() {
        "HTTP" if (1..=65535).contains(&l.port) => {
            conditions.push(Condition::new(
                "Programmed",
                true,
                "Programmed",
                "Sending translated listener configuration to the data plane",
                gen,
            ));
            conditions.push(Condition::new(
                "Accepted",
                true,
                "Accepted",
                "Listener has been successfully translated",
                gen,
            ));
            conditions.push(Condition::new(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Listener references have been resolved",
                gen,
            ));
            true
        }
        "HTTP" => {
            conditions.push(Condition::new(
                "Accepted",
                false,
                "UnsupportedValue",
                format!("Port {} is invalid, must be between 1 and 65535.", l.port),
                gen,
            ));
            conditions.push(programmed_invalid(gen));
            false
        }
        p @ ("HTTPS" | "TLS" | "TCP" | "UDP") => {
            conditions.push(Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!("Protocol {p} is not supported by Flotilla yet; only HTTP listeners are translated."),
                gen,
            ));
            conditions.push(programmed_invalid(gen));
            false
        }
        p => {
            conditions.push(Condition::new(
                "Accepted",
                false,
                "UnsupportedProtocol",
                format!("Protocol {p} is unsupported, must be HTTP, HTTPS, TCP or UDP."),
                gen,
            ));
            conditions.push(programmed_invalid(gen));
            false
        }
    };
    ListenerState {
        spec: l,
        valid,
        conditions,
        attached: 0,
    }
}

pub(crate) fn programmed_invalid(gen: Option<i64>) -> Condition {
    Condition::new(
        "Programmed",
        false,
        "Invalid",
        "Listener is invalid, see other Conditions for details.",
        gen,
    )
}

/// Listeners sharing a port must have distinct hostnames; those that clash are not programmed.
pub(crate) fn mark_conflicts(listeners: &mut [ListenerState], gen: Option<i64>) {
    let mut seen: BTreeMap<(u32, String), Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate().filter(|(_, l)| l.valid) {
        let host = l.spec.hostname.clone().unwrap_or_default();
        seen.entry((port_of(l.spec), host)).or_default().push(i);
    }
    for ((_, _), idx) in seen.into_iter().filter(|(_, v)| v.len() > 1) {
        for i in idx {
            let l = &mut listeners[i];
            l.valid = false;
            l.conditions = vec![
                Condition::new(
                    "Conflicted",
                    true,
                    "HostnameConflict",
                    "All listeners for a given port must use a unique hostname",
                    gen,
                ),
                programmed_invalid(gen),
            ];
        }
    }
}
