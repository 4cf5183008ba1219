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

// ---- duplicate keys ----

#[test]
fn repeated_key_refuses_the_document_and_names_key_and_field() {
    // A later `rules: []` would silently drop every rule if the last key won.
    let dup = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: svc, port: 80}]
  rules: []
";
    let text = format!("{dup}---\n{ROUTE}");
    let (rs, errs) = parse_documents("a.yaml", &text, "east");
    // The next document is still read.
    assert_eq!(rs.len(), 1, "{errs:?}");
    assert_eq!(rs[0].key.name, "web");
    assert_eq!(rs[0].key.namespace, "default");
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert_eq!(e.document, Some(0));
    assert_eq!(e.kind.as_deref(), Some("HTTPRoute"));
    assert_eq!(e.name.as_deref(), Some("apps/web"));
    assert_eq!(e.field.as_deref(), Some("spec.rules"));
    assert!(e.message.contains("duplicate key \"rules\""), "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with("a.yaml: document 0 (HTTPRoute apps/web): field spec.rules: duplicate key \"rules\" (in the mapping at line 5, column 3)"),
        "{shown}"
    );
}

#[test]
fn repeated_key_in_a_list_item_and_at_the_top() {
    let text = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gw, name: other}]
---
kind: Service
apiVersion: v1
kind: Service
metadata: {name: s}
";
    let (rs, errs) = parse_documents("a.yaml", text, "east");
    assert!(rs.is_empty());
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].field.as_deref(), Some("spec.parentRefs[0].name"));
    assert_eq!(errs[0].name.as_deref(), Some("web"));
    assert_eq!(errs[1].document, Some(1));
    assert_eq!(errs[1].field.as_deref(), Some("kind"));
    // Found before metadata was read: only the kind is known.
    assert_eq!(errs[1].kind.as_deref(), Some("Service"));
    assert_eq!(errs[1].name, None);
}

#[test]
fn documents_still_parse_like_serde_json_values() {
    // Scalars keep the types serde_json gives them; equal keys in different mappings are fine.
    let text = "apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: ns, labels: {name: x}}
data: {a: '1'}
extra: {int: -3, big: 18446744073709551615, float: 1.5, nan: .nan, yes: true, none: null, list: [1, [2]], '1': one}
";
    let (rs, errs) = parse_documents("a.yaml", text, "east");
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        rs[0].raw["extra"],
        serde_json::json!({"int": -3, "big": 18446744073709551615u64, "float": 1.5, "nan": null,
            "yes": true, "none": null, "list": [1, [2]], "1": "one"})
    );
}

// ---- byte order mark ----

#[test]
fn byte_order_mark_is_skipped() {
    let text = format!("\u{feff}{}", ROUTE.trim_start());
    let (rs, errs) = parse_documents("bom.yaml", &text, "east");
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].key.name, "web");
}

// ---- names ----

fn gateway(namespace: &str, name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace}, "spec": {"gatewayClassName": "c"}})
}

#[test]
fn names_that_would_collide_in_a_key_are_refused() {
    // `ns` + `a/b` and `ns/a` + `b` would both be the key east/Gateway/ns/a/b.
    let e = parse_object("east", gateway("ns", "a/b")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("metadata.name"));
    assert!(e.message.contains("invalid metadata.name \"a/b\""), "{e}");
    assert!(e.message.contains("DNS-1123 subdomain"), "{e}");
    let e = parse_object("east", gateway("ns/a", "b")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("metadata.namespace"));
    assert!(
        e.message.contains("invalid metadata.namespace \"ns/a\""),
        "{e}"
    );
    assert!(e.message.contains("DNS-1123 label"), "{e}");
}

#[test]
fn name_and_namespace_rules() {
    let long_part = "a".repeat(100);
    let ok_names = [
        "a",
        "0",
        "web-1",
        "example.com",
        "a.b-c.d",
        long_part.as_str(), // a subdomain's parts are not limited to 63
    ];
    for name in ok_names {
        assert!(parse_object("east", gateway("ns", name)).is_ok(), "{name}");
    }
    let max = format!("{}.{}", "a".repeat(126), "b".repeat(126));
    assert_eq!(max.len(), 253);
    assert!(parse_object("east", gateway("ns", &max)).is_ok());
    let too_long = format!("{max}c");
    for name in [
        "Web", "-a", "a-", "a..b", "a.-b", "a_b", "a b", ".a", "a.", "é", &too_long,
    ] {
        let e = parse_object("east", gateway("ns", name)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("metadata.name"), "{name}: {e}");
    }
    let ns63 = "n".repeat(63);
    assert!(parse_object("east", gateway(&ns63, "g")).is_ok());
    for ns in ["a.b", "Ns", "-n", &"n".repeat(64)] {
        let e = parse_object("east", gateway(ns, "g")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("metadata.namespace"), "{ns}: {e}");
    }
    // A missing or empty namespace still defaults.
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": ""}});
    assert_eq!(parse_object("east", v).unwrap().key.namespace, "default");
}

