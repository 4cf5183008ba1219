use super::*;
use crate::tests::{apply_all, events};
use crate::{EventBody, ResourceEvent, Translator, CONTROLLER_NAME};

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n";

/// A condition as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cond {
    type_: String,
    status: String,
    reason: String,
}

fn cond(type_: &str, ok: bool, reason: &str) -> Cond {
    Cond {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
    }
}

/// One ancestor entry: the Gateway's name, the section, and the conditions (any order).
#[derive(Debug, PartialEq, Eq)]
struct Anc {
    gateway: String,
    section: Option<String>,
    conds: BTreeSet<Cond>,
}

fn anc(gateway: &str, section: Option<&str>, conds: &[Cond]) -> Anc {
    Anc {
        gateway: gateway.into(),
        section: section.map(str::to_string),
        conds: conds.iter().cloned().collect(),
    }
}

fn accepted() -> Cond {
    cond("Accepted", true, "Accepted")
}

fn mk_gateway(name: &str, labels: &str, listeners: &[&str]) -> String {
    let ls: String = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| format!("  - {{name: {l}, port: {}, protocol: HTTP}}\n", 8080 + i))
        .collect();
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: infra, labels: {{{labels}}}}}\nspec:\n  gatewayClassName: eg\n  listeners:\n{ls}")
}

fn mk_policy(kind: &str, name: &str, created: &str, targets: &str) -> String {
    format!("---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: \"{created}\"}}\nspec:\n{targets}\n")
}

fn mk_route(name: &str, parents: &str, rules: &[&str]) -> String {
    let rules: String = rules
        .iter()
        .map(|r| format!("  - {{name: {r}, backendRefs: [{{name: web, port: 80}}]}}\n"))
        .collect();
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRefs: {parents}\n  rules:\n{rules}")
}

fn build(text: &str) -> Translator {
    let mut t = Translator::new();
    apply_all(&mut t, &events("c1", &format!("{CLASS}{text}")));
    t
}

fn key(kind: Kind, name: &str) -> ResourceKey {
    ResourceKey::new("c1", kind, "infra", name)
}

fn ancestors(t: &Translator, kind: Kind, name: &str) -> Vec<Anc> {
    let st = t.status(&key(kind, name)).expect("policy status");
    st["ancestors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| Anc {
            gateway: a["ancestorRef"]["name"].as_str().unwrap().into(),
            section: a["ancestorRef"]["sectionName"].as_str().map(str::to_string),
            conds: a["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| Cond {
                    type_: c["type"].as_str().unwrap().into(),
                    status: c["status"].as_str().unwrap().into(),
                    reason: c["reason"].as_str().unwrap().into(),
                })
                .collect(),
        })
        .collect()
}

fn message(t: &Translator, kind: Kind, name: &str, type_: &str) -> String {
    let st = t.status(&key(kind, name)).expect("policy status");
    st["ancestors"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn ctp_attachment(t: &Translator) -> ctp::CtpAttachment {
    let is_ours = |_: &flotilla_model::gateway::Gateway| true;
    let gws = our_gateways(&t.index, "c1", &is_ours);
    ctp::attach(&t.index, "c1", &gws, CONTROLLER_NAME).attachment
}

fn btp_attachment(t: &Translator) -> btp::BtpAttachment {
    let is_ours = |_: &flotilla_model::gateway::Gateway| true;
    let gws = our_gateways(&t.index, "c1", &is_ours);
    btp::attach(&t.index, "c1", &gws, CONTROLLER_NAME).attachment
}

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-02T00:00:00Z";
const T2: &str = "2024-01-03T00:00:00Z";

fn refs(gw: &str, section: Option<&str>) -> String {
    let s = section
        .map(|s| format!(", sectionName: {s}"))
        .unwrap_or_default();
    format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: {gw}{s}}}]")
}

