//! Listener, Gateway and ListenerSet status as Envoy Gateway writes it, from the checked
//! listeners.

use crate::index::Index;
use crate::listener::state::{cond, has, ListenerState, SetInfo};
use crate::tls::gateway_tls_conditions;
use flotilla_model::gateway::Gateway;
use flotilla_model::ResourceKey;
use serde_json::{json, Value};

/// Envoy Gateway's `validateListenerConditions`: a listener with no condition is programmed;
/// any other gets Programmed=False and ResolvedRefs=True unless set already.
pub(crate) fn settle(l: &mut ListenerState) {
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
