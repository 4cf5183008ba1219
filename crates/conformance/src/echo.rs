//! The echo backend, answering as the suite's echo-basic does: one HTTP server per pod, speaking
//! HTTP/1.1 and h2c (prior knowledge) on the same ports.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Identity of one echo instance, as echo-basic takes it from its environment.
#[derive(Clone, Debug)]
pub struct PodId {
    pub namespace: String,
    pub pod: String,
}

/// Request URIs every pod logged ("Echoing back request made to ..."), by (namespace, pod).
type PodLogs = BTreeMap<(String, String), Vec<String>>;

#[derive(Clone, Default)]
pub struct EchoLog {
    inner: Arc<Mutex<PodLogs>>,
}

impl EchoLog {
    fn push(&self, id: &PodId, uri: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.entry((id.namespace.clone(), id.pod.clone()))
                .or_default()
                .push(uri.to_string());
        }
    }

    /// Whether some pod in `namespace` whose name starts with `prefix` logged `uri`.
    pub fn seen(&self, namespace: &str, prefix: &str, uri: &str) -> bool {
        self.inner.lock().is_ok_and(|m| {
            m.iter().any(|((ns, pod), uris)| {
                ns == namespace && pod.starts_with(prefix) && uris.iter().any(|u| u == uri)
            })
        })
    }

    /// How many logged requests (in any pod of `namespace` starting with `prefix`) contain `needle`.
    pub fn count_containing(&self, namespace: &str, prefix: &str, needle: &str) -> usize {
        self.inner.lock().map_or(0, |m| {
            m.iter()
                .filter(|((ns, pod), _)| ns == namespace && pod.starts_with(prefix))
                .map(|(_, uris)| uris.iter().filter(|u| u.contains(needle)).count())
                .sum()
        })
    }
}

/// Attempts seen per retry uuid (shared by all pods; the retry tests use one replica).
type RetryCounts = Arc<Mutex<HashMap<String, u32>>>;

#[derive(Clone)]
struct Ctx {
    id: PodId,
    log: EchoLog,
    retries: RetryCounts,
}

/// Starts one echo pod listening on `addrs` (with whether that port speaks only h2c, like
/// echo-basic's H2C_PORT and its gRPC mode); returns the server tasks.
pub async fn start_pod(
    id: PodId,
    addrs: &[(SocketAddr, bool)],
    log: EchoLog,
    retries: RetryCountsHandle,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for &(addr, h2_only) in addrs {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("echo {}: bind {addr}: {e}", id.pod))?;
        let ctx = Ctx {
            id: id.clone(),
            log: log.clone(),
            retries: retries.0.clone(),
        };
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Closing a connection resets it (SO_LINGER 0): a /retry attempt without
                // responseCode fails with a TCP RST, as echo-basic's does.
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move { handle(ctx, req).await }
                    });
                    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if h2_only {
                        b = b.http2_only();
                    }
                    let _ = b
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }
    Ok(tasks)
}

/// Shared retry counters (one per harness run).
#[derive(Clone, Default)]
pub struct RetryCountsHandle(RetryCounts);

#[derive(Debug)]
struct Reset;
impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the echo backend (retry test)")
    }
}
impl std::error::Error for Reset {}

fn query_params(uri: &hyper::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Parses a Go duration ("1s", "500ms", "1.5s", "2m", "1m30s").
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    // `from_secs_f64` panics on a value too large (or negative); this is request input.
    Duration::try_from_secs_f64(total).ok()
}

/// Go's http.CanonicalHeaderKey.
pub fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

