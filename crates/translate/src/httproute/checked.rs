//! What a checked HTTPRoute or GRPCRoute is before it is placed on its parents: the Envoy
//! routes its rules contribute ([`RouteEntry`]) and its grouped status errors
//! ([`CheckedRoute`]), applied to each parent's conditions as Envoy Gateway's
//! `processHTTPRouteParentRefs` does.

use crate::httproute::overlap::PrecedenceKey;
use crate::status::{condition_message, set_condition, CondType, StatusError};
use envoy_types::pb::envoy::config::route::v3::Route;
use flotilla_model::gateway::Condition;
use std::collections::BTreeSet;

/// One Envoy route a rule contributes, before it is copied per host.
#[derive(Clone, Debug)]
pub(crate) struct RouteEntry {
    pub key: PrecedenceKey,
    pub route: Route,
    /// `Some(scheme)` when the route redirects without a port: the port is derived per
    /// listener (the scheme's well-known port, else the listener's).
    pub redirect_scheme: Option<Option<String>>,
    /// The rule it comes from: its index and name (`sectionName` of a policy targeting it).
    pub rule: usize,
    pub rule_name: Option<String>,
}

/// A route after per-route validation, independent of the parent it attaches to.
pub(crate) struct CheckedRoute {
    pub entries: Vec<RouteEntry>,
    /// One error per condition type (Envoy Gateway's grouped errors).
    pub errors: Vec<StatusError>,
    /// Rules with an Accepted-type error, sorted.
    pub unaccepted: Vec<usize>,
    pub rule_count: usize,
    /// Clusters that must speak HTTP/2 upstream (GRPCRoute backends).
    pub http2_clusters: BTreeSet<String>,
}

impl CheckedRoute {
    /// Applies the route's errors to one parent's conditions, as `processHTTPRouteParentRefs`
    /// does, then sets ResolvedRefs=True when nothing said otherwise.
    pub fn apply_to(&self, conds: &mut Vec<Condition>, gen: Option<i64>) {
        for e in &self.errors {
            if e.type_ == CondType::Accepted {
                if self.unaccepted.len() == self.rule_count {
                    set_condition(
                        conds,
                        Condition::new(
                            "Accepted",
                            false,
                            &e.reason,
                            condition_message(&e.message),
                            gen,
                        ),
                    );
                } else {
                    let rules: Vec<String> =
                        self.unaccepted.iter().map(|r| r.to_string()).collect();
                    set_condition(
                        conds,
                        Condition::new(
                            "PartiallyInvalid",
                            true,
                            &e.reason,
                            format!(
                                "Dropped Rule(s) [{}]: {}",
                                rules.join(" "),
                                condition_message(&e.message)
                            ),
                            gen,
                        ),
                    );
                    set_condition(
                        conds,
                        Condition::new("Accepted", true, "Accepted", "Route is accepted", gen),
                    );
                }
            } else {
                set_condition(
                    conds,
                    Condition::new(
                        e.type_.as_str(),
                        false,
                        &e.reason,
                        condition_message(&e.message),
                        gen,
                    ),
                );
            }
        }
        if !conds
            .iter()
            .any(|c| c.type_ == "ResolvedRefs" && c.status == "False")
        {
            set_condition(
                conds,
                Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "Resolved all the Object references for the Route",
                    gen,
                ),
            );
        }
    }
}
