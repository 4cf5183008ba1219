//! HTTP routing: one handler that parses the apiserver's URL scheme
//! (`/api/v1[/namespaces/{ns}]/{plural}[/{name}[/status]]`,
//! `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]]`) and the query
//! parameters, and maps verbs to the store. Bad input is a 400 with a Status body.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, Response, StatusCode};
use serde_json::Value;

use super::patch::Subresource;
use super::select::Selectors;
use super::status::{ApiError, Result};
use super::storage::{ListOptions, PatchType, WatchFilter, WatchStart};
use super::watch::{expired_body, WatchStream};
use super::{discovery, RequestRecord, Shared};

/// Request bodies above this are refused (the apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// `timeoutSeconds` when a watch gives none (the apiserver picks 30-60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response<Body> {
    json_response(err.code, &err.to_status())
}

/// The entry point of every request.
pub async fn handle(shared: Arc<Shared>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let query: HashMap<String, String> = parts.uri.query().map(url_pairs).unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or_default().trim().to_string());
    shared.log(RequestRecord {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        content_type: content_type.clone(),
        field_manager: query.get("fieldManager").cloned(),
    });
    if let Some(code) = shared.take_fault() {
        return error_response(&ApiError::from_code(code));
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading the body: {e}"))),
    };
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    // the apiserver names a manager that gives no fieldManager after its user agent
    let default_manager = user_agent
        .split('/')
        .next()
        .unwrap_or("unknown")
        .to_string();
    let request = Parsed {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        content_type,
        body: body.to_vec(),
        default_manager,
    };
    match route(&shared, request) {
        Ok(Reply::Json(code, v)) => json_response(code, &v),
        Ok(Reply::Stream(body)) => {
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => error_response(&e),
    }
}

/// Decodes `a=b&c=d` (percent and `+` escapes) without another dependency.
fn url_pairs(q: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

struct Parsed {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    content_type: Option<String>,
    body: Vec<u8>,
    default_manager: String,
}

enum Reply {
    Json(u16, Value),
    Stream(Body),
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    matches!(query.get(key).map(String::as_str), Some("true" | "1"))
}

fn json_body(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
    })
}

fn route(shared: &Shared, req: Parsed) -> Result<Reply> {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let store = || shared.store();
    match (req.method.clone(), segments.as_slice()) {
        (Method::GET, ["version"]) => Ok(Reply::Json(200, discovery::version())),
        (Method::GET, ["api"]) => Ok(Reply::Json(
            200,
            discovery::core_versions(&shared.addr.to_string()),
        )),
        (Method::GET, ["apis"]) => Ok(Reply::Json(
            200,
            discovery::group_list(store().resources().iter()),
        )),
        (Method::GET, ["api", "v1"]) => {
            discovery::resource_list(store().resources().iter(), "", "v1")
                .map(|v| Reply::Json(200, v))
                .ok_or_else(ApiError::no_such_resource)
        }
        (Method::GET, ["apis", group]) => discovery::group(store().resources().iter(), group)
            .map(|v| Reply::Json(200, v))
            .ok_or_else(ApiError::no_such_resource),
        (Method::GET, ["apis", group, version]) => {
            discovery::resource_list(store().resources().iter(), group, version)
                .map(|v| Reply::Json(200, v))
                .ok_or_else(ApiError::no_such_resource)
        }
        (_, ["api", "v1", rest @ ..]) => resource_request(shared, &req, "", "v1", rest),
        (_, ["apis", group, version, rest @ ..]) => {
            resource_request(shared, &req, group, version, rest)
        }
        _ => Err(ApiError::no_such_resource()),
    }
}

