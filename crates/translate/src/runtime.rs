//! Conditions Envoy Gateway writes outside its translator (its provider and status updater):
//! the Gateway-level Accepted and Programmed conditions. Flotilla computes them with the rest
//! of the status; [`crate::Translator::translator_status`] leaves them out, so output can be
//! compared with Envoy Gateway's translator.

use crate::index::Index;
use flotilla_model::gateway::{Condition, Gateway};
use flotilla_model::{Kind, ResourceKey, EG_GROUP};
use serde_json::{json, Value};

fn has(conds: &[Value], type_: &str) -> bool {
    conds.iter().any(|c| c["type"] == type_)
}

fn is_true(conds: &[Value], type_: &str) -> bool {
    conds
        .iter()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// Adds Accepted and Programmed to a Gateway's translated status, unless translation already
/// decided them.
pub(crate) fn with_gateway_conditions(
    ix: &Index,
    gw_key: &ResourceKey,
    gw: &Gateway,
    mut status: Value,
) -> Value {
    let gen = gw.metadata.generation;
    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let listeners: Vec<Value> = status["listeners"].as_array().cloned().unwrap_or_default();
    let programmed = |l: &Value| {
        l["conditions"]
            .as_array()
            .is_some_and(|c| is_true(c, "Programmed"))
    };
    let any_programmed = listeners.iter().any(programmed);
    let all_programmed = listeners.iter().all(programmed);
    if !has(&conds, "Accepted") {
        let params = gw
            .spec
            .infrastructure
            .as_ref()
            .and_then(|i| i.parameters_ref.as_ref());
        let accepted = match params {
            Some(p)
                if p.group != EG_GROUP
                    || p.kind != "EnvoyProxy"
                    || !ix.resources.contains_key(&ResourceKey::new(
                        &gw_key.cluster,
                        Kind::EnvoyProxy,
                        &gw_key.namespace,
                        &p.name,
                    )) =>
            {
                Condition::new(
                    "Accepted",
                    false,
                    "InvalidParameters",
                    format!(
                        "Invalid parametersRef: {}/{} {} not found",
                        p.group, p.kind, p.name
                    ),
                    gen,
                )
            }
            _ if !listeners.is_empty() && !any_programmed => Condition::new(
                "Accepted",
                false,
                "ListenersNotValid",
                "The Gateway has no valid listeners.",
                gen,
            ),
            _ if !all_programmed => Condition::new(
                "Accepted",
                true,
                "ListenersNotValid",
                "Some listeners are invalid; the valid ones are programmed.",
                gen,
            ),
            _ => Condition::new(
                "Accepted",
                true,
                "Accepted",
                "The Gateway has been scheduled by Flotilla",
                gen,
            ),
        };
        conds.push(json!(accepted));
    }
    if !has(&conds, "Programmed") {
        let programmed = if is_true(&conds, "Accepted") && (any_programmed || listeners.is_empty())
        {
            Condition::new(
                "Programmed",
                true,
                "Programmed",
                "Address assigned to the Gateway and its configuration sent to the proxies",
                gen,
            )
        } else {
            Condition::new(
                "Programmed",
                false,
                "Invalid",
                "The Gateway is not accepted or has no programmed listener",
                gen,
            )
        };
        conds.push(json!(programmed));
    }
    status["conditions"] = json!(conds);
    status
}
