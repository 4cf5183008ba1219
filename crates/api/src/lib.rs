//! The query API: REST/JSON over a store's state (a store node, or standalone).
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 while the node serves: state restored, Raft core running, a leader known; else 503 with the reason |
//! | `GET /api/v1/revision` | `{revision, ready, leader, lastSeq, eventsApplied, ...}` |
//! | `GET /api/v1/resources?cluster=&kind=&namespace=&limit=&continue=` | objects with their computed status, a page at a time |
//! | `GET /api/v1/resources/{cluster}/{kind}/{namespace}/{name}` | one object (`-` as namespace for cluster-scoped kinds) |
//! | `GET /api/v1/gateways` | every translated gateway with its xDS resource names and versions |
//! | `GET /api/v1/ratelimit` | the rate limit service's rules (`flotilla ratelimit --config` format) |
//! | `GET /api/v1/rejections` | the events the store could not fold, most recent last, and why |
//! | `GET /api/v1/digest` | a digest of every stored object (replicas compare it) |
//! | `GET /api/v1/members` | the cluster's voters, learners, their addresses, the leader |
//! | `POST /api/v1/members/learners` `{"id": N, "addr": "HOST:PORT"}` | add a learner (leader only) |
//! | `POST /api/v1/members/voters` `{"id": N}` | promote a caught-up learner (leader only) |
//! | `DELETE /api/v1/members/{id}` | remove a voter or learner (leader only) |
//! | `POST /api/v1/snapshot?purge=true` | build a snapshot now (and drop the log it covers) |
//!
//! Administrative calls on a node that is not the leader answer 421 with the leader's id in
//! `leader`; `flotilla ctl` asks the next node.
//!
//! Every answer is computed from one published state of the store (an immutable snapshot):
//! its `revision` and its data belong together, and no request waits on the state machine.
//! Nor may reads slow it down: answers that walk many objects (lists, gateways, the digest)
//! are built on the blocking pool, [`HEAVY_CONCURRENCY`] at a time, so that however many
//! clients read, the fold and the config push keep their share of the CPU; a request that
//! waits longer than [`HEAVY_QUEUE_WAIT`] for its turn gets 503 with `Retry-After`.
//! Errors are JSON: `{"error": "..."}` with a 4xx/5xx status.
//!
//! Who may call what ([`auth`]): `/healthz` and `/readyz` are open (probes); every other `GET`
//! needs the `reader` or `admin` role, every change the `admin` role. Callers prove who they
//! are with a bearer token (`--api-tokens`) or a client certificate; without any credentials
//! configured (dev mode) callers are anonymous readers and nobody administers. Only admins see
//! Secret data and private keys ([`redact`]). Request bodies are small JSON: at most
//! [`MAX_BODY`] bytes, else 413.

pub mod auth;
pub mod redact;

pub use auth::{Auth, AuthError, Principal, Role, TokenFile};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use flotilla_model::{Kind, ResourceKey};
use flotilla_translate::TranslatorView;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Heavy answers built at once. One: on the 2-core machines this runs on, the other core is the
/// state machine's and the edges'.
pub const HEAVY_CONCURRENCY: usize = 1;
/// How long a heavy request waits for its turn before 503.
pub const HEAVY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Page size of `/api/v1/resources` when the request names none.
pub const DEFAULT_PAGE: usize = 500;
/// The largest page a request may ask for: one page is built in memory.
pub const MAX_PAGE: usize = 5000;

/// The largest request body: the API takes only small JSON (`{"id": N, "addr": "..."}`).
pub const MAX_BODY: usize = 64 * 1024;

/// One published state of a store, as the API reads it.
#[derive(Clone, Default)]
pub struct ApiState {
    pub revision: u64,
    pub view: TranslatorView,
    /// Merged into `/api/v1/revision` (e.g. `lastSeq`, `eventsApplied`).
    pub counters: Value,
    /// The body of `/api/v1/rejections`' `items`.
    pub rejections: Value,
}

