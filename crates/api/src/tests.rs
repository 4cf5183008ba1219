use super::*;
use axum::body::Body;
use axum::http::Request;
use flotilla_model::{EventBody, ResourceEvent};
use http_body_util::BodyExt;
use std::sync::Mutex;
use tower::ServiceExt;

struct Fixed(Mutex<Translator>, bool);

impl StateReader for Fixed {
    fn revision(&self) -> u64 {
        7
    }
    fn is_ready(&self) -> bool {
        self.1
    }
    fn leader(&self) -> Option<u64> {
        Some(1)
    }
    fn read(&self, f: &mut dyn FnMut(&Translator)) {
        f(&self.0.lock().unwrap())
    }
}

fn state(ready: bool) -> Arc<dyn StateReader> {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\nspec: {ports: [{port: 80}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: app}\nspec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 80}]}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: eg}\nspec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: app}\nspec: {gatewayClassName: eg, listeners: [{name: http, port: 8080, protocol: HTTP}]}\n";
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
    Arc::new(Fixed(Mutex::new(t), ready))
}

async fn get_json(s: Arc<dyn StateReader>, uri: &str) -> (StatusCode, Value) {
    let resp = router(s)
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn readyz_follows_restore() {
    assert_eq!(
        get_json(state(false), "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
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