fn text(code: u16, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

pub const GRPC_SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

fn pb_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    pb_varint(out, u64::from(field << 3 | 2));
    pb_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length-delimited fields of a protobuf message: (field number, bytes); other wire types skipped.
pub fn pb_fields(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(x & 0x7f) << shift;
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        let field = u32::try_from(key >> 3).unwrap_or(0);
        match key & 7 {
            0 => {
                if varint(&mut b).is_none() {
                    break;
                }
            }
            1 => b = b.get(8..).unwrap_or(&[]),
            5 => b = b.get(4..).unwrap_or(&[]),
            2 => {
                let Some(len) = varint(&mut b).and_then(|l| usize::try_from(l).ok()) else {
                    break;
                };
                let Some(data) = b.get(..len) else { break };
                out.push((field, data.to_vec()));
                b = &b[len..];
            }
            _ => break,
        }
    }
    out
}

/// The gRPC echo service (GRPC_ECHO_SERVER mode): Echo and EchoTwo answer an EchoResponse with
/// the assertions; anything else is UNIMPLEMENTED.
fn grpc(ctx: &Ctx, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = path
        .strip_prefix(&format!("/{GRPC_SERVICE}/"))
        .unwrap_or("");
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    if !matches!(method, "Echo" | "EchoTwo") {
        r.headers_mut()
            .insert("grpc-status", hyper::header::HeaderValue::from_static("12"));
        return r;
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut assertions = Vec::new();
    pb_bytes(&mut assertions, 1, path.as_bytes());
    let mut h = Vec::new();
    pb_bytes(&mut h, 1, b":authority");
    pb_bytes(&mut h, 2, authority.as_bytes());
    pb_bytes(&mut assertions, 2, &h);
    for (k, v) in req.headers() {
        let mut h = Vec::new();
        pb_bytes(&mut h, 1, k.as_str().as_bytes());
        pb_bytes(&mut h, 2, v.as_bytes());
        pb_bytes(&mut assertions, 2, &h);
    }
    pb_bytes(&mut assertions, 3, authority.as_bytes());
    let mut c = Vec::new();
    pb_bytes(&mut c, 1, ctx.id.namespace.as_bytes());
    pb_bytes(&mut c, 4, ctx.id.pod.as_bytes());
    pb_bytes(&mut assertions, 4, &c);
    let mut msg = Vec::new();
    pb_bytes(&mut msg, 1, &assertions);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&msg);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(hyper::body::Frame::data(Bytes::from(frame))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    *r.body_mut() = StreamBody::new(futures::stream::iter(frames)).boxed();
    r
}

/// echo-basic's `/ws` (golang.org/x/net/websocket's Handler): a GET Upgrade to websocket,
/// version 13, with a key and an Origin, gets 101 Switching Protocols and an echo of every
/// message on the upgraded connection; any other request is refused as that Handler does.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    use hyper::header::{self, HeaderValue};
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method() != hyper::Method::GET {
        return text(405, "");
    }
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return text(400, "Bad Request");
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut r = text(400, "Bad Request");
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty())
    else {
        return text(400, "Bad Request");
    };
    if h.get(header::ORIGIN).is_none() {
        return text(403, "");
    }
    let Ok(accept) = HeaderValue::from_str(&crate::ws::accept_key(key)) else {
        return text(400, "Bad Request");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(io) = upgrade.await {
            crate::ws::serve_echo(TokioIo::new(io)).await;
        }
    });
    let mut r = text(101, "");
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    r
}