#[test]
fn ctp_listener_policy_beats_gateway_policy_and_later_ones_conflict() {
    let t = build(&format!(
        "{}{}{}{}{}",
        mk_gateway("gw", "", &["http", "admin"]),
        mk_policy("ClientTrafficPolicy", "wide", T0, &refs("gw", None)),
        mk_policy("ClientTrafficPolicy", "wide-2", T1, &refs("gw", None)),
        mk_policy("ClientTrafficPolicy", "http", T1, &refs("gw", Some("http"))),
        mk_policy(
            "ClientTrafficPolicy",
            "http-2",
            T2,
            &refs("gw", Some("http"))
        ),
    ));
    let k = Kind::ClientTrafficPolicy;
    assert_eq!(
        ancestors(&t, k, "wide"),
        vec![anc(
            "gw",
            None,
            &[accepted(), cond("Overridden", true, "Overridden")]
        )]
    );
    assert_eq!(
        message(&t, k, "wide", "Overridden"),
        "There are existing ClientTrafficPolicies that are overriding these sections [http]"
    );
    assert_eq!(
        ancestors(&t, k, "wide-2"),
        vec![anc("gw", None, &[cond("Accepted", false, "Conflicted")])]
    );
    assert_eq!(
        message(&t, k, "wide-2", "Accepted"),
        "Unable to target Gateway gw, another ClientTrafficPolicy has already attached to it"
    );
    assert_eq!(
        ancestors(&t, k, "http"),
        vec![anc("gw", Some("http"), &[accepted()])]
    );
    assert_eq!(
        ancestors(&t, k, "http-2"),
        vec![anc(
            "gw",
            Some("http"),
            &[cond("Accepted", false, "Conflicted")]
        )]
    );
    let a = ctp_attachment(&t);
    let gw = key(Kind::Gateway, "gw");
    assert_eq!(a.for_listener(&gw, None, "http"), Some(&key(k, "http")));
    assert_eq!(a.for_listener(&gw, None, "admin"), Some(&key(k, "wide")));
}

#[test]
fn ctp_unknown_section_is_target_not_found_and_deprecated_target_ref_warns() {
    let t = build(&format!(
        "{}{}{}",
        mk_gateway("gw", "", &["http"]),
        mk_policy("ClientTrafficPolicy", "bad", T0, &refs("gw", Some("nope"))),
        mk_policy(
            "ClientTrafficPolicy",
            "old-form",
            T0,
            "  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: gw}"
        ),
    ));
    let k = Kind::ClientTrafficPolicy;
    assert_eq!(
        ancestors(&t, k, "bad"),
        vec![anc(
            "gw",
            Some("nope"),
            &[cond("Accepted", false, "TargetNotFound")]
        )]
    );
    assert_eq!(
        message(&t, k, "bad", "Accepted"),
        "No section name nope found for Gateway infra/gw"
    );
    assert_eq!(
        ancestors(&t, k, "old-form"),
        vec![anc(
            "gw",
            None,
            &[accepted(), cond("Warning", true, "DeprecatedField")]
        )]
    );
}

#[test]
fn creation_timestamps_compare_as_times_not_text() {
    // As text "2024-01-01T23:00:00Z" sorts first; as times the +05:00 one is older
    // (2024-01-01T22:00:00Z), and so is first to attach, whatever the names say.
    let t = build(&format!(
        "{}{}{}",
        mk_gateway("gw", "", &["http"]),
        mk_policy(
            "ClientTrafficPolicy",
            "z-older",
            "2024-01-02T03:00:00+05:00",
            &refs("gw", None)
        ),
        mk_policy(
            "ClientTrafficPolicy",
            "a-newer",
            "2024-01-01T23:00:00Z",
            &refs("gw", None)
        ),
    ));
    let k = Kind::ClientTrafficPolicy;
    assert_eq!(
        ancestors(&t, k, "z-older"),
        vec![anc("gw", None, &[accepted()])]
    );
    assert_eq!(
        ancestors(&t, k, "a-newer"),
        vec![anc("gw", None, &[cond("Accepted", false, "Conflicted")])]
    );
    // The brief's pair: 2024-01-02T00:00Z is older than 2024-01-10T00:00+05:00.
    let t = build(&format!(
        "{}{}{}",
        mk_gateway("gw", "", &["http"]),
        mk_policy(
            "ClientTrafficPolicy",
            "b",
            "2024-01-10T00:00:00+05:00",
            &refs("gw", None)
        ),
        mk_policy(
            "ClientTrafficPolicy",
            "c",
            "2024-01-02T00:00:00Z",
            &refs("gw", None)
        ),
    ));
    assert_eq!(
        ctp_attachment(&t).for_listener(&key(Kind::Gateway, "gw"), None, "http"),
        Some(&key(k, "c"))
    );
}