/// Why a node does not serve, for `/readyz`.
pub type NotReady = String;

/// What the API needs from a store.
pub trait StateReader: Send + Sync + 'static {
    /// The latest published state (cheap: shared, immutable).
    fn state(&self) -> ApiState;
    /// `Ok` while the node serves; the reason otherwise.
    fn readiness(&self) -> Result<(), NotReady>;
    /// The current leader's node id, when known.
    fn leader(&self) -> Option<u64>;
}

/// A boxed future of an administrative call (the trait is used as a trait object).
pub type AdminFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, AdminError>> + Send + 'a>>;

/// Cluster administration (store nodes).
pub trait Admin: Send + Sync + 'static {
    fn members(&self) -> Value;
    fn add_learner(&self, id: u64, addr: String) -> AdminFuture<'_>;
    fn promote(&self, id: u64) -> AdminFuture<'_>;
    fn remove(&self, id: u64) -> AdminFuture<'_>;
    fn snapshot(&self, purge: bool) -> AdminFuture<'_>;
}

/// Why an administrative call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<u64> },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
    /// The body is larger than [`MAX_BODY`].
    #[error("{0}")]
    TooLarge(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (code, extra) = match &self {
            AdminError::NotLeader { leader } => {
                (StatusCode::MISDIRECTED_REQUEST, json!({"leader": leader}))
            }
            AdminError::Invalid(_) => (StatusCode::BAD_REQUEST, json!({})),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, json!({})),
            AdminError::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, json!({})),
            AdminError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, json!({})),
        };
        let mut body = json!({"error": self.to_string()});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        (code, Json(body)).into_response()
    }
}

/// Builds the router; mount it with `axum::serve`. `admin` adds the cluster administration
/// endpoints; `auth` says who may call what (see [`auth`]). A listener that verifies client
/// certificates passes the peer's identity as a `flotilla_net::ConnInfo` extension (plain, or
/// in `axum::extract::ConnectInfo`).
pub fn router(state: Arc<dyn StateReader>, admin: Option<Arc<dyn Admin>>, auth: Auth) -> Router {
    let guard = |needs| {
        axum::middleware::from_fn_with_state(
            auth::Guard {
                auth: auth.clone(),
                needs,
            },
            auth::guard,
        )
    };
    let api = Api {
        reader: state,
        heavy: Arc::new(tokio::sync::Semaphore::new(HEAVY_CONCURRENCY)),
    };
    let probes = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .with_state(api.clone());
    let mut reads = Router::new()
        .route("/api/v1/revision", get(revision))
        .route("/api/v1/resources", get(list))
        .route(
            "/api/v1/resources/{cluster}/{kind}/{namespace}/{name}",
            get(one),
        )
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/ratelimit", get(ratelimit))
        .route("/api/v1/rejections", get(rejections))
        .route("/api/v1/digest", get(digest))
        .with_state(api);
    let mut app = probes;
    if let Some(a) = admin {
        reads = reads.merge(
            Router::new()
                .route("/api/v1/members", get(members))
                .with_state(a.clone()),
        );
        let changes = Router::new()
            .route("/api/v1/members/learners", post(add_learner))
            .route("/api/v1/members/voters", post(promote))
            .route("/api/v1/members/{id}", delete(remove))
            .route("/api/v1/snapshot", post(snapshot))
            .with_state(a)
            .route_layer(guard(Role::Admin));
        app = app.merge(changes);
    }
    app.merge(reads.route_layer(guard(Role::Reader)))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the API is busy; retry shortly")]
    Busy,
    #[error("{0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut r = (code, Json(json!({"error": self.to_string()}))).into_response();
        if code == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

/// The router's state: the store, and the gate of heavy answers.
#[derive(Clone)]
struct Api {
    reader: Arc<dyn StateReader>,
    heavy: Arc<tokio::sync::Semaphore>,
}

impl std::ops::Deref for Api {
    type Target = dyn StateReader;
    fn deref(&self) -> &Self::Target {
        &*self.reader
    }
}

impl Api {
    /// Builds a JSON answer with `f` on the blocking pool, when the gate lets it.
    async fn heavy<F>(&self, f: F) -> Result<Response, ApiError>
    where
        F: FnOnce(&ApiState) -> Result<Vec<u8>, ApiError> + Send + 'static,
    {
        let _permit = tokio::time::timeout(HEAVY_QUEUE_WAIT, self.heavy.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::Busy)?
            .map_err(|_| ApiError::Busy)?;
        let st = self.state();
        let bytes = tokio::task::spawn_blocking(move || f(&st))
            .await
            .map_err(|e| ApiError::Internal(format!("building the answer failed: {e}")))??;
        Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))
}

