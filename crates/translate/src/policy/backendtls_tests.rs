//! BackendTLSPolicy attachment: precedence, conflicts and ancestor status.

use super::*;
use crate::backend::tests::translate;
use crate::backendtls::tests::{ancestors, base, conds, policy};
use serde_json::json;

#[test]
fn a_younger_policy_on_the_same_target_is_conflicted() {
    let t = translate(&base(&format!(
        "{}{}",
        policy("young", Some("https"), "ca", "2025-06-01T00:00:00Z"),
        policy("old", Some("https"), "ca", "2025-01-01T00:00:00Z")
    )));
    assert_eq!(conds(&ancestors(&t, "old")[0])[1].2, "Accepted");
    let young = ancestors(&t, "young");
    assert_eq!(
        conds(&young[0]),
        vec![("Accepted".into(), "False".into(), "Conflicted".into())]
    );
    assert_eq!(
        young[0]["conditions"][0]["message"],
        "Policy conflicts with BackendTLSPolicy app/old."
    );
}

#[test]
fn a_sectioned_policy_wins_over_a_whole_service_one() {
    let t = translate(&base(&format!(
        "{}{}",
        policy("whole", None, "ca", "2025-01-01T00:00:00Z"),
        policy("sectioned", Some("https"), "ca", "2025-06-01T00:00:00Z")
    )));
    assert_eq!(ancestors(&t, "sectioned").len(), 1);
    assert!(ancestors(&t, "whole").is_empty());
}

#[test]
fn more_than_16_ancestors_are_truncated_and_aggregated() {
    let mut status: PolicyStatus<RouteParent> = PolicyStatus::new(None);
    let parents: Vec<RouteParent> = (0..20)
        .map(|i| RouteParent(json!({"name": format!("gw-{i:02}"), "namespace": "infra"})))
        .collect();
    for (i, a) in parents.iter().enumerate() {
        if i == 19 {
            status.reject(a, "NoValidCACertificate", "");
        } else {
            status.accept_if_unset(a);
        }
    }
    status.truncate();
    let list = &status.ancestors;
    assert_eq!(list.len(), 16);
    // Not-accepted ancestors first, then by name.
    assert_eq!(list[0].ancestor.0["name"], "gw-19");
    assert_eq!(list[1].ancestor.0["name"], "gw-00");
    assert!(list[15].conditions.iter().any(|c| c.type_ == "Aggregated"));
    // The ancestorRef is the parentRef as the route wrote it.
    assert_eq!(
        status.to_json("c")["ancestors"][0]["ancestorRef"],
        json!({"name": "gw-19", "namespace": "infra"})
    );
}

/// Creation times are compared as instants: `…:45Z` is older than `…:45.5Z` (which sorts
/// first as text), so the policy created at `…:45Z` wins whatever the names.
#[test]
fn policy_age_is_compared_as_time_not_text() {
    let t = translate(&base(&format!(
        "{}{}",
        policy("aa-young", Some("https"), "ca", "2025-01-01T00:00:45.5Z"),
        policy("zz-old", Some("https"), "ca", "2025-01-01T00:00:45Z")
    )));
    assert_eq!(conds(&ancestors(&t, "zz-old")[0])[1].2, "Accepted");
    assert_eq!(
        ancestors(&t, "aa-young")[0]["conditions"][0]["message"],
        "Policy conflicts with BackendTLSPolicy app/zz-old."
    );
}

/// A policy that names its target twice owns it once: it does not conflict with itself.
#[test]
fn a_policy_naming_its_target_twice_is_not_conflicted() {
    let twice = policy("p", Some("https"), "ca", "2025-01-01T00:00:00Z").replace(
        "targetRefs: [{group: \"\", kind: Service, name: web, sectionName: https}]",
        "targetRefs: [{group: \"\", kind: Service, name: web, sectionName: https}, \
         {group: \"\", kind: Service, name: web, sectionName: https}]",
    );
    assert!(twice.contains("}, {group"));
    let t = translate(&base(&twice));
    assert_eq!(
        conds(&ancestors(&t, "p")[0]),
        vec![
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
            ("Accepted".into(), "True".into(), "Accepted".into())
        ]
    );
}

/// A whole-Service policy and a policy of one of its ports own different targets: both are
/// accepted where they are used.
#[test]
fn a_whole_service_policy_and_a_sectioned_one_do_not_conflict() {
    let other_port =
        crate::backend::tests::mk_route("r2", "app", "gw", &["{name: web, port: 8443}"]);
    let t = translate(&format!(
        "{}---\n{other_port}",
        base(&format!(
            "{}{}",
            policy("whole", None, "ca", "2025-01-01T00:00:00Z"),
            policy("sectioned", Some("https"), "ca", "2025-06-01T00:00:00Z")
        ))
    ));
    for p in ["whole", "sectioned"] {
        let a = ancestors(&t, p);
        assert_eq!(a.len(), 1, "{p}");
        assert_eq!(conds(&a[0])[1].2, "Accepted", "{p}");
    }
}

/// An Envoy Gateway Backend's port is a section by its number; a policy of the whole Backend
/// covers the other ports. Target group and kind must match the backendRef's.
#[test]
fn a_backend_port_is_targeted_by_its_number() {
    let mk = |name: &str, section: &str, created: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: app, creationTimestamp: \"{created}\"}}\nspec:\n  targetRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: be{section}}}]\n  validation: {{hostname: be.example.com, wellKnownCACertificates: System}}\n"
        )
    };
    let t = translate(&base(&format!(
        "{}{}",
        mk("whole", "", "2025-01-01T00:00:00Z"),
        mk("by-port", ", sectionName: \"3001\"", "2025-06-01T00:00:00Z")
    )));
    let attached = |group: &str, section: Option<&str>| {
        let target = TlsTarget {
            group: group.into(),
            kind: "Backend".into(),
            namespace: "app".into(),
            name: "be".into(),
            section: section.map(str::to_string),
        };
        policy_for(&t.index, "c1", &target).map(|p| p.key.name.clone())
    };
    let eg = flotilla_model::EG_GROUP;
    assert_eq!(attached(eg, Some("3001")).as_deref(), Some("by-port"));
    assert_eq!(attached(eg, Some("3002")).as_deref(), Some("whole"));
    assert_eq!(attached(eg, None).as_deref(), Some("whole"));
    assert_eq!(attached("", Some("3001")), None);
}