#[test]
fn target_selectors_match_labels_and_expressions_in_the_policy_namespace() {
    let sel = "  targetSelectors:\n  - kind: Gateway\n    matchLabels: {team: a}\n    matchExpressions: [{key: tier, operator: In, values: [edge]}]";
    let t = build(&format!(
        "{}{}{}{}",
        mk_gateway("gw-a", "team: a, tier: edge", &["http"]),
        mk_gateway("gw-b", "team: a, tier: core", &["http"]),
        mk_gateway("gw-c", "team: b, tier: edge", &["http"]),
        mk_policy("ClientTrafficPolicy", "sel", T0, sel),
    ));
    assert_eq!(
        ancestors(&t, Kind::ClientTrafficPolicy, "sel"),
        vec![anc("gw-a", None, &[accepted()])]
    );
}

#[test]
fn btp_most_specific_target_wins_rule_route_listener_gateway() {
    let parents = "[{name: gw}]";
    let t = build(&format!(
        "{}{}{}{}{}{}{}{}",
        mk_gateway("gw", "", &["http", "admin"]),
        mk_route("r1", parents, &["rule-1", "rule-2"]),
        mk_route("r2", "[{name: gw, sectionName: admin}]", &["rule-1"]),
        mk_policy("BackendTrafficPolicy", "gw-wide", T0, &refs("gw", None)),
        mk_policy("BackendTrafficPolicy", "listener", T0, &refs("gw", Some("http"))),
        mk_policy(
            "BackendTrafficPolicy",
            "route",
            T0,
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r1}]"
        ),
        mk_policy(
            "BackendTrafficPolicy",
            "rule",
            T0,
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r1, sectionName: rule-1}]"
        ),
        mk_policy(
            "BackendTrafficPolicy",
            "rule-again",
            T1,
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r1, sectionName: rule-1}]"
        ),
    ));
    let k = Kind::BackendTrafficPolicy;
    let overridden = cond("Overridden", true, "Overridden");
    assert_eq!(
        ancestors(&t, k, "rule"),
        vec![anc("gw", None, &[accepted()])]
    );
    assert_eq!(
        ancestors(&t, k, "rule-again"),
        vec![anc("gw", None, &[cond("Accepted", false, "Conflicted")])]
    );
    assert_eq!(
        ancestors(&t, k, "route"),
        vec![anc("gw", None, &[accepted(), overridden.clone()])]
    );
    assert_eq!(
        message(&t, k, "route", "Overridden"),
        "This policy is being overridden by other backendTrafficPolicy for these route rules: [rule-1]"
    );
    assert_eq!(
        message(&t, k, "gw-wide", "Overridden"),
        "This policy is being overridden by other backendTrafficPolicies for these gateway listeners: [infra/gw/http] and these routes: [infra/r1]"
    );
    let a = btp_attachment(&t);
    let (gw, r1, r2) = (
        key(Kind::Gateway, "gw"),
        key(Kind::HTTPRoute, "r1"),
        key(Kind::HTTPRoute, "r2"),
    );
    assert_eq!(
        a.for_route_rule(&r1, Some("rule-1"), &gw, None, "http"),
        Some(&key(k, "rule"))
    );
    assert_eq!(
        a.for_route_rule(&r1, Some("rule-2"), &gw, None, "http"),
        Some(&key(k, "route"))
    );
    assert_eq!(
        a.for_route_rule(&r2, Some("rule-1"), &gw, None, "http"),
        Some(&key(k, "listener"))
    );
    assert_eq!(
        a.for_route_rule(&r2, None, &gw, None, "admin"),
        Some(&key(k, "gw-wide"))
    );
}

