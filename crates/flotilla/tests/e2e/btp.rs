//! BackendTrafficPolicy through `flotilla standalone` and a real Envoy, against real HTTP
//! backends started here: each test gives one HTTPRoute a policy and checks what the traffic
//! does (retries, fault injection, response override, compression, consistent hashing,
//! circuit breaking, active and passive health checking).

use crate::standalone::{Standalone, T};
use crate::support::*;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One app per loopback address (127.0.0.2, .3, ...), all on one port (a Service's endpoints
/// share its target port); the port.
async fn serve_pool(apps: Vec<axum::Router>) -> u16 {
    for _ in 0..20 {
        let Ok(port) = serve("127.0.0.2", 0, apps[0].clone()).await else {
            continue;
        };
        let mut ok = true;
        for (i, app) in apps.iter().enumerate().skip(1) {
            if serve(&format!("127.0.0.{}", i + 2), port, app.clone())
                .await
                .is_err()
            {
                ok = false;
                break;
            }
        }
        if ok {
            return port;
        }
    }
    panic!("no port free on every pool address");
}

/// A Service `name` whose endpoints are 127.0.0.2.. (`n` of them) on `port`.
fn pool_yaml(name: &str, port: u16, n: usize) -> String {
    let eps: Vec<String> = (0..n)
        .map(|i| format!("{{addresses: [127.0.0.{}]}}", i + 2))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{}]
",
        eps.join(", ")
    )
}

/// A BackendTrafficPolicy on HTTPRoute `route` (namespace default).
fn btp_yaml(route: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: {route}-policy, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]
{spec}
"
    )
}

/// Standalone + Envoy serving `docs` (YAML documents) behind gateway `gw`; the base URL.
async fn start(docs: &[String]) -> (Standalone, Proc, String) {
    let s = Standalone::start();
    let port = free_port();
    let mut all = vec![gateway_yaml("default", "gw", "127.0.0.1", port)];
    all.extend(docs.iter().cloned());
    write_file(&s.yaml, "all.yaml", &all.join("---\n"));
    let (envoy, _) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    (s, envoy, format!("http://127.0.0.1:{port}"))
}

/// The policy's status is Accepted on its gateway (so the test checks an applied policy).
async fn expect_accepted(s: &Standalone, route: &str) {
    let path = format!("/api/v1/resources/local/BackendTrafficPolicy/default/{route}-policy");
    eventually("the policy accepted", T, || async {
        let v = s.api(&path).await?;
        let conds = &v["object"]["status"]["ancestors"][0]["conditions"];
        let accepted = conds
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True");
        if accepted {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await
}

/// [`start`] with `docs` and a BackendTrafficPolicy `spec` on HTTPRoute `r`, once the policy
/// is Accepted.
async fn start_with_policy(docs: &[String], spec: &str) -> (Standalone, Proc, String) {
    let mut all = docs.to_vec();
    all.push(btp_yaml("r", spec));
    let (s, envoy, base) = start(&all).await;
    expect_accepted(&s, "r").await;
    (s, envoy, base)
}

/// Envoy took every configuration it was sent.
async fn expect_no_nacks(s: &Standalone) {
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_survives_a_backend_that_fails_twice() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    // Fails the first two requests of each `/retry/<n>` round with 500, then answers.
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            if h.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
                (StatusCode::INTERNAL_SERVER_ERROR, "fail").into_response()
            } else {
                "ok".into_response()
            }
        }
    });
    let port = serve("127.0.0.1", 0, app).await.unwrap();
    let (s, _envoy, base) = start_with_policy(
        &[
            service_yaml("default", "flaky", port),
            route_yaml("default", "r", "gw", "/retry", &[("flaky", 1)]),
        ],
        "  retry:
    numRetries: 3
    retryOn: {triggers: [retriable-status-codes], httpStatusCodes: [500]}
    perRetry: {backOff: {baseInterval: 10ms, maxInterval: 50ms}}",
    )
    .await;
    // Wait for the route and the retry policy (a first answer may predate the policy).
    s.expect(&format!("{base}/retry"), "a retried 200", |c, b| {
        c == 200 && b == "ok"
    })
    .await;
    // Three more rounds: every one succeeds, after exactly three backend requests.
    for _ in 0..3 {
        hits.store(0, Ordering::SeqCst);
        let (code, body) = get(&s.http, &format!("{base}/retry")).await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"));
        assert_eq!(hits.load(Ordering::SeqCst), 3, "two failures, then success");
    }
    expect_no_nacks(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_aborts_with_its_status() {
    let port = start_backend("v1").await;
    let (s, _envoy, base) = start_with_policy(
        &[
            service_yaml("default", "v1", port),
            route_yaml("default", "r", "gw", "/fault", &[("v1", 1)]),
            route_yaml("default", "plain", "gw", "/plain", &[("v1", 1)]),
        ],
        "  faultInjection: {abort: {httpStatus: 418, percentage: 100}}",
    )
    .await;
    s.expect(&format!("{base}/fault"), "the injected abort", |c, _| {
        c == 418
    })
    .await;
    // Only the policy's route is faulted.
    s.expect(&format!("{base}/plain"), "the plain route", |c, b| {
        c == 200 && b == "backend=v1 path=/plain"
    })
    .await;
    expect_no_nacks(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_override_rewrites_a_500() {
    let app = axum::Router::new()
        .fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "stack trace").into_response() });
    let port = serve("127.0.0.1", 0, app).await.unwrap();
    let (s, _envoy, base) = start_with_policy(
        &[
            service_yaml("default", "broken", port),
            route_yaml("default", "r", "gw", "/broken", &[("broken", 1)]),
        ],
        "  responseOverride:
  - match: {statusCodes: [{type: Value, value: 500}]}
    response: {contentType: text/plain, statusCode: 503, body: {type: Inline, inline: please try again}}",
    )
    .await;
    s.expect(&format!("{base}/broken"), "the overridden 500", |c, b| {
        c == 503 && b == "please try again"
    })
    .await;
    expect_no_nacks(&s).await;
}