#[test]
fn kinds_with_their_own_name_rules() {
    // A Namespace name is a namespace: a label.
    let ns = |name: &str| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    assert!(parse_object("east", ns("apps")).is_ok());
    let e = parse_object("east", ns("a.b")).unwrap_err();
    assert!(e.message.contains("DNS-1123 label"), "{e}");
    // A ClusterTrustBundle of a signer is named after it, with ':' (Kubernetes accepts this).
    let ctb = |name: &str, signer: Option<&str>| {
        let mut v = serde_json::json!({"apiVersion": "certificates.k8s.io/v1beta1",
            "kind": "ClusterTrustBundle", "metadata": {"name": name},
            "spec": {"trustBundle": "x"}});
        if let Some(s) = signer {
            v["spec"]["signerName"] = s.into();
        }
        v
    };
    assert!(parse_object(
        "east",
        ctb("example.com:signer:roots", Some("example.com/signer"))
    )
    .is_ok());
    assert!(parse_object("east", ctb("roots", None)).is_ok());
    let e = parse_object("east", ctb("roots", Some("example.com/signer"))).unwrap_err();
    assert!(e.message.contains("prefix \"example.com:signer:\""), "{e}");
    let e = parse_object(
        "east",
        ctb("example.com:signer:Roots", Some("example.com/signer")),
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("metadata.name"));
    assert!(parse_object("east", ctb("a:b", None)).is_err());
}

// ---- nesting depth ----

/// A ConfigMap `depth` levels deep in total: the top mapping, then lists under `extra`.
fn nested_configmap(depth: usize) -> serde_json::Value {
    let mut extra = serde_json::json!(1);
    for _ in 1..depth {
        extra = serde_json::Value::Array(vec![extra]);
    }
    let mut v = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "deep", "namespace": "ns"}});
    // Moved in: `json!` would copy it through `to_value`, recursively.
    v["extra"] = extra;
    v
}

#[test]
fn depth_limit_is_exact() {
    let r = parse_object("east", nested_configmap(MAX_OBJECT_DEPTH));
    assert!(r.is_ok(), "{:?}", r.err());
    let e = parse_object("east", nested_configmap(MAX_OBJECT_DEPTH + 1)).unwrap_err();
    assert_eq!(e.kind.as_deref(), Some("ConfigMap"));
    assert_eq!(e.name.as_deref(), Some("ns/deep"));
    assert!(e.message.contains("nested deeper than 64"), "{e}");
    // The path leads to the list that is one level too deep.
    let field = e.field.unwrap_or_default();
    assert_eq!(
        field,
        format!("extra{}", "[0]".repeat(MAX_OBJECT_DEPTH - 1))
    );
    // Mappings count as much as lists.
    let mut v = serde_json::json!(1);
    for _ in 0..=MAX_OBJECT_DEPTH {
        v = serde_json::Value::Object([("a".to_string(), v)].into_iter().collect());
    }
    v["apiVersion"] = "v1".into();
    v["kind"] = "ConfigMap".into();
    v["metadata"] = serde_json::json!({"name": "m"});
    assert!(parse_object("east", v).is_err());
}

#[test]
fn the_configmap_that_killed_the_store_is_refused_by_the_agent() {
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep, namespace: ns}}\nextra: {}{}\n",
        "[".repeat(122),
        "]".repeat(122)
    );
    let (rs, errs) = parse_documents("deep.yaml", &text, "east");
    assert!(rs.is_empty());
    assert_eq!(errs.len(), 1, "{errs:?}");
    let shown = errs[0].to_string();
    assert!(
        shown.starts_with("deep.yaml: document 0 (ConfigMap ns/deep): field extra[0]"),
        "{shown}"
    );
    assert!(
        shown.ends_with("object nested deeper than 64 levels of mappings and lists"),
        "{shown}"
    );
}