#[test]
fn ancestors_past_sixteen_are_truncated_with_an_aggregated_condition() {
    let gws: String = (0..17)
        .map(|i| mk_gateway(&format!("gw-{i:02}"), "", &["http"]))
        .collect();
    let targets: String = (0..17)
        .map(|i| format!("{{group: gateway.networking.k8s.io, kind: Gateway, name: gw-{i:02}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let t = build(&format!(
        "{gws}{}",
        mk_policy(
            "ClientTrafficPolicy",
            "many",
            T0,
            &format!("  targetRefs: [{targets}]")
        )
    ));
    let a = ancestors(&t, Kind::ClientTrafficPolicy, "many");
    assert_eq!(a.len(), status::MAX_ANCESTORS);
    assert_eq!(a[0], anc("gw-00", None, &[accepted()]));
    assert_eq!(
        a[15],
        anc(
            "gw-15",
            None,
            &[accepted(), cond("Aggregated", true, "Aggregated")]
        )
    );
}

#[test]
fn a_policy_added_or_deleted_later_updates_its_status_and_a_new_gateway_picks_it_up() {
    let mut t = build(&mk_policy(
        "ClientTrafficPolicy",
        "p",
        T0,
        &refs("gw", None),
    ));
    assert_eq!(ancestors(&t, Kind::ClientTrafficPolicy, "p"), vec![]);
    let changes = apply_all(&mut t, &events("c1", &mk_gateway("gw", "", &["http"])));
    assert!(changes
        .status_changed
        .contains(&key(Kind::ClientTrafficPolicy, "p")));
    assert_eq!(
        ancestors(&t, Kind::ClientTrafficPolicy, "p"),
        vec![anc("gw", None, &[accepted()])]
    );
    let del = ResourceEvent {
        cluster: "c1".into(),
        source: "test".into(),
        body: EventBody::Delete {
            key: key(Kind::ClientTrafficPolicy, "p"),
        },
    };
    apply_all(&mut t, &[del]);
    assert!(t.status(&key(Kind::ClientTrafficPolicy, "p")).is_none());
}

#[test]
fn a_bad_duration_is_invalid_but_still_holds_its_target() {
    let bad = format!(
        "{}\n  timeout: {{http: {{requestReceivedTimeout: 5sec}}}}",
        refs("gw", None)
    );
    let t = build(&format!(
        "{}{}{}",
        mk_gateway("gw", "", &["http"]),
        mk_policy("ClientTrafficPolicy", "bad", T0, &bad),
        mk_policy("ClientTrafficPolicy", "later", T1, &refs("gw", None)),
    ));
    let k = Kind::ClientTrafficPolicy;
    assert_eq!(
        ancestors(&t, k, "bad"),
        vec![anc("gw", None, &[cond("Accepted", false, "Invalid")])]
    );
    assert_eq!(
        message(&t, k, "bad", "Accepted"),
        "Timeout: invalid HTTP RequestReceivedTimeout value 5sec."
    );
    assert_eq!(
        ancestors(&t, k, "later"),
        vec![anc("gw", None, &[cond("Accepted", false, "Conflicted")])]
    );
}

