//! Bad input never disturbs what works, and Envoy never receives config it rejects.

use crate::standalone::{Standalone, T};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_yaml_unknown_kind_and_invalid_regex_leave_the_rest_working() {
    let mut s = Standalone::start();
    let v1 = start_backend("v1").await;
    let port = free_port();
    write_file(
        &s.yaml,
        "base.yaml",
        &format!(
            "{}---\n{}---\n{}",
            gateway_yaml("default", "gw", "127.0.0.1", port),
            service_yaml("default", "v1", v1),
            route_yaml("default", "good", "gw", "/good", &[("v1", 1)])
        ),
    );
    let (_envoy, _) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let base = format!("http://127.0.0.1:{port}");
    s.expect(&format!("{base}/good"), "the good route", |c, _| c == 200)
        .await;

    // 1. Malformed YAML.
    write_file(
        &s.yaml,
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n",
    );
    // 2. An unknown kind.
    write_file(
        &s.yaml,
        "unknown.yaml",
        "apiVersion: example.com/v1\nkind: Frobnicator\nmetadata: {name: f}\n",
    );
    // 3. A route whose second rule has an invalid regex, and a third route after all that.
    write_file(
        &s.yaml,
        "regex.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: regex, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /fine}}]
    backendRefs: [{name: v1, port: 80}]
  - matches: [{path: {type: RegularExpression, value: '/(unclosed'}}]
    backendRefs: [{name: v1, port: 80}]
",
    );
    write_file(
        &s.yaml,
        "later.yaml",
        &route_yaml("default", "later", "gw", "/later", &[("v1", 1)]),
    );

    s.expect(
        &format!("{base}/later"),
        "a route added after the bad input",
        |c, _| c == 200,
    )
    .await;
    s.expect(
        &format!("{base}/fine"),
        "the valid rule of the regex route",
        |c, _| c == 200,
    )
    .await;
    s.expect(
        &format!("{base}/good"),
        "the good route still served",
        |c, _| c == 200,
    )
    .await;

    let v = s
        .api("/api/v1/resources/local/HTTPRoute/default/regex")
        .await
        .expect("route");
    let conds = v["object"]["status"]["parents"][0]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let partial = conds
        .iter()
        .find(|c| c["type"] == "PartiallyInvalid")
        .expect("PartiallyInvalid condition");
    assert_eq!(partial["reason"], "UnsupportedValue");
    let msg = partial["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("Failed to process route rule 1: regex \"/(unclosed\" is invalid"),
        "{msg}"
    );

    // The agent names the file, the document and what was wrong.
    let log = eventually("ingest errors in the log", T, || async {
        let log = s.proc.log_text();
        if log.contains("broken.yaml") && log.contains("unknown.yaml") {
            Ok(log)
        } else {
            Err("not yet".into())
        }
    })
    .await;
    assert!(log.contains("invalid YAML"), "{log}");
    assert!(
        log.contains("unknown kind \\\"Frobnicator\\\"")
            || log.contains("unknown kind \"Frobnicator\""),
        "{log}"
    );
    // Nothing unparseable reached the store.
    let items = s.api("/api/v1/resources?kind=Service").await.expect("list");
    assert_eq!(items["items"].as_array().map(|a| a.len()), Some(1));

    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "Envoy NACKed: {stats}");
    assert!(s.proc.is_running(), "standalone survived the bad input");
}
