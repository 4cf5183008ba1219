use super::*;
use axum::body::Body;
use axum::http::Request;
use flotilla_model::{EventBody, ResourceEvent};
use flotilla_translate::Translator;
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Fixed(TranslatorView, bool);

impl StateReader for Fixed {
    fn state(&self) -> ApiState {
        ApiState {
            revision: 7,
            view: self.0.clone(),
            counters: json!({"lastSeq": 4}),
            rejections: json!([{"seq": 3, "reason": "bad"}]),
        }
    }
    fn readiness(&self) -> Result<(), NotReady> {
        if self.1 {
            Ok(())
        } else {
            Err("state is not restored yet".into())
        }
    }
    fn leader(&self) -> Option<u64> {
        Some(1)
    }
}

fn state(ready: bool) -> Arc<dyn StateReader> {
    state_of(ready, TEXT)
}

const TEXT: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\nspec: {ports: [{port: 80}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\nspec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: app}\nspec: {gatewayClassName: eg, listeners: [{name: http, port: 8080, protocol: HTTP}]}\n";

/// A state of `text`'s objects in cluster `east`, revision 7.
fn state_of(ready: bool, text: &str) -> Arc<dyn StateReader> {
    let (rs, errs) = flotilla_model::parse_documents("t.yaml", text, "east");
    assert!(errs.is_empty());
    let mut t = Translator::new();
    for r in rs {
        t.apply(&ResourceEvent {
            cluster: "east".into(),
            source: "t".into(),
            body: EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: None,
            },
        })
        .unwrap();
    }
    t.recompute();
    Arc::new(Fixed(t.view(), ready))
}

async fn get_json(s: Arc<dyn StateReader>, uri: &str) -> (StatusCode, Value) {
    let resp = router(s, None, Auth::none())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn readyz_follows_restore() {
    let (code, v) = get_json(state(false), "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error"], "state is not restored yet");
    assert_eq!(get_json(state(true), "/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn one_resource_carries_its_status() {
    let (code, v) = get_json(state(true), "/api/v1/resources/east/HTTPRoute/app/r").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["revision"], 7);
    assert_eq!(
        v["object"]["status"]["parents"][0]["conditions"][0]["reason"],
        "Accepted"
    );
    let (code, v) = get_json(state(true), "/api/v1/resources/east/gatewayclass/-/eg").await;
    assert_eq!(code, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn list_filters_by_kind_and_cluster() {
    let (_, v) = get_json(state(true), "/api/v1/resources?kind=Service").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (_, v) = get_json(state(true), "/api/v1/resources?cluster=west").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn errors_are_json_with_a_message() {
    let (code, v) = get_json(state(true), "/api/v1/resources?kind=Frob").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("unknown kind \"Frob\""));
    let (code, v) = get_json(state(true), "/api/v1/resources/east/Service/app/missing").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "east/Service/app/missing not found");
}

#[tokio::test]
async fn revision_carries_the_counters_of_the_same_state() {
    let (_, v) = get_json(state(true), "/api/v1/revision").await;
    assert_eq!(v["revision"], 7);
    assert_eq!(v["lastSeq"], 4);
    assert_eq!(v["ready"], true);
    let (_, v) = get_json(state(true), "/api/v1/rejections").await;
    assert_eq!(v["items"][0]["seq"], 3);
}

#[tokio::test]
async fn lists_are_paginated_in_key_order() {
    let mut names = Vec::new();
    let mut uri = "/api/v1/resources?limit=1".to_string();
    for _ in 0..10 {
        let (code, v) = get_json(state(true), &uri).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        names.push(items[0]["object"]["kind"].as_str().unwrap().to_string());
        match v["continue"].as_str() {
            Some(token) => uri = format!("/api/v1/resources?limit=1&continue={token}"),
            None => break,
        }
    }
    assert_eq!(names.len(), 4, "{names:?}");
    let (_, all) = get_json(state(true), "/api/v1/resources").await;
    let all: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["object"]["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, all, "pages concatenate to the whole list");
    let (code, _) = get_json(state(true), "/api/v1/resources?limit=0").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, v) = get_json(state(true), "/api/v1/resources?continue=zz").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid continue token");
}

#[tokio::test]
async fn digest_covers_every_object() {
    let (_, v) = get_json(state(true), "/api/v1/digest").await;
    assert_eq!(v["resources"], 4);
    assert_eq!(v["digest"].as_str().unwrap().len(), 64);
}

mod auth_http;