#[test]
fn a_policy_change_marks_only_the_gateways_of_its_targets() {
    let mut t = build(&format!(
        "{}{}{}",
        mk_gateway("gw-a", "", &["http"]),
        mk_gateway("gw-b", "", &["http"]),
        mk_route("r", "[{name: gw-b}]", &["rule-1"]),
    ));
    let route_ref = "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]";
    for e in events(
        "c1",
        &format!(
            "{}{}",
            mk_policy("ClientTrafficPolicy", "c", T0, &refs("gw-a", None)),
            mk_policy("BackendTrafficPolicy", "b", T0, route_ref)
        ),
    ) {
        t.apply(&e).unwrap();
    }
    // The gateway policy marks its gateway whole; the route policy, its route on its gateway.
    let dirty: Vec<&str> = t.dirty.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(dirty, vec!["gw-a"]);
    let routes: Vec<(&str, Vec<&str>)> = t
        .dirty_routes
        .iter()
        .map(|(gw, rs)| {
            (
                gw.name.as_str(),
                rs.iter().map(|r| r.name.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(routes, vec![("gw-b", vec!["r"])]);
    t.recompute();
    assert!(t.dirty_routes.is_empty());
    assert!(t.dirty.is_empty());
    // A selector may match any gateway: every gateway of the cluster.
    let sel = "  targetSelectors: [{kind: Gateway, matchLabels: {x: y}}]";
    for e in events("c1", &mk_policy("ClientTrafficPolicy", "s", T0, sel)) {
        t.apply(&e).unwrap();
    }
    assert_eq!(t.dirty.len(), 2);
}

fn mk_set(name: &str, gw: &str, listeners: &[(&str, u16)]) -> String {
    let ls: String = listeners
        .iter()
        .map(|(l, port)| format!("  - {{name: {l}, port: {port}, protocol: HTTP}}\n"))
        .collect();
    format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRef: {{name: {gw}}}\n  listeners:\n{ls}")
}

#[test]
fn ctp_listener_set_policies_beat_the_gateway_wide_one_on_their_listeners() {
    let gw = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: eg\n  allowedListeners: {namespaces: {from: Same}}\n  listeners:\n  - {name: core, port: 80, protocol: HTTP}\n";
    let ls_ref = |section: &str| {
        format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: ListenerSet, name: ext{section}}}]")
    };
    let t = build(&format!(
        "{gw}{}{}{}{}",
        mk_set("ext", "gw", &[("a", 8081), ("b", 8082)]),
        mk_policy("ClientTrafficPolicy", "gw-wide", T0, &refs("gw", None)),
        mk_policy("ClientTrafficPolicy", "set-wide", T1, &ls_ref("")),
        mk_policy(
            "ClientTrafficPolicy",
            "set-a",
            T2,
            &ls_ref(", sectionName: a")
        ),
    ));
    let k = Kind::ClientTrafficPolicy;
    assert_eq!(
        message(&t, k, "gw-wide", "Overridden"),
        "There are existing ClientTrafficPolicies that are overriding these sections [a b]"
    );
    assert_eq!(
        message(&t, k, "set-wide", "Overridden"),
        "There are existing ClientTrafficPolicies that are overriding these sections [a]"
    );
    assert_eq!(
        ancestors(&t, k, "set-a")
            .into_iter()
            .map(|a| (a.gateway, a.section, a.conds))
            .collect::<Vec<_>>(),
        vec![(
            "ext".to_string(),
            Some("a".to_string()),
            [accepted()].into_iter().collect()
        )]
    );
    let a = ctp_attachment(&t);
    let (gwk, set) = (key(Kind::Gateway, "gw"), key(Kind::ListenerSet, "ext"));
    assert_eq!(
        a.for_listener(&gwk, Some(&set), "a"),
        Some(&key(k, "set-a"))
    );
    assert_eq!(
        a.for_listener(&gwk, Some(&set), "b"),
        Some(&key(k, "set-wide"))
    );
    assert_eq!(a.for_listener(&gwk, None, "core"), Some(&key(k, "gw-wide")));
}

#[test]
fn ctp_on_one_of_two_plain_http_listeners_sharing_a_port_is_invalid() {
    let gw = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: eg\n  listeners:\n  - {name: a, port: 80, protocol: HTTP, hostname: a.example}\n  - {name: b, port: 80, protocol: HTTP, hostname: b.example}\n";
    let t = build(&format!(
        "{gw}{}{}",
        mk_policy("ClientTrafficPolicy", "on-a", T0, &refs("gw", Some("a"))),
        mk_policy("ClientTrafficPolicy", "wide", T0, &refs("gw", None)),
    ));
    let k = Kind::ClientTrafficPolicy;
    assert_eq!(
        ancestors(&t, k, "on-a"),
        vec![anc("gw", Some("a"), &[cond("Accepted", false, "Invalid")])]
    );
    assert_eq!(
        message(&t, k, "on-a", "Accepted"),
        "ClientTrafficPolicy is being applied to multiple http (non https) listeners (infra/gw/b) on the same port, which is not allowed."
    );
    // The whole Gateway may cover both: they are its own.
    assert_eq!(
        ancestors(&t, k, "wide"),
        vec![anc(
            "gw",
            None,
            &[accepted(), cond("Overridden", true, "Overridden")]
        )]
    );
}

#[test]
fn btp_on_a_listener_set_sits_between_routes_and_the_gateway() {
    let gw = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: eg\n  allowedListeners: {namespaces: {from: Same}}\n  listeners:\n  - {name: core, port: 80, protocol: HTTP}\n";
    let ls_ref = |section: &str| {
        format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: ListenerSet, name: ext{section}}}]")
    };
    let t = build(&format!(
        "{gw}{}{}{}{}{}",
        mk_set("ext", "gw", &[("a", 8081), ("b", 8082)]),
        mk_route("on-set", "[{kind: ListenerSet, name: ext}]", &["rule-1"]),
        mk_policy("BackendTrafficPolicy", "gw-wide", T0, &refs("gw", None)),
        mk_policy("BackendTrafficPolicy", "set-wide", T0, &ls_ref("")),
        mk_policy(
            "BackendTrafficPolicy",
            "set-a",
            T0,
            &ls_ref(", sectionName: a")
        ),
    ));
    let k = Kind::BackendTrafficPolicy;
    assert_eq!(
        message(&t, k, "gw-wide", "Overridden"),
        "This policy is being overridden by other backendTrafficPolicies for these listenersets: [infra/ext] and these listenerset listeners: [infra/ext/a]"
    );
    assert_eq!(
        message(&t, k, "set-wide", "Overridden"),
        "This policy is being overridden by other backendTrafficPolicies for these listenerset listeners: [infra/ext/a]"
    );
    let a = btp_attachment(&t);
    let (gwk, set, r) = (
        key(Kind::Gateway, "gw"),
        key(Kind::ListenerSet, "ext"),
        key(Kind::HTTPRoute, "on-set"),
    );
    assert_eq!(
        a.for_route_rule(&r, None, &gwk, Some(&set), "a"),
        Some(&key(k, "set-a"))
    );
    assert_eq!(
        a.for_route_rule(&r, None, &gwk, Some(&set), "b"),
        Some(&key(k, "set-wide"))
    );
    assert_eq!(
        a.for_route_rule(&r, None, &gwk, None, "core"),
        Some(&key(k, "gw-wide"))
    );
}

#[test]
fn field_errors_read_as_envoy_gateway_writes_them() {
    let spec: Value = serde_json::json!({
        "http2": {"initialStreamWindowSize": "1Ki", "initialConnectionWindowSize": "64Ki"},
        "headers": {"maxRequestHeaderLimit": "512"},
    });
    assert_eq!(
        client::invalid(&spec).as_deref(),
        Some("Headers: MaxRequestHeaderLimit value 512 must be at least 1Ki\nHTTP2: InitialStreamWindowSize value 1Ki is out of range, must be between 65535 and 2147483647.")
    );
    let spec: Value = serde_json::json!({
        "loadBalancer": {"consistentHash": {"tableSize": 1024}},
        "retry": {"perRetry": {"backoff": {"baseInterval": "2s", "maxInterval": "1s"}}},
    });
    assert_eq!(
        btp::invalid(&spec, &Default::default()).as_deref(),
        Some("LoadBalancer: ConsistentHash: invalid TableSize value 1024\nRetry: maxInterval cannot be less than baseInterval.")
    );
    let ok: Value = serde_json::json!({"loadBalancer": {"consistentHash": {"tableSize": 65537}}});
    assert_eq!(btp::invalid(&ok, &Default::default()), None);
}
