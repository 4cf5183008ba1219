use super::*;

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: svc, port: 80, weight: 3}]
"#;

#[test]
fn parses_route_with_default_namespace() {
    let (rs, errs) = parse_documents("a.yaml", ROUTE, "east");
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rs.len(), 1);
    assert_eq!(
        rs[0].key,
        ResourceKey::new("east", Kind::HTTPRoute, "default", "web")
    );
    assert_eq!(rs[0].raw["metadata"]["namespace"], "default");
    let Object::HTTPRoute(r) = &rs[0].object else {
        panic!("not a route")
    };
    assert_eq!(r.spec.rules[0].backend_refs[0].weight, Some(3));
}

#[test]
fn bad_document_does_not_hide_the_others() {
    let text = format!(
        "{ROUTE}\n---\napiVersion: v1\nkind: Frobnicator\nmetadata: {{name: x}}\n---\n{}",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n}\nspec:\n  gatewayClassName: c\n  listeners: [{name: http, port: notanumber, protocol: HTTP}]\n"
    );
    let (rs, errs) = parse_documents("dir/b.yaml", &text, "east");
    assert_eq!(rs.len(), 1);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].document, Some(1));
    assert!(
        errs[0].message.contains("unknown kind \"Frobnicator\""),
        "{}",
        errs[0]
    );
    assert_eq!(errs[1].document, Some(2));
    assert_eq!(errs[1].kind.as_deref(), Some("Gateway"));
    assert_eq!(errs[1].name.as_deref(), Some("n/g"));
    assert_eq!(errs[1].field.as_deref(), Some("spec.listeners[0].port"));
    let shown = errs[1].to_string();
    assert!(
        shown.starts_with("dir/b.yaml: document 2 (Gateway n/g)"),
        "{shown}"
    );
}

#[test]
fn malformed_yaml_is_an_error_not_a_panic() {
    let (rs, errs) = parse_documents("c.yaml", "kind: [unclosed\n  - : :", "east");
    assert!(rs.is_empty());
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.starts_with("invalid YAML"), "{}", errs[0]);
}

#[test]
fn wrong_group_and_missing_name_are_rejected() {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Gateway", "metadata": {"name": "g"}, "spec": {"gatewayClassName": "c"}});
    let e = parse_object("c", v).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("apiVersion"));
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {}});
    let e = parse_object("c", v).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("metadata.name"));
}

#[test]
fn huge_object_is_rejected() {
    let big = "x".repeat(MAX_OBJECT_BYTES + 1);
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": big}});
    let e = parse_object("c", v).unwrap_err();
    assert!(e.message.contains("over the limit"), "{e}");
}

#[test]
fn cluster_scoped_kinds_have_no_namespace() {
    let v = serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "eg"}, "spec": {"controllerName": "x"}});
    let r = parse_object("c", v).unwrap();
    assert_eq!(r.key.namespace, "");
}
