//! Bad input through the whole handler: every malformed request is a 4xx with a Status body,
//! never a panic. (The behaviour kube-rs relies on is tested through kube-rs, in
//! `tests/kube_api.rs`.)

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value};

use super::{server, FakeApiConfig, Shared};

fn shared() -> Arc<Shared> {
    let addr = "127.0.0.1:1".parse().expect("addr");
    Arc::new(Shared::new(addr, &FakeApiConfig::default()))
}

async fn call(
    shared: &Arc<Shared>,
    method: Method,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = server::handle(shared.clone(), req).await;
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_requests_get_a_status_not_a_panic() {
    let s = shared();
    let cms = "/api/v1/namespaces/default/configmaps";
    let cases = [
        (
            Method::POST,
            cms.to_string(),
            "application/json",
            "{not json",
            400,
        ),
        (
            Method::POST,
            cms.to_string(),
            "application/json",
            "[1, 2]",
            400,
        ),
        (Method::POST, cms.to_string(), "application/json", "{}", 422),
        (
            Method::GET,
            format!("{cms}?labelSelector=a%20in%20x"),
            "",
            "",
            400,
        ),
        (
            Method::GET,
            format!("{cms}?fieldSelector=spec.x%3D1"),
            "",
            "",
            400,
        ),
        (Method::GET, format!("{cms}?limit=many"), "", "", 400),
        (Method::GET, format!("{cms}?continue=%%%"), "", "", 400),
        (
            Method::GET,
            format!("{cms}?watch=true&resourceVersion=abc"),
            "",
            "",
            400,
        ),
        (
            Method::GET,
            format!("{cms}?watch=1&sendInitialEvents=true"),
            "",
            "",
            422,
        ),
        (
            Method::PATCH,
            format!("{cms}/x"),
            "application/json-patch+json",
            "[]",
            415,
        ),
        (
            Method::PATCH,
            format!("{cms}/x"),
            "application/apply-patch+yaml",
            "a: b",
            422,
        ),
        (
            Method::PATCH,
            format!("{cms}/x?fieldManager=m"),
            "application/apply-patch+yaml",
            "a: [",
            400,
        ),
        (
            Method::PUT,
            format!("{cms}/x/status"),
            "application/json",
            "{}",
            404,
        ),
        (
            Method::GET,
            "/api/v1/namespaces/default/namespaces".to_string(),
            "",
            "",
            404,
        ),
        (
            Method::GET,
            "/apis/nope.example.com/v1/things".to_string(),
            "",
            "",
            404,
        ),
        (Method::GET, "/healthz/x/y".to_string(), "", "", 404),
    ];
    for (method, uri, ct, body, want) in cases {
        let (code, status) = call(&s, method.clone(), &uri, ct, body).await;
        assert_eq!(code, want, "{method} {uri}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {uri}");
        assert_eq!(status["code"], json!(want), "{method} {uri}");
    }
}

#[tokio::test]
async fn a_stale_delete_precondition_conflicts() {
    let s = shared();
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, created) = call(
        &s,
        Method::POST,
        cms,
        "application/json",
        r#"{"metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(code, 201);
    let rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("rv");
    let stale = json!({"preconditions": {"resourceVersion": (rv - 1).to_string()}}).to_string();
    let (code, status) = call(
        &s,
        Method::DELETE,
        &format!("{cms}/x"),
        "application/json",
        &stale,
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));
    let (code, status) = call(
        &s,
        Method::DELETE,
        &format!("{cms}/x"),
        "application/json",
        "",
    )
    .await;
    assert_eq!((code, status["status"].as_str()), (200, Some("Success")));
}