async fn handle(ctx: Ctx, req: Request<Incoming>) -> Result<Response<Body>, Reset> {
    if req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
    {
        let r = grpc(&ctx, &req);
        ctx.log.push(&ctx.id, req.uri().path());
        let _ = req.into_body().collect().await;
        return Ok(r);
    }
    let uri = req.uri().clone();
    let path = uri.path().to_string();
    let request_uri = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let q = query_params(&uri);

    if path == "/ws" {
        return Ok(websocket(req));
    }
    if path == "/health" {
        return Ok(text(200, "OK"));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(500);
        return Ok(text(code, ""));
    }
    if path.starts_with("/retry") {
        let uuid = q.get("uuid").cloned().unwrap_or_default();
        let succeed_after: u32 = q
            .get("succeedAfter")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let attempt = {
            let Ok(mut m) = ctx.retries.lock() else {
                return Err(Reset);
            };
            let n = m.entry(uuid).or_insert(0);
            *n += 1;
            *n
        };
        if attempt <= succeed_after {
            if let Some(d) = q.get("delayRetry").and_then(|s| parse_go_duration(s)) {
                tokio::time::sleep(d).await;
            }
            return match q.get("responseCode").and_then(|s| s.parse::<u16>().ok()) {
                Some(code) => Ok(text(code, "")),
                None => Err(Reset),
            };
        }
    }
    if let Some(d) = q.get("delay").and_then(|s| parse_go_duration(s)) {
        tokio::time::sleep(d).await;
    }

    ctx.log.push(&ctx.id, &request_uri);

    let method = req.method().to_string();
    let proto = match req.version() {
        hyper::Version::HTTP_2 => "HTTP/2.0",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    // Go's r.Host: the Host header, or :authority for HTTP/2.
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name == hyper::header::HOST {
            continue;
        }
        headers
            .entry(canonical_header(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    // X-Echo-Set-Header: "Name:value,Name2:value2" -> response headers.
    let mut set: Vec<(String, String)> = Vec::new();
    for v in headers.get("X-Echo-Set-Header").into_iter().flatten() {
        for item in v.split(',') {
            if let Some((n, val)) = item.split_once(':') {
                let n = n.trim().to_string();
                let val = val.trim().to_string();
                if n.is_empty() {
                    continue;
                }
                match set.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&n)) {
                    Some((_, existing)) => {
                        existing.push(',');
                        existing.push_str(&val);
                    }
                    None => set.push((n, val)),
                }
            }
        }
    }
    // Drain the request body so mirrors and POSTs complete cleanly.
    let _ = req.into_body().collect().await;

    let hdrs: Map<String, Value> = headers.into_iter().map(|(k, v)| (k, json!(v))).collect();
    let body = json!({
        "path": request_uri,
        "host": host,
        "method": method,
        "proto": proto,
        "headers": hdrs,
        "namespace": ctx.id.namespace,
        "ingress": "",
        "service": "",
        "pod": ctx.id.pod,
        "httpPort": "3000",
    });
    let mut r = text(
        200,
        &serde_json::to_string_pretty(&body).unwrap_or_default(),
    );
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    for (n, v) in set {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(n.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            h.insert(n, v);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("x"), None);
        // Too large for a Duration: refused, not a panic in the echo server.
        assert_eq!(parse_go_duration("99999999999999999999999h"), None);
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_header("x-echo-set-header"), "X-Echo-Set-Header");
        assert_eq!(canonical_header("HOST"), "Host");
    }
}

#[cfg(test)]
mod server_tests {
    use super::*;
    use crate::checks::{send, Outgoing};