/// A request under a group version: `[namespaces/{ns}/]{plural}[/{name}[/status]]`.
fn resource_request(
    shared: &Shared,
    req: &Parsed,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Reply> {
    // `namespaces/{name}` and `namespaces/{name}/status` are the Namespace resource itself
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", ns, plural, ..]
            if !(group.is_empty() && matches!(*plural, "status" | "finalize")) =>
        {
            (Some(*ns), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, Subresource::Main),
        [plural, name] => (*plural, Some(*name), Subresource::Main),
        [plural, name, "status"] => (*plural, Some(*name), Subresource::Status),
        _ => return Err(ApiError::no_such_resource()),
    };
    let info = shared
        .store()
        .resource(group, version, plural)
        .ok_or_else(ApiError::no_such_resource)?;
    if info.namespaced != namespace.is_some()
        && !(info.namespaced && name.is_none() && req.method == Method::GET)
    {
        return Err(ApiError::no_such_resource());
    }
    if sub == Subresource::Status && !info.status_subresource {
        return Err(ApiError::no_such_resource());
    }
    let ns = namespace.unwrap_or_default();
    let manager = req
        .query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| req.default_manager.clone());
    let q = &req.query;
    match (&req.method, name) {
        (&Method::GET, None) if flag(q, "watch") => watch(shared, req, info, version, namespace),
        (&Method::GET, None) => {
            let opts = ListOptions {
                selectors: Selectors::parse(
                    q.get("labelSelector").map(String::as_str),
                    q.get("fieldSelector").map(String::as_str),
                )?,
                limit: match q.get("limit") {
                    Some(l) => Some(
                        l.parse()
                            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
                    ),
                    None => None,
                },
                continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
                resource_version: q.get("resourceVersion").cloned(),
                resource_version_match: q
                    .get("resourceVersionMatch")
                    .filter(|m| !m.is_empty())
                    .cloned(),
            };
            Ok(Reply::Json(
                200,
                shared.store().list(&info, version, namespace, &opts)?,
            ))
        }
        (&Method::POST, None) => {
            let body = json_body(&req.body)?;
            Ok(Reply::Json(
                201,
                shared.store().create(&info, version, ns, body, &manager)?,
            ))
        }
        (&Method::GET, Some(name)) => Ok(Reply::Json(
            200,
            shared.store().get(&info, version, ns, name)?,
        )),
        (&Method::PUT, Some(name)) => {
            let body = json_body(&req.body)?;
            Ok(Reply::Json(
                200,
                shared
                    .store()
                    .update(&info, version, ns, name, sub, body, &manager)?,
            ))
        }
        (&Method::PATCH, Some(name)) => {
            let (kind, body) = match req.content_type.as_deref() {
                Some("application/merge-patch+json") => (PatchType::Merge, json_body(&req.body)?),
                // built-in kinds take strategic merge patches; for the maps Flotilla patches they
                // merge as a JSON merge patch does. CRDs refuse them, as the apiserver does.
                Some("application/strategic-merge-patch+json") if !info.custom => (PatchType::Merge, json_body(&req.body)?),
                Some("application/apply-patch+yaml") => {
                    if !q.contains_key("fieldManager") {
                        return Err(ApiError::invalid(
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        ));
                    }
                    let body: Value = serde_yaml_ng::from_slice(&req.body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                    (PatchType::Apply { force: flag(q, "force") }, body)
                }
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml (got {other:?})"),
                    ))
                }
            };
            Ok(Reply::Json(
                200,
                shared
                    .store()
                    .patch(&info, version, ns, name, sub, kind, body, &manager)?,
            ))
        }
        (&Method::DELETE, Some(name)) if sub == Subresource::Main => {
            let options: Value = if req.body.is_empty() {
                Value::Null
            } else {
                json_body(&req.body)?
            };
            let precondition = options["preconditions"]["resourceVersion"].as_str();
            Ok(Reply::Json(
                200,
                shared
                    .store()
                    .delete(&info, version, ns, name, precondition)?,
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn watch(
    shared: &Shared,
    req: &Parsed,
    info: discovery::ResourceInfo,
    version: &str,
    namespace: Option<&str>,
) -> Result<Reply> {
    let q = &req.query;
    let selectors = Selectors::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let bookmarks = flag(q, "allowWatchBookmarks");
    let rv = q
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let start = if flag(q, "sendInitialEvents") {
        if q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") || !bookmarks {
            return Err(ApiError::invalid(
                "sendInitialEvents is forbidden for watch unless resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true",
            ));
        }
        WatchStart::InitialEvents
    } else if rv.is_empty() || rv == "0" {
        WatchStart::State
    } else {
        WatchStart::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?,
        )
    };
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let filter = WatchFilter {
        info,
        version: version.to_string(),
        namespace: namespace.map(str::to_string),
        selectors,
    };
    let opening = match shared.store().watch(&filter, start) {
        Ok(opening) => opening,
        Err(e) if e.code == 410 => return Ok(Reply::Stream(expired_body(&e))),
        Err(e) => return Err(e),
    };
    let stream = WatchStream {
        filter,
        bookmarks,
        bookmark_interval: shared.bookmark_interval,
        timeout,
        closer: shared.closer.subscribe(),
    };
    Ok(Reply::Stream(stream.spawn(opening)))
}
