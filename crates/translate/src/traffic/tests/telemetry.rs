//! Telemetry (tracing, the route stat name) and admission control on the rule's routes.

use super::*;

#[test]
fn tracing_sets_the_route_sampling_and_tags() {
    use envoy_types::pb::envoy::r#type::tracing::v3::custom_tag;
    let t = translate(&[
        policy(
            "fraction",
            Some("a"),
            "  telemetry:
    tracing:
      samplingFraction: {numerator: 1, denominator: 1000}
      customTags:
        literal1: {type: Literal, literal: {value: value1}}
        env1: {type: Environment, environment: {name: POD, defaultValue: '-'}}
        req1: {type: RequestHeader, requestHeader: {name: X-Request-Id}}
        both: {literal: {value: from-custom-tags}}
      tags:
        both: '%REQUEST_HEADER(x-tenant)%'",
        ),
        policy(
            "rate",
            Some("b"),
            "  telemetry: {tracing: {samplingRate: 25}}",
        ),
    ]);
    assert_eq!(accepted(&t, "fraction").0, "True");
    let a = route_named(&t, "/a").tracing.expect("route tracing");
    let sampling = a.random_sampling.unwrap();
    assert_eq!(
        (sampling.numerator, sampling.denominator),
        (1_000, 2),
        "1/1000 in millionths"
    );
    let tags: Vec<(String, custom_tag::Type)> = a
        .custom_tags
        .into_iter()
        .map(|c| (c.tag, c.r#type.unwrap()))
        .collect();
    assert_eq!(
        tags,
        vec![
            (
                "both".into(),
                custom_tag::Type::Value("%REQUEST_HEADER(x-tenant)%".into())
            ),
            (
                "env1".into(),
                custom_tag::Type::Environment(custom_tag::Environment {
                    name: "POD".into(),
                    default_value: "-".into()
                })
            ),
            (
                "literal1".into(),
                custom_tag::Type::Literal(custom_tag::Literal {
                    value: "value1".into()
                })
            ),
            (
                "req1".into(),
                custom_tag::Type::RequestHeader(custom_tag::Header {
                    name: "X-Request-Id".into(),
                    default_value: String::new()
                })
            ),
        ]
    );
    let b = route_named(&t, "/b").tracing.expect("route tracing");
    assert_eq!(b.random_sampling.unwrap().numerator, 250_000);
    assert!(b.custom_tags.is_empty());
    assert!(route_named(&t, "/c").tracing.is_none());
    validate(&t);
}

#[test]
fn tracing_values_envoy_gateway_refuses_are_refused_in_status() {
    for (spec, want) in [
        (
            "{customTags: {m: {type: Metadata, metadata: {kind: {route: {}}, metadataKey: {key: k, path: [{key: x}]}}}}}",
            "Telemetry: unknown custom tag type: Metadata.",
        ),
        (
            "{customTags: {l: {type: Literal}}}",
            "Telemetry: custom tag l of type Literal is missing its settings.",
        ),
        (
            "{samplingFraction: {numerator: 3, denominator: 2}}",
            "Telemetry: invalid samplingFraction {\"denominator\":2,\"numerator\":3}: the numerator must be at most a denominator above zero.",
        ),
        (
            "{samplingRate: 10, samplingFraction: {numerator: 1}}",
            "Telemetry: only one of samplingRate or samplingFraction can be specified.",
        ),
    ] {
        let t = translate(&[policy(
            "p",
            Some("a"),
            &format!("  telemetry: {{tracing: {spec}}}"),
        )]);
        let (status, reason, message) = accepted(&t, "p");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"), "{spec}");
        assert_eq!(message, want, "{spec}");
    }
}

/// The admission control settings a route's per-route matcher runs.
fn admission_of(
    r: &Route,
) -> envoy_types::pb::envoy::extensions::filters::http::admission_control::v3::AdmissionControl {
    use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcherPerRoute;
    use envoy_types::pb::envoy::extensions::filters::http::composite::v3::ExecuteFilterAction;
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::on_match::OnMatch;
    let cfg = &r.typed_per_filter_config["envoy.filters.http.admission_control"];
    let m = ExtensionWithMatcherPerRoute::decode(cfg.value.as_slice()).unwrap();
    let on = m.xds_matcher.unwrap().on_no_match.unwrap();
    let Some(OnMatch::Action(a)) = on.on_match else {
        panic!("an action")
    };
    let exec = ExecuteFilterAction::decode(a.typed_config.unwrap().value.as_slice()).unwrap();
    let tc = exec.typed_config.unwrap();
    assert_eq!(tc.name, "envoy.filters.http.admission_control");
    prost::Message::decode(tc.typed_config.unwrap().value.as_slice()).unwrap()
}

#[test]
fn admission_control_runs_per_route_through_the_composite_filter() {
    use envoy_types::pb::envoy::extensions::filters::http::admission_control::v3::admission_control::EvaluationCriteria;
    let t = translate(&[
        policy(
            "grpc",
            Some("a"),
            "  admissionControl:
    samplingWindow: 60s
    minSuccessRate: 90
    rejectionAggression: 2
    minRequestRate: 10
    maxRejectionPercent: 70
    successCriteria: {grpc: {statusCodes: [Ok, Cancelled, DeadlineExceeded]}}",
        ),
        policy(
            "http",
            Some("b"),
            "  admissionControl:
    samplingWindow: 30s
    successCriteria: {http: {statusCodes: [200, 201, 204]}}",
        ),
        policy("defaults", Some("c"), "  admissionControl: {}"),
    ]);
    for p in ["grpc", "http", "defaults"] {
        assert_eq!(accepted(&t, p).0, "True", "{p}");
    }
    let a = admission_of(&route_named(&t, "/a"));
    assert_eq!(a.sampling_window.unwrap().seconds, 60);
    assert_eq!(a.sr_threshold.unwrap().default_value.unwrap().value, 90.0);
    assert_eq!(a.aggression.unwrap().default_value, 2.0);
    assert_eq!(a.rps_threshold.unwrap().default_value, 10);
    assert_eq!(
        a.max_rejection_probability
            .unwrap()
            .default_value
            .unwrap()
            .value,
        70.0
    );
    let Some(EvaluationCriteria::SuccessCriteria(sc)) = a.evaluation_criteria else {
        panic!("success criteria")
    };
    assert_eq!(sc.grpc_criteria.unwrap().grpc_success_status, vec![0, 1, 4]);
    assert!(sc.http_criteria.is_none());
    let b = admission_of(&route_named(&t, "/b"));
    let Some(EvaluationCriteria::SuccessCriteria(sc)) = b.evaluation_criteria else {
        panic!("success criteria")
    };
    let ranges: Vec<(i32, i32)> = sc
        .http_criteria
        .unwrap()
        .http_success_status
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(ranges, vec![(200, 201), (201, 202), (204, 205)]);
    // Unset: Envoy's defaults, with the criteria Envoy requires.
    let c = admission_of(&route_named(&t, "/c"));
    assert!(c.sampling_window.is_none() && c.sr_threshold.is_none());
    assert!(c.evaluation_criteria.is_some());
    validate(&t);
}

#[test]
fn admission_control_values_envoy_refuses_are_refused_in_status() {
    for (spec, want) in [
        (
            "{samplingWindow: 500ms}",
            "AdmissionControl: samplingWindow must be at least 1s.",
        ),
        (
            "{minSuccessRate: 0}",
            "AdmissionControl: minSuccessRate must be between 1 and 100.",
        ),
        (
            "{maxRejectionPercent: 101}",
            "AdmissionControl: maxRejectionPercent must be between 0 and 100.",
        ),
        (
            "{successCriteria: {grpc: {statusCodes: [OK]}}}",
            "AdmissionControl: unknown gRPC status code \"OK\".",
        ),
        (
            "{successCriteria: {http: {statusCodes: [600]}}}",
            "AdmissionControl: invalid HTTP status code 600.",
        ),
    ] {
        let t = translate(&[policy(
            "p",
            Some("a"),
            &format!("  admissionControl: {spec}"),
        )]);
        let (status, _, message) = accepted(&t, "p");
        assert_eq!(status, "False", "{spec}");
        assert_eq!(message, want, "{spec}");
    }
}

/// `telemetry.metrics.routeStatName`: each route of the policy takes the template, with the
/// route's kind, namespace, name and rule name (`-` for an unnamed rule) in place of the
/// operators, as its `stat_prefix`; a route without the policy keeps none. Envoy accepts it.
#[test]
fn route_stat_name_becomes_the_routes_stat_prefix() {
    let template = "%ROUTE_KIND%/%ROUTE_NAMESPACE%/%ROUTE_NAME%/rule/%ROUTE_RULE_NAME%";
    let metrics = format!("  telemetry: {{metrics: {{routeStatName: '{template}'}}}}");
    let unnamed = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: u, namespace: app}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /u}}}}]
    backendRefs: [{{name: web, port: 80}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: pu, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: u}}]
{metrics}
"
    );
    let t = translate(&[policy("p", Some("a"), &metrics), unnamed]);
    assert_eq!(accepted(&t, "p").0, "True");
    assert_eq!(route_named(&t, "/a").stat_prefix, "HTTPRoute/app/r/rule/a");
    assert_eq!(route_named(&t, "/u").stat_prefix, "HTTPRoute/app/u/rule/-");
    assert_eq!(route_named(&t, "/b").stat_prefix, "");
    validate(&t);
}

/// An operator Envoy Gateway does not replace is refused in status (and the rule answers 500).
#[test]
fn a_route_stat_name_with_an_unknown_operator_is_refused_in_status() {
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  telemetry: {metrics: {routeStatName: '%ROUTE_NAME%.%ROUTE_RULE_NUMBER%/%FOO%'}}",
    )]);
    let (status, reason, message) = accepted(&t, "p");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
    assert_eq!(
        message,
        "Telemetry: unable to configure Route Stat Name with unsupported operator: \
         %ROUTE_RULE_NUMBER%\nunable to configure Route Stat Name with unsupported operator: \
         %FOO%."
    );
    match route_named(&t, "/a").action {
        Some(route::Action::DirectResponse(d)) => assert_eq!(d.status, 500),
        other => panic!("{other:?}"),
    }
    // Without operators, the name is taken as it is.
    let t = translate(&[policy(
        "p",
        Some("a"),
        "  telemetry: {metrics: {routeStatName: checkout}}",
    )]);
    assert_eq!(route_named(&t, "/a").stat_prefix, "checkout");
}