/// `responseOverride[].redirect` is Envoy's custom response redirect policy: Envoy sends the
/// request again, internally, to the redirect's URL (here another route's path on the same
/// gateway), and answers the client with that response under the redirect's status (which
/// the custom response filter applies on the redirected stream: that route has no override).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_override_redirects_a_500() {
    let app = axum::Router::new()
        .fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "stack trace").into_response() });
    let broken = serve("127.0.0.1", 0, app).await.unwrap();
    let good = start_backend("sorry").await;
    let (s, _envoy, base) = start_with_policy(
        &[
            service_yaml("default", "broken", broken),
            service_yaml("default", "sorry", good),
            route_yaml("default", "r", "gw", "/broken", &[("broken", 1)]),
            route_yaml("default", "sorry", "gw", "/sorry", &[("sorry", 1)]),
        ],
        "  responseOverride:
  - match: {statusCodes: [{type: Value, value: 500}]}
    redirect: {path: {type: ReplaceFullPath, replaceFullPath: /sorry/page}}",
    )
    .await;
    // The client never follows redirects itself: what it sees is Envoy's doing.
    let http = http_client_builder(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{base}/broken/x");
    let (code, location, body) = eventually("the redirected 500", T, || async {
        let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let body = r.text().await.map_err(|e| e.to_string())?;
        if code == 500 {
            return Err(format!("{code} {body}"));
        }
        Ok((code, location, body))
    })
    .await;
    assert_eq!(
        (code, body.as_str()),
        (302, "backend=sorry path=/sorry/page")
    );
    // The redirect happened inside Envoy: the client is not sent anywhere.
    assert_eq!(location, None);
    expect_no_nacks(&s).await;
}