/// An object as stored, with its computed status in `status`, serialized from the shared
/// state without copying it.
struct ObjectView<'a> {
    raw: Cow<'a, Value>,
    status: Option<&'a Value>,
}

impl serde::Serialize for ObjectView<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(obj) = self.raw.as_object() else {
            return self.raw.serialize(ser);
        };
        let mut m = ser.serialize_map(None)?;
        for (k, v) in obj {
            if k == "status" && self.status.is_some() {
                continue;
            }
            m.serialize_entry(k, v)?;
        }
        if let Some(st) = self.status {
            m.serialize_entry("status", st)?;
        }
        m.end()
    }
}

#[derive(serde::Serialize)]
struct Item<'a> {
    cluster: &'a str,
    object: ObjectView<'a>,
}

type S = State<Api>;

async fn readyz(State(s): S) -> Response {
    match s.readiness() {
        Ok(()) => Json(json!({"status": "ready", "revision": s.state().revision})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "error": why})),
        )
            .into_response(),
    }
}

async fn revision(State(s): S) -> Json<Value> {
    let st = s.state();
    let mut v = json!({
        "revision": st.revision,
        "ready": s.readiness().is_ok(),
        "leader": s.leader(),
    });
    if let (Some(m), Value::Object(extra)) = (v.as_object_mut(), st.counters) {
        m.extend(extra);
    }
    Json(v)
}

#[derive(Deserialize)]
struct ListQuery {
    cluster: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continue")]
    continue_from: Option<String>,
}

fn parse_kind(s: &str) -> Result<Kind, ApiError> {
    Kind::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown kind {s:?} (known: {})",
            Kind::ALL.map(Kind::as_str).join(", ")
        ))
    })
}

/// The continue token of a list: the key of the next item, hex-encoded JSON (opaque to
/// clients).
fn encode_continue(key: &ResourceKey) -> String {
    hex::encode(serde_json::to_vec(key).unwrap_or_default())
}

fn decode_continue(token: &str) -> Result<ResourceKey, ApiError> {
    let bad = || ApiError::BadRequest("invalid continue token".into());
    let bytes = hex::decode(token).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// The object as `who` may see it: whole for admins, without secrets for the others.
fn visible<'a>(who: &Principal, kind: Kind, raw: &'a Value) -> Cow<'a, Value> {
    if who.is_admin() {
        return Cow::Borrowed(raw);
    }
    match redact::for_reader(kind, raw) {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(raw),
    }
}

/// The object as `who` may see it, with its computed status (if any) in `status`.
fn view(t: &TranslatorView, key: &ResourceKey, who: &Principal) -> Option<Value> {
    let r = t.resource(key)?;
    let mut obj = visible(who, key.kind, &r.raw).into_owned();
    if let (Some(map), Some(status)) = (obj.as_object_mut(), t.status(key)) {
        map.insert("status".into(), status.clone());
    }
    Some(json!({"cluster": key.cluster, "object": obj}))
}

