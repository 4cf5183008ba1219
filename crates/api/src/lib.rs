//! The query API: REST/JSON over a store's state (a store node, or standalone).
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once state is restored (snapshot + log replayed), else 503 |
//! | `GET /api/v1/revision` | `{revision, ready, leader}` |
//! | `GET /api/v1/resources?cluster=&kind=&namespace=` | objects with their computed status |
//! | `GET /api/v1/resources/{cluster}/{kind}/{namespace}/{name}` | one object (`-` as namespace for cluster-scoped kinds) |
//! | `GET /api/v1/gateways` | every translated gateway with its xDS resource names and versions |
//!
//! Errors are JSON: `{"error": "..."}` with a 4xx/5xx status.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flotilla_model::{Kind, ResourceKey};
use flotilla_translate::Translator;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// What the API needs from a store: a consistent read of the translated state.
pub trait StateReader: Send + Sync + 'static {
    /// Raft log index of the last applied entry.
    fn revision(&self) -> u64;
    /// State restored and serving.
    fn is_ready(&self) -> bool;
    /// The current leader's node id, when known.
    fn leader(&self) -> Option<u64>;
    /// Runs `f` on the translator under the store's read lock (never across an await).
    fn read(&self, f: &mut dyn FnMut(&Translator));
    /// Event-stream counters merged into `/api/v1/revision` (e.g. `lastSeq`, `eventsSeen`).
    fn counters(&self) -> Value {
        json!({})
    }
}

/// Builds the router; mount it with `axum::serve`.
pub fn router(state: Arc<dyn StateReader>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/api/v1/revision", get(revision))
        .route("/api/v1/resources", get(list))
        .route(
            "/api/v1/resources/{cluster}/{kind}/{namespace}/{name}",
            get(one),
        )
        .route("/api/v1/gateways", get(gateways))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        (code, Json(json!({"error": self.to_string()}))).into_response()
    }
}

type S = State<Arc<dyn StateReader>>;

async fn readyz(State(s): S) -> Response {
    if s.is_ready() {
        Json(json!({"status": "ready", "revision": s.revision()})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "restoring", "error": "state is not restored yet"})),
        )
            .into_response()
    }
}

async fn revision(State(s): S) -> Json<Value> {
    let mut v = json!({"revision": s.revision(), "ready": s.is_ready(), "leader": s.leader()});
    if let (Some(m), Value::Object(extra)) = (v.as_object_mut(), s.counters()) {
        m.extend(extra);
    }
    Json(v)
}

#[derive(Deserialize)]
struct ListQuery {
    cluster: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
}

fn parse_kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown kind {s:?} (known: {})",
            Kind::ALL.map(Kind::as_str).join(", ")
        ))
    })
}

/// The object as stored, with its computed status (if any) in `status`.
fn view(t: &Translator, key: &ResourceKey) -> Option<Value> {
    let r = t.resource(key)?;
    let mut obj = r.raw.clone();
    if let (Some(map), Some(status)) = (obj.as_object_mut(), t.status(key)) {
        map.insert("status".into(), status.clone());
    }
    Some(json!({"cluster": key.cluster, "object": obj}))
}

async fn list(State(s): S, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let mut items = Vec::new();
    s.read(&mut |t| {
        items = t
            .resources()
            .filter(|r| q.cluster.as_ref().is_none_or(|c| *c == r.key.cluster))
            .filter(|r| kind.is_none_or(|k| k == r.key.kind))
            .filter(|r| q.namespace.as_ref().is_none_or(|n| *n == r.key.namespace))
            .filter_map(|r| view(t, &r.key))
            .collect();
    });
    Ok(Json(json!({"revision": s.revision(), "items": items})))
}

async fn one(
    State(s): S,
    Path((cluster, kind, namespace, name)): Path<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let namespace = if namespace == "-" {
        String::new()
    } else {
        namespace
    };
    let key = ResourceKey::new(cluster, kind, namespace, name);
    let mut found = None;
    s.read(&mut |t| found = view(t, &key));
    found
        .map(|mut v| {
            v["revision"] = json!(s.revision());
            Json(v)
        })
        .ok_or_else(|| ApiError::NotFound(format!("{key} not found")))
}

async fn gateways(State(s): S) -> Json<Value> {
    let mut out = Vec::new();
    s.read(&mut |t| {
        out = t
            .gateways()
            .values()
            .map(|g| {
                json!({
                    "gateway": g.gateway,
                    "resources": g.resources.iter().map(|r| json!({
                        "typeUrl": r.type_url, "name": r.name, "version": r.version,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
    });
    Json(json!({"revision": s.revision(), "gateways": out}))
}

#[cfg(test)]
mod tests;