    #[tokio::test]
    async fn echoes_like_echo_basic() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = EchoLog::default();
        let id = PodId {
            namespace: "ns".into(),
            pod: "web-a-b".into(),
        };
        let tasks = start_pod(
            id,
            &[(addr, false)],
            log.clone(),
            RetryCountsHandle::default(),
        )
        .await
        .expect("start");
        let hdrs = vec![
            ("x-echo-set-header".to_string(), "A:1,B:2,A:3".to_string()),
            ("x-foo".to_string(), "bar".to_string()),
        ];
        for h2c in [false, true] {
            let o = Outgoing {
                addr,
                h2c,
                tls: None,
                method: "GET",
                path: "/p?q=1",
                host: "example.com",
                headers: &hdrs,
            };
            let r = send(&o, Duration::from_secs(5)).await.expect("send");
            assert_eq!(r.status, 200);
            assert_eq!(r.header("a").as_deref(), Some("1,3"));
            let v: Value = serde_json::from_slice(&r.body).expect("json");
            assert_eq!(v["path"], "/p?q=1");
            assert_eq!(v["host"], "example.com");
            assert_eq!(v["pod"], "web-a-b");
            assert_eq!(v["headers"]["X-Foo"][0], "bar");
            assert_eq!(v["proto"], if h2c { "HTTP/2.0" } else { "HTTP/1.1" });
        }
        assert!(log.seen("ns", "web-", "/p?q=1"));
        let o = Outgoing {
            addr,
            h2c: false,
            tls: None,
            method: "GET",
            path: "/retry?uuid=u1&succeedAfter=1&responseCode=503",
            host: "x",
            headers: &[],
        };
        assert_eq!(
            send(&o, Duration::from_secs(5)).await.expect("r1").status,
            503
        );
        assert_eq!(
            send(&o, Duration::from_secs(5)).await.expect("r2").status,
            200
        );
        let o = Outgoing {
            path: "/status/418",
            ..o
        };
        assert_eq!(
            send(&o, Duration::from_secs(5)).await.expect("s").status,
            418
        );
        for t in tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod websocket_tests {
    use super::*;
    use crate::checks::{send, Outgoing};
    use crate::ws;

    /// `/ws` over real TCP: the harness's client gets its messages echoed; requests that are
    /// not a proper upgrade are refused as echo-basic refuses them.
    #[tokio::test]
    async fn ws_echoes_through_an_upgrade() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let id = PodId {
            namespace: "ns".into(),
            pod: "web-a-b".into(),
        };
        let tasks = start_pod(
            id,
            &[(addr, false)],
            EchoLog::default(),
            RetryCountsHandle::default(),
        )
        .await
        .expect("start");
        let plan = ws::echo_plan(&json!({"websocket_echo": [
            {"send_text": "Websocket Support!", "recv_text": "Websocket Support!"},
            {"send_binary_hex": "01020304050607", "recv_binary_hex": "01020304050607"}]}))
        .expect("plan");
        let t = Duration::from_secs(5);
        ws::check_echo(addr, "example.com", "/ws", "ws://gateway/T", &plan, t)
            .await
            .expect("echo");
        let wrong = [ws::Exchange {
            opcode: ws::OP_TEXT,
            send: b"a".to_vec(),
            want: b"b".to_vec(),
        }];
        assert!(
            ws::check_echo(addr, "example.com", "/ws", "ws://gateway/T", &wrong, t)
                .await
                .is_err()
        );
        // Not an upgrade; an upgrade without Origin.
        let o = Outgoing {
            addr,
            h2c: false,
            tls: None,
            method: "GET",
            path: "/ws",
            host: "example.com",
            headers: &[],
        };
        assert_eq!(send(&o, t).await.expect("plain").status, 400);
        let hdrs: Vec<(String, String)> = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = Outgoing {
            headers: &hdrs,
            ..o
        };
        assert_eq!(send(&o, t).await.expect("no origin").status, 403);
        for t in tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod grpc_tests {
    use super::*;
    use crate::checks::grpc_call;

    #[tokio::test]
    async fn grpc_echo_round_trip() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let id = PodId {
            namespace: "ns".into(),
            pod: "grpc-a-b".into(),
        };
        let tasks = start_pod(
            id,
            &[(addr, true)],
            EchoLog::default(),
            RetryCountsHandle::default(),
        )
        .await
        .expect("start");
        let t = Duration::from_secs(5);
        let path = format!("/{GRPC_SERVICE}/EchoTwo");
        let (code, echo) = grpc_call(addr, "example.com", &path, &[], t)
            .await
            .expect("call");
        assert_eq!(code, 0);
        let e = echo.expect("echo");
        assert_eq!(e["fully_qualified_method"], path.as_str());
        assert_eq!(e["namespace"], "ns");
        assert_eq!(e["pod"], "grpc-a-b");
        let path = format!("/{GRPC_SERVICE}/EchoThree");
        let (code, _) = grpc_call(addr, "example.com", &path, &[], t)
            .await
            .expect("call");
        assert_eq!(code, 12);
        for t in tasks {
            t.abort();
        }
    }
}