async fn list(
    State(s): S,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let start = q
        .continue_from
        .as_deref()
        .map(decode_continue)
        .transpose()?;
    s.heavy(move |st| {
        let mut items = Vec::new();
        let mut next = None;
        let matching = st
            .view
            .resources_from(start.as_ref())
            .filter(|r| q.cluster.as_ref().is_none_or(|c| *c == r.key.cluster))
            .filter(|r| kind.is_none_or(|k| k == r.key.kind))
            .filter(|r| q.namespace.as_ref().is_none_or(|n| *n == r.key.namespace));
        for r in matching {
            if items.len() == limit {
                next = Some(encode_continue(&r.key));
                break;
            }
            items.push(Item {
                cluster: &r.key.cluster,
                object: ObjectView {
                    raw: visible(&who, r.key.kind, &r.raw),
                    status: st.view.status(&r.key),
                },
            });
        }
        #[derive(serde::Serialize)]
        struct Page<'a> {
            revision: u64,
            items: Vec<Item<'a>>,
            #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
            next: Option<String>,
        }
        to_json(&Page {
            revision: st.revision,
            items,
            next,
        })
    })
    .await
}

async fn one(
    State(s): S,
    Extension(who): Extension<Principal>,
    Path((cluster, kind, namespace, name)): Path<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    let namespace = if namespace == "-" {
        String::new()
    } else {
        namespace
    };
    let key = ResourceKey::new(cluster, kind, namespace, name);
    let st = s.state();
    view(&st.view, &key, &who)
        .map(|mut v| {
            v["revision"] = json!(st.revision);
            Json(v)
        })
        .ok_or_else(|| ApiError::NotFound(format!("{key} not found")))
}

async fn gateways(State(s): S) -> Result<Response, ApiError> {
    s.heavy(|st| {
        let out: Vec<Value> = st
            .view
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
        to_json(&json!({"revision": st.revision, "gateways": out}))
    })
    .await
}

/// The rate limit service's rules for every gateway's global rate limits: the file format of
/// `flotilla ratelimit --config` (JSON is YAML), for a separate rate limit fleet.
async fn ratelimit(State(s): S) -> Result<Response, ApiError> {
    s.heavy(|st| to_json(&st.view.rate_limit_rules())).await
}

async fn rejections(State(s): S) -> Json<Value> {
    let st = s.state();
    Json(json!({"revision": st.revision, "items": st.rejections}))
}

async fn digest(State(s): S) -> Result<Response, ApiError> {
    s.heavy(|st| {
        let d = flotilla_model::state_digest(st.view.resources().map(|r| (&r.key, &r.raw)));
        to_json(&json!({
            "revision": st.revision,
            "digest": d,
            "resources": st.view.resource_count(),
        }))
    })
    .await
}

type A = State<Arc<dyn Admin>>;

#[derive(Deserialize)]
struct LearnerBody {
    id: u64,
    addr: String,
}

#[derive(Deserialize)]
struct VoterBody {
    id: u64,
}

#[derive(Deserialize)]
struct SnapshotQuery {
    #[serde(default)]
    purge: bool,
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, AdminError> {
    b.map(|Json(t)| t).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::TooLarge(format!("request body larger than {MAX_BODY} bytes"))
        } else {
            AdminError::Invalid(format!("invalid request body: {}", e.body_text()))
        }
    })
}

async fn members(State(a): A) -> Json<Value> {
    Json(a.members())
}

async fn add_learner(
    State(a): A,
    b: Result<Json<LearnerBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let b = body(b)?;
    a.add_learner(b.id, b.addr).await.map(Json)
}

async fn promote(
    State(a): A,
    b: Result<Json<VoterBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let b = body(b)?;
    a.promote(b.id).await.map(Json)
}

async fn remove(State(a): A, Path(id): Path<String>) -> Result<Json<Value>, AdminError> {
    let id = id
        .parse::<u64>()
        .map_err(|_| AdminError::Invalid(format!("{id:?} is not a node id")))?;
    a.remove(id).await.map(Json)
}

async fn snapshot(State(a): A, Query(q): Query<SnapshotQuery>) -> Result<Json<Value>, AdminError> {
    a.snapshot(q.purge).await.map(Json)
}

#[cfg(test)]
mod tests;
