//! The status vocabulary of routes and policies: condition types, status errors and their
//! collection (Envoy Gateway's `TypedErrorCollector`), condition messages, reasons. A leaf:
//! it imports nothing of the crate.

use flotilla_model::gateway::Condition;
use std::collections::{BTreeMap, BTreeSet};

/// The route condition a status error lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CondType {
    Accepted,
    ResolvedRefs,
    BackendsAvailable,
}

impl CondType {
    pub fn as_str(self) -> &'static str {
        match self {
            CondType::Accepted => "Accepted",
            CondType::ResolvedRefs => "ResolvedRefs",
            CondType::BackendsAvailable => "BackendsAvailable",
        }
    }
}

/// One problem found while translating a route, with the message as Envoy Gateway's Go error
/// string (lower-case start, no final period: [`condition_message`] formats it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusError {
    pub type_: CondType,
    pub reason: String,
    pub message: String,
}

impl StatusError {
    pub fn new(type_: CondType, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Envoy Gateway's `TypedErrorCollector`: errors grouped by condition type, each group reported
/// as one error whose reasons are the sorted distinct reasons and whose message lists them.
#[derive(Default)]
pub(crate) struct ErrorCollector {
    errs: BTreeMap<CondType, Vec<StatusError>>,
}

impl ErrorCollector {
    pub fn add(&mut self, e: StatusError) {
        self.errs.entry(e.type_).or_default().push(e);
    }

    pub fn into_errors(self) -> Vec<StatusError> {
        self.errs
            .into_iter()
            .map(|(t, es)| {
                let reasons: BTreeSet<&str> = es
                    .iter()
                    .map(|e| e.reason.as_str())
                    .filter(|r| !r.is_empty())
                    .collect();
                let message = if es.len() == 1 {
                    es[0].message.clone()
                } else {
                    es.iter()
                        .map(|e| condition_message(&e.message))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                StatusError {
                    type_: t,
                    reason: reasons.into_iter().collect::<Vec<_>>().join(","),
                    message,
                }
            })
            .collect()
    }
}

/// Envoy Gateway's `Error2ConditionMsg`: capital first letter, final period.
pub(crate) fn condition_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    let mut chars = s.chars();
    if let Some(c) = chars.next() {
        out.extend(c.to_uppercase());
        out.push_str(chars.as_str());
    }
    if !out.is_empty() && !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// Envoy Gateway's `ConvertToAcceptedReason`.
pub(crate) fn accepted_reason(reason: &str) -> &str {
    match reason {
        "NotAllowedByListeners"
        | "NoMatchingListenerHostname"
        | "NoMatchingParent"
        | "UnsupportedValue" => reason,
        _ => "UnsupportedValue",
    }
}

/// Adds or replaces the condition of `c`'s type (`MergeConditions`).
pub(crate) fn set_condition(conds: &mut Vec<Condition>, c: Condition) {
    match conds.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => conds.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_messages_are_capitalized_with_a_period() {
        assert_eq!(
            condition_message("status code 1 is bad"),
            "Status code 1 is bad."
        );
        assert_eq!(condition_message("Already."), "Already.");
    }

    #[test]
    fn collector_joins_per_type() {
        let mut c = ErrorCollector::default();
        c.add(StatusError::new(
            CondType::ResolvedRefs,
            "BackendNotFound",
            "a not found",
        ));
        c.add(StatusError::new(
            CondType::ResolvedRefs,
            "InvalidKind",
            "b bad",
        ));
        c.add(StatusError::new(
            CondType::Accepted,
            "UnsupportedValue",
            "x",
        ));
        let errs = c.into_errors();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].type_, CondType::Accepted);
        assert_eq!(errs[0].message, "x");
        assert_eq!(errs[1].reason, "BackendNotFound,InvalidKind");
        assert_eq!(errs[1].message, "A not found.\nB bad.");
    }
}