/// `httpUpgrade: [{type: CONNECT, connect: {terminate: true}}]`: Envoy answers an HTTP/1.1
/// CONNECT itself and carries the tunnel's bytes to the backend as a TCP stream, while plain
/// requests on the same path go to another route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_terminate_tunnels_to_the_backend() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A TCP echo server (not HTTP: what reaches it is the tunnel's payload).
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 || c.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let web = start_backend("web").await;
    let (s, _envoy, base) = start_with_policy(
        &[
            service_yaml("default", "echo", echo_port),
            service_yaml("default", "web", web),
            route_yaml("default", "r", "gw", "/", &[("echo", 1)]),
            // The same path for plain requests: the CONNECT route does not take them.
            route_yaml("default", "plain", "gw", "/", &[("web", 1)]),
        ],
        "  httpUpgrade:\n  - type: CONNECT\n    connect: {terminate: true}",
    )
    .await;
    let addr = base.trim_start_matches("http://").to_string();
    let reply = eventually("a tunnel through Envoy", T, || async {
        let mut c = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!(
            "CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n\r\n"
        );
        c.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .map_err(|_| "no answer to CONNECT".to_string())?
            .map_err(|e| e.to_string())?;
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head);
        }
        c.write_all(b"ping through the tunnel")
            .await
            .map_err(|e| e.to_string())?;
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .map_err(|_| "no echo".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    })
    .await;
    assert_eq!(reply, "ping through the tunnel");
    s.expect(
        &format!("{base}/page"),
        "a plain request on the plain route",
        |c, b| c == 200 && b == "backend=web path=/page",
    )
    .await;
    expect_no_nacks(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_gzips_a_large_body_for_a_gzip_client() {
    let body = "compress me please ".repeat(500);
    let b = body.clone();
    let app = axum::Router::new().fallback(move || {
        let b = b.clone();
        async move { ([("content-type", "text/plain")], b).into_response() }
    });
    let port = serve("127.0.0.1", 0, app).await.unwrap();
    let (s, _envoy, base) = start_with_policy(
        &[
            service_yaml("default", "big", port),
            route_yaml("default", "r", "gw", "/big", &[("big", 1)]),
            route_yaml("default", "plain", "gw", "/plain", &[("big", 1)]),
        ],
        "  compression: [{type: Gzip}]",
    )
    .await;
    let fetch = |path: &'static str| {
        let (http, base) = (s.http.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .header("accept-encoding", "gzip")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let enc = r
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            let len = r.bytes().await.map_err(|e| e.to_string())?.len();
            Ok::<_, String>((status, enc, len))
        }
    };
    let (status, enc, len) = eventually("a gzip response", T, || async {
        match fetch("/big").await? {
            (200, Some(e), len) if e == "gzip" => Ok((200, e, len)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!((status, enc.as_str()), (200, "gzip"));
    assert!(len < body.len() / 4, "compressed: {len} of {}", body.len());
    // The route without the policy is not compressed.
    let (status, enc, len) = fetch("/plain").await.unwrap();
    assert_eq!((status, enc, len), (200, None, body.len()));
    expect_no_nacks(&s).await;
}

/// An app answering with its own name.
fn named(name: &'static str) -> axum::Router {
    axum::Router::new().fallback(move || async move { name })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_header_value_on_one_backend() {
    let port = serve_pool(vec![named("a"), named("b"), named("c")]).await;
    let (s, _envoy, base) = start_with_policy(
        &[
            pool_yaml("pool", port, 3),
            route_yaml("default", "r", "gw", "/hash", &[("pool", 1)]),
            route_yaml("default", "plain", "gw", "/plain", &[("pool", 1)]),
        ],
        "  loadBalancer: {type: ConsistentHash, consistentHash: {type: Header, header: {name: X-User}}}",
    )
    .await;
    let send = |path: &'static str, user: String| {
        let (http, base) = (s.http.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .header("x-user", user)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != 200 {
                return Err(format!("status {}", r.status()));
            }
            r.text().await.map_err(|e| e.to_string())
        }
    };
    // Without the policy, one user's requests spread over the endpoints (round robin).
    eventually("round robin on the plain route", T, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..9 {
            seen.insert(send("/plain", "alice".into()).await?);
        }
        if seen.len() > 1 {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    // With it, each user stays on one endpoint; the users together use more than one.
    let mut used = BTreeSet::new();
    eventually("the hash route", T, || send("/hash", "warmup".into())).await;
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            seen.insert(send("/hash", user.into()).await.unwrap());
        }
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
        used.extend(seen);
    }
    assert!(used.len() > 1, "every user hashed to {used:?}");
    expect_no_nacks(&s).await;
}

/// `loadBalancer.type: BackendUtilization`: two endpoints report their load in ORCA response
/// headers, one nine times busier than the other; Envoy's client-side weighted round robin
/// sends most requests to the idle one, and the reports do not reach the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_utilization_prefers_the_endpoint_reporting_less_load() {
    let reporting = |name: &'static str, cpu: &'static str| {
        axum::Router::new().fallback(move || async move {
            (
                [(
                    "endpoint-load-metrics",
                    format!("TEXT cpu_utilization={cpu}, rps_fractional=100"),
                )],
                name,
            )
                .into_response()
        })
    };
    let port = serve_pool(vec![reporting("busy", "0.9"), reporting("idle", "0.1")]).await;
    let (s, _envoy, base) = start_with_policy(
        &[
            pool_yaml("pool", port, 2),
            route_yaml("default", "r", "gw", "/orca", &[("pool", 1)]),
        ],
        "  loadBalancer:
    type: BackendUtilization
    backendUtilization: {blackoutPeriod: 0s, weightUpdatePeriod: 100ms}",
    )
    .await;
    let url = format!("{base}/orca");
    // (the endpoint's name, whether its load report reached the client)
    let send = || {
        let (http, url) = (s.http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
            if r.status() != 200 {
                return Err(format!("status {}", r.status()));
            }
            let leaked = r.headers().contains_key("endpoint-load-metrics");
            Ok((r.text().await.map_err(|e| e.to_string())?, leaked))
        }
    };
    // Round robin would split 50/50; the reported weights (100/0.9 against 100/0.1) give the
    // idle endpoint about 90%.
    eventually("most requests on the idle endpoint", T, || async {
        let mut idle = 0;
        for _ in 0..100 {
            let (name, leaked) = send().await?;
            if leaked {
                return Err("a load report reached the client".to_string());
            }
            if name == "idle" {
                idle += 1;
            }
        }
        if idle >= 75 {
            Ok(())
        } else {
            Err(format!("{idle} of 100 on the idle endpoint"))
        }
    })
    .await;
    expect_no_nacks(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflow_answers_503_overloaded() {
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        "slow"
    });
    let port = serve("127.0.0.1", 0, app).await.unwrap();
    let (s, _envoy, base) = start_with_policy(
        &[
            service_yaml("default", "slow", port),
            route_yaml("default", "r", "gw", "/slow", &[("slow", 1)]),
        ],
        // One connection and one waiting request: of five concurrent slow requests, two
        // are served and the rest overflow. (With maxPendingRequests 0 an HTTP/1 pool never
        // opens a connection: every request overflows, as Envoy defines it.)
        "  circuitBreaker: {maxConnections: 1, maxPendingRequests: 1}",
    )
    .await;
    let http = flotilla_testing::http_client(Duration::from_secs(10));
    eventually("overflow under concurrent slow requests", T, || async {
        let reqs = (0..5).map(|_| {
            let (http, url) = (http.clone(), format!("{base}/slow"));
            async move {
                let r = http.get(url).send().await.map_err(|e| e.to_string())?;
                let overloaded = r.headers().get("x-envoy-overloaded").is_some();
                Ok::<_, String>((r.status().as_u16(), overloaded))
            }
        });
        let results: Vec<(u16, bool)> = futures_join(reqs).await?;
        let ok = results.iter().filter(|(c, _)| *c == 200).count();
        let overflow = results.iter().filter(|(c, o)| *c == 503 && *o).count();
        if ok >= 1 && overflow >= 1 && ok + overflow == results.len() {
            Ok(())
        } else {
            Err(format!("{results:?}"))
        }
    })
    .await;
    expect_no_nacks(&s).await;
}

/// Runs the futures concurrently; the first error, else every result in order.
async fn futures_join<F, V>(fs: impl Iterator<Item = F>) -> Result<Vec<V>, String>
where
    F: std::future::Future<Output = Result<V, String>> + Send + 'static,
    V: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Polls until `n` requests in a row to `url` all answer 200 from `want`.
async fn expect_only(s: &Standalone, url: &str, want: &str, what: &str) {
    eventually(what, T, || async {
        let mut seen = Vec::new();
        for _ in 0..12 {
            let (code, body) = get(&s.http, url).await?;
            seen.push(format!("{code} {body}"));
        }
        if seen.iter().all(|x| *x == format!("200 {want}")) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_check_ejects_a_dead_endpoint() {
    // Three endpoints: two healthy; one that answers traffic but fails its health check.
    let sick = axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .fallback(|| async { "sick" });
    let healthy = |name: &'static str| {
        axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .fallback(move || async move { name })
    };
    let port = serve_pool(vec![healthy("good"), sick, healthy("good")]).await;
    let (s, _envoy, base) = start_with_policy(
        &[
            pool_yaml("pool", port, 3),
            route_yaml("default", "r", "gw", "/hc", &[("pool", 1)]),
            route_yaml("default", "plain", "gw", "/plain", &[("pool", 1)]),
        ],
        "  healthCheck:
    active: {type: HTTP, interval: 500ms, timeout: 250ms, healthyThreshold: 1, unhealthyThreshold: 1, http: {path: /healthz, expectedStatuses: [200]}}",
    )
    .await;
    // The plain route (no health check) still reaches the sick endpoint.
    eventually("the sick endpoint on the plain route", T, || async {
        for _ in 0..9 {
            if get(&s.http, &format!("{base}/plain")).await?.1 == "sick" {
                return Ok(());
            }
        }
        Err("never sick".into())
    })
    .await;
    expect_only(&s, &format!("{base}/hc"), "good", "only healthy endpoints").await;
    expect_no_nacks(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_outlier_detection_ejects_a_failing_endpoint() {
    let failing = axum::Router::new()
        .fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "bad").into_response() });
    let port = serve_pool(vec![named("good"), failing, named("good")]).await;
    let (s, _envoy, base) = start_with_policy(
        &[
            pool_yaml("pool", port, 3),
            route_yaml("default", "r", "gw", "/od", &[("pool", 1)]),
        ],
        "  healthCheck:
    passive: {consecutive5XxErrors: 1, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 50}",
    )
    .await;
    // The failing endpoint answers 500 until its errors eject it; then only good ones answer.
    expect_only(
        &s,
        &format!("{base}/od"),
        "good",
        "the failing endpoint ejected",
    )
    .await;
    expect_no_nacks(&s).await;
}

/// A Service `name` with cluster IP 127.0.0.1 and port `port`, whose one endpoint is
/// 127.0.0.1:`endpoint_port`; an HTTPRoute `name` to it on `path` through that port.
fn service_with_cluster_ip(name: &str, port: u16, endpoint_port: u16, path: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec: {{clusterIP: 127.0.0.1, ports: [{{name: http, port: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {endpoint_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: {name}, port: {port}}}]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_type_service_reaches_the_backend_through_the_cluster_ip() {
    // The backend listens on the Service's port of its cluster IP (127.0.0.1); the endpoints
    // say a port where nothing listens, so only Service routing reaches it.
    let port = start_backend("v1").await;
    let (s, _envoy, base) = start(&[
        service_with_cluster_ip("svc", port, free_port(), "/svc"),
        service_with_cluster_ip("ep", port, free_port(), "/ep"),
        btp_yaml("svc", "  routingType: Service"),
    ])
    .await;
    expect_accepted(&s, "svc").await;
    s.expect(
        &format!("{base}/svc"),
        "the backend, by the cluster IP",
        |c, b| c == 200 && b == "backend=v1 path=/svc",
    )
    .await;
    // Endpoint routing (the default) goes to the endpoints, where nothing listens.
    s.expect(&format!("{base}/ep"), "the dead endpoint", |c, _| c == 503)
        .await;
    expect_no_nacks(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_control_rejects_locally_once_the_backend_fails() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            (StatusCode::INTERNAL_SERVER_ERROR, "fail").into_response()
        }
    });
    let port = serve("127.0.0.1", 0, app).await.unwrap();
    let (s, _envoy, base) = start(&[
        service_yaml("default", "failing", port),
        route_yaml("default", "r", "gw", "/ac", &[("failing", 1)]),
        route_yaml("default", "plain", "gw", "/plain", &[("failing", 1)]),
        btp_yaml(
            "r",
            "  admissionControl:
    samplingWindow: 10s
    minSuccessRate: 95
    minRequestRate: 0
    maxRejectionPercent: 100
    rejectionAggression: 1",
        ),
    ])
    .await;
    expect_accepted(&s, "r").await;
    // The backend answers every request 500; with the success rate at 0, Envoy soon answers
    // requests itself (503) without asking the backend.
    eventually("requests rejected by admission control", T, || async {
        let mut codes = Vec::new();
        for _ in 0..20 {
            codes.push(get(&s.http, &format!("{base}/ac")).await?.0);
        }
        if codes.contains(&503) {
            Ok(())
        } else {
            Err(format!("{codes:?}"))
        }
    })
    .await;
    let before = hits.load(Ordering::SeqCst);
    let mut rejected = 0;
    for _ in 0..20 {
        let (code, _) = get(&s.http, &format!("{base}/ac")).await.unwrap();
        if code == 503 {
            rejected += 1;
        }
    }
    assert!(rejected > 0, "503s from the proxy");
    assert_eq!(
        hits.load(Ordering::SeqCst) - before,
        20 - rejected,
        "a rejected request never reaches the backend"
    );
    // A route without the policy is never rejected: the backend's own 500s.
    for _ in 0..10 {
        let (code, body) = get(&s.http, &format!("{base}/plain")).await.unwrap();
        assert_eq!((code, body.as_str()), (500, "fail"));
    }
    expect_no_nacks(&s).await;
}