#[test]
fn absurd_depth_is_refused_without_overflowing_the_stack() {
    // From YAML: the YAML deserializer's own recursion limit stops it.
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nextra: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let (rs, errs) = parse_documents("deep.yaml", &text, "east");
    assert!(rs.is_empty());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].message.contains("recursion limit"), "{}", errs[0]);
    // Built in memory (no decoder limit applies): refused, and dropped, iteratively. Deep
    // enough that a recursive walk, serialization or drop would overflow a test thread's stack.
    let e = parse_object("east", nested_configmap(1_000_000)).unwrap_err();
    assert!(e.message.contains("nested deeper than 64"), "{e}");
}

// ---- aliases ----

/// "Billion laughs": `a0` is a list of `width` one-letter scalars, each next anchor a list of
/// `fan` aliases of the one before.
fn alias_bomb(levels: usize, fan: usize, width: usize) -> String {
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\nlol:\n");
    text += &format!("  a0: &a0 [{}]\n", vec!["x"; width].join(","));
    for l in 1..levels {
        text += &format!(
            "  a{l}: &a{l} [{}]\n",
            vec![format!("*a{}", l - 1); fan].join(",")
        );
    }
    text
}

#[test]
fn alias_bomb_is_refused_while_read() {
    // Expands to 118 MB of JSON: before the size budget, 2 GB of memory and a minute of CPU
    // (debug build) went into building it, only to be refused as too large afterwards.
    let bomb = alias_bomb(6, 7, 1500);
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let text = format!("{bomb}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: after}}\n");
    let (rs, errs) = parse_documents("lol.yaml", &text, "east");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].document, Some(0));
    assert_eq!(
        errs[0].message,
        format!(
            "document is larger than the limit of {MAX_OBJECT_BYTES} bytes (as JSON) once its \
             YAML aliases are expanded"
        )
    );
    // The document was read whole: the next one is not lost.
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].key.name, "after");
}

#[test]
fn aliases_within_the_limit_still_expand() {
    let (rs, errs) = parse_documents("lol.yaml", &alias_bomb(3, 10, 100), "east");
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(rs[0].raw["lol"]["a2"][9][9][99], "x");
    // An object just under the limit, through aliases: the budget charges no more than the
    // JSON weighs.
    let scalar = "x".repeat(MAX_OBJECT_BYTES / 4 - 100);
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{a: &s {scalar}, b: *s, c: *s, d: *s}}\n"
    );
    let (rs, errs) = parse_documents("big.yaml", &text, "east");
    assert!(errs.is_empty(), "{errs:?}");
    let size = serde_json::to_vec(&rs[0].raw).map(|v| v.len()).unwrap_or(0);
    assert!(
        size > MAX_OBJECT_BYTES - 400 && size <= MAX_OBJECT_BYTES,
        "{size}"
    );
}

#[test]
fn a_broken_document_after_our_own_refusal_stops_the_file_without_a_panic() {
    // Found by the fuzz pass: the YAML parser stops loading a document at an alias of no
    // anchor; a repeated key found before it ended the document's reading early, parsing went
    // on with the "next document" (the rest of this one) and serde_yaml_ng panicked
    // ("unexpected end of mapping"), taking the file agent with it.
    for text in [
        "a:\n  <<: a\n  a: a\n  <<: *a0\n",
        "{a: 1, a: 2, b: *nope}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: after}\n",
        "{a: 1, a: 2, b: [}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: after}\n",
    ] {
        let (rs, errs) = parse_documents("x.yaml", text, "east");
        assert!(rs.is_empty(), "{text:?}: {rs:?}");
        let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{text:?}: {messages:?}");
        assert!(messages[0].starts_with("duplicate key"), "{messages:?}");
        assert!(messages[1].starts_with("invalid YAML"), "{messages:?}");
        assert!(errs.iter().all(|e| e.document == Some(0)), "{errs:?}");
    }
    // The same after a document refused for its expanded size.
    let text = format!("{}  b: *nope\n", alias_bomb(6, 7, 1500));
    let (rs, errs) = parse_documents("x.yaml", &text, "east");
    assert!(rs.is_empty());
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].message.contains("aliases are expanded"),
        "{}",
        errs[0]
    );
    assert!(errs[1].message.contains("unknown anchor"), "{}", errs[1]);
}
