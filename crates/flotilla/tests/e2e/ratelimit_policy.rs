//! BackendTrafficPolicy `rateLimit` end to end: `flotilla standalone` translating it, the real
//! Envoy enforcing it, and the rate limit service (embedded, or a `flotilla ratelimit` fleet
//! sharing a real redis-server) counting the global limits.

use crate::standalone::{Standalone, T};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The limit of every test: per hour, so that a window boundary (hour-aligned for the global
/// limits, an hour's refill for the local token bucket) is unlikely inside a test.
const N: u32 = 4;

/// A gateway on `port` with route `app` (`/limited` in rule `limited`, `/free` in another rule)
/// to a backend on `backend`.
fn base_yaml(port: u16, backend: u16) -> String {
    format!(
        "{}---\n{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - name: limited
    matches: [{{path: {{type: PathPrefix, value: /limited}}}}]
    backendRefs: [{{name: v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /free}}}}]
    backendRefs: [{{name: v1, port: 80}}]
",
        gateway_yaml("default", "gw", "127.0.0.1", port),
        service_yaml("default", "v1", backend),
    )
}

/// A BackendTrafficPolicy on rule `limited` of route `app`.
fn policy_yaml(rate_limit: &str) -> String {
    format!(
        "apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: rl, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app, sectionName: limited}}]
  rateLimit:
{rate_limit}"
    )
}

/// `n` per hour for the route, and 2 per hour for each distinct `x-user`.
fn local_limit(n: u32) -> String {
    format!(
        "    type: Local
    local:
      rules:
      - limit: {{requests: {n}, unit: Hour}}
      - clientSelectors: [{{headers: [{{name: x-user, type: Distinct}}]}}]
        limit: {{requests: 2, unit: Hour}}
"
    )
}

/// GET `url` with header `x-user: user`: the status.
async fn get_as_user(c: &reqwest::Client, url: &str, user: &str) -> u16 {
    c.get(url)
        .header("x-user", user)
        .send()
        .await
        .expect("a response")
        .status()
        .as_u16()
}

fn global_limit(n: u32) -> String {
    format!(
        "    type: Global
    global:
      rules:
      - limit: {{requests: {n}, unit: Hour}}
"
    )
}

/// [`global_limit`] and 2 per hour for each distinct `x-user` (whose requests count against
/// both: every rule applies).
fn global_limit_per_user(n: u32) -> String {
    format!(
        "{}      - clientSelectors: [{{headers: [{{name: x-user, type: Distinct}}]}}]
        limit: {{requests: 2, unit: Hour}}
",
        global_limit(n)
    )
}

/// A client that opens a connection per request: a connection made before a listener update
/// keeps the filter chain it was accepted with, and across two Envoys sharing a port (reuse
/// port) a new connection is what lets the kernel pick either.
fn fresh_client() -> reqwest::Client {
    http_client_builder(Duration::from_secs(3))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

/// Waits until Envoy (admin port `admin`) has a filter config of type `filter` in its active
/// listeners and a per-route config of type `per_route` in its routes (the whole config dump
/// would also list every type Envoy knows).
async fn envoy_has(admin: u16, filter: &str, per_route: &str) {
    let c = client();
    let filter = format!("{filter}\"");
    let per_route = format!("{per_route}\"");
    eventually("Envoy's configuration", T, || async {
        let dump = config_dump(&c, admin, "dynamic_listeners").await?;
        // What serves new connections: the active listeners, not the warming ones.
        let active: Vec<String> = active_listeners(&dump)
            .into_iter()
            .map(|(_, l)| l.to_string())
            .collect();
        if !active.iter().any(|l| l.contains(filter.as_str())) {
            return Err(format!("no {filter} in the active listeners yet"));
        }
        let url = format!("http://127.0.0.1:{admin}/config_dump?resource=dynamic_route_configs");
        let (_, routes) = get(&c, &url).await?;
        if !routes.contains(per_route.as_str()) {
            return Err(format!("no {per_route} in the routes yet"));
        }
        Ok(())
    })
    .await
}

/// Status codes of `n` requests to `url`.
async fn codes(c: &reqwest::Client, url: &str, n: u32) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(c, url).await.expect("a response").0);
    }
    out
}

/// Starts `flotilla standalone` (with `extra` flags) serving the base YAML, a backend and an
/// Envoy for the gateway; returns them once `/limited` answers 200 (no policy yet).
async fn serve(extra: Vec<String>) -> (Standalone, u16, Proc, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Standalone::start_in(dir, extra);
    let backend = start_backend("v1").await;
    let port = free_port();
    write_file(&s.yaml, "base.yaml", &base_yaml(port, backend));
    let (envoy, admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    s.expect(
        &format!("http://127.0.0.1:{port}/limited"),
        "the route, before any policy",
        |code, _| code == 200,
    )
    .await;
    (s, port, envoy, admin)
}

/// Serves the base YAML (a new backend, the gateway on a free port) with a global limit of `n`
/// per hour on `/limited`, and writes the rules the store's API then gives to a file, as a
/// `flotilla ratelimit` fleet is configured; (gateway port, rules file).
async fn serve_global_limit(s: &Standalone, n: u32) -> (u16, PathBuf) {
    let backend = start_backend("v1").await;
    let port = free_port();
    write_file(
        &s.yaml,
        "all.yaml",
        &format!(
            "{}---\n{}",
            base_yaml(port, backend),
            policy_yaml(&global_limit(n))
        ),
    );
    let rules = eventually("the rules", T, || async {
        let r = s.api("/api/v1/ratelimit").await?;
        if r["domains"].as_array().is_some_and(|d| !d.is_empty()) {
            Ok(r)
        } else {
            Err(format!("{r}"))
        }
    })
    .await;
    let file = s.dir.path().join("rules.yaml");
    std::fs::write(&file, rules.to_string()).expect("rules file");
    (port, file)
}

/// `flotilla ratelimit` named `name` on 127.0.0.1:`port` with the rules file `rules` and
/// `extra` flags, once it listens.
fn start_ratelimit(
    s: &Standalone,
    name: &str,
    port: u16,
    rules: &Path,
    extra: Vec<String>,
) -> Proc {
    let mut args = vec![
        "ratelimit".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--config".into(),
        rules.display().to_string(),
    ];
    args.extend(extra);
    let proc = Proc::spawn(name, s.dir.path(), &flotilla_bin(), &args);
    wait_tcp(&format!("127.0.0.1:{port}"), Duration::from_secs(20));
    proc
}

/// The sum of the values of stat `name` of the Envoy with admin port `admin` (0 without it).
async fn counter(admin: u16, name: &str) -> u64 {
    let url = format!("http://127.0.0.1:{admin}/stats?filter={name}");
    let (_, text) = get(&client(), &url).await.expect("stats");
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

const LOCAL_CONFIG: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const GLOBAL_FILTER_CONFIG: &str = "envoy.extensions.filters.http.ratelimit.v3.RateLimit";
const GLOBAL_ROUTE_CONFIG: &str = "envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limit_answers_429_after_n_requests() {
    let (s, port, _envoy, admin) = serve(Vec::new()).await;
    write_file(&s.yaml, "policy.yaml", &policy_yaml(&local_limit(N)));
    envoy_has(admin, LOCAL_CONFIG, LOCAL_CONFIG).await;
    let c = fresh_client();
    let limited = format!("http://127.0.0.1:{port}/limited");
    assert_eq!(codes(&c, &limited, N).await, vec![200; N as usize]);
    let (code, body) = get(&c, &limited).await.expect("a response");
    assert_eq!(code, 429, "request N+1: {body}");
    // Each user has a bucket of their own (and does not take from the route's).
    for user in ["alice", "bob"] {
        assert_eq!(get_as_user(&c, &limited, user).await, 200, "{user} 1");
        assert_eq!(get_as_user(&c, &limited, user).await, 200, "{user} 2");
        assert_eq!(get_as_user(&c, &limited, user).await, 429, "{user} 3");
    }
    // The other rule has no policy.
    assert_eq!(
        codes(&c, &format!("http://127.0.0.1:{port}/free"), N + 1).await,
        vec![200; N as usize + 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rate_limit_through_the_embedded_service_answers_429_after_n_requests() {
    let (s, port, _envoy, admin) = serve(Vec::new()).await;
    write_file(
        &s.yaml,
        "policy.yaml",
        &policy_yaml(&global_limit_per_user(N)),
    );
    envoy_has(admin, GLOBAL_FILTER_CONFIG, GLOBAL_ROUTE_CONFIG).await;
    // The embedded service has the same rules the API shows.
    let rules = s.api("/api/v1/ratelimit").await.expect("the rules");
    assert_eq!(rules["domains"][0]["domain"], "local/default/gw", "{rules}");
    let c = fresh_client();
    let limited = format!("http://127.0.0.1:{port}/limited");
    // Counts: (route, alice, bob).
    assert_eq!(get_as_user(&c, &limited, "alice").await, 200); // (1, 1, 0)
    assert_eq!(get_as_user(&c, &limited, "alice").await, 200); // (2, 2, 0)
    assert_eq!(get_as_user(&c, &limited, "alice").await, 429); // (3, 3, 0): alice's
    assert_eq!(get_as_user(&c, &limited, "bob").await, 200); // (4, 3, 1)
    assert_eq!(get(&c, &limited).await.expect("a response").0, 429); // (5): the route's
    assert_eq!(
        codes(&c, &format!("http://127.0.0.1:{port}/free"), 2).await,
        vec![200; 2]
    );

    // A higher limit replaces the rules in place: the same counter, more room.
    write_file(
        &s.yaml,
        "policy.yaml",
        &policy_yaml(&global_limit_per_user(N + 2)),
    );
    eventually("the new limit", T, || async {
        let rules = s.api("/api/v1/ratelimit").await?;
        let n = &rules["domains"][0]["rules"][0]["limit"]["requests_per_unit"];
        if *n == N + 2 {
            Ok(())
        } else {
            Err(format!("{rules}"))
        }
    })
    .await;
    // The embedded service follows the store's published state, which the API reads too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // N+1 were counted (the 429s too, as Envoy asked for them): one more fits.
    assert_eq!(get(&c, &limited).await.expect("a response").0, 200);
    assert_eq!(get(&c, &limited).await.expect("a response").0, 429);
}

/// A client under a `distinct` header selector cannot escape the global limit with a long
/// header value: the service counts it under its digest (it used to refuse values over 1 KiB,
/// and Envoy lets a request through when the service errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rate_limit_holds_for_a_4kib_distinct_header_value() {
    let (s, port, _envoy, admin) = serve(Vec::new()).await;
    write_file(
        &s.yaml,
        "policy.yaml",
        &policy_yaml(&format!(
            "    type: Global
    global:
      rules:
      - clientSelectors: [{{headers: [{{name: x-user, type: Distinct}}]}}]
        limit: {{requests: {N}, unit: Hour}}
"
        )),
    );
    envoy_has(admin, GLOBAL_FILTER_CONFIG, GLOBAL_ROUTE_CONFIG).await;
    let c = fresh_client();
    let limited = format!("http://127.0.0.1:{port}/limited");
    let long_a = "a".repeat(4096);
    let long_b = format!("{}b", "a".repeat(4095));
    for i in 1..=N {
        assert_eq!(get_as_user(&c, &limited, &long_a).await, 200, "request {i}");
    }
    for _ in 0..3 {
        assert_eq!(
            get_as_user(&c, &limited, &long_a).await,
            429,
            "over the limit"
        );
    }
    // Another long value is another client, with its own counter.
    assert_eq!(get_as_user(&c, &limited, &long_b).await, 200);
}

/// `clientSelectors` with `methods` and `path`: only the requests they name are counted (the
/// path may carry a query), the others pass; local and global.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_select_by_method_and_path() {
    let (s, port, _envoy, admin) = serve(Vec::new()).await;
    write_file(
        &s.yaml,
        "policy.yaml",
        &policy_yaml(&format!(
            "    global:
      rules:
      - clientSelectors:
        - methods: [{{value: GET}}]
          path: {{type: PathPrefix, value: /limited/a}}
        limit: {{requests: {N}, unit: Hour}}
    local:
      rules:
      - clientSelectors: [{{path: {{type: Exact, value: /limited/b}}}}]
        limit: {{requests: 1, unit: Hour}}
"
        )),
    );
    envoy_has(admin, GLOBAL_FILTER_CONFIG, GLOBAL_ROUTE_CONFIG).await;
    envoy_has(admin, LOCAL_CONFIG, LOCAL_CONFIG).await;
    let c = fresh_client();
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let post = |p: String| {
        let c = c.clone();
        async move {
            c.post(p)
                .send()
                .await
                .expect("a response")
                .status()
                .as_u16()
        }
    };
    // GET under /limited/a (with or without a query) counts, N of them pass.
    for (i, p) in ["/limited/a", "/limited/a/x", "/limited/a?q=1", "/limited/a"]
        .iter()
        .enumerate()
        .take(N as usize)
    {
        assert_eq!(
            get(&c, &url(p)).await.expect("a response").0,
            200,
            "{i}: {p}"
        );
    }
    assert_eq!(
        get(&c, &url("/limited/a?q=2")).await.expect("a response").0,
        429
    );
    // Another method, or a path outside the prefix, is not selected.
    assert_eq!(post(url("/limited/a")).await, 200);
    assert_eq!(
        get(&c, &url("/limited/ab")).await.expect("a response").0,
        200
    );
    // Local: the exact path, one per hour; a query does not make it another path.
    assert_eq!(
        get(&c, &url("/limited/b")).await.expect("a response").0,
        200
    );
    assert_eq!(
        get(&c, &url("/limited/b?x")).await.expect("a response").0,
        429
    );
    assert_eq!(
        get(&c, &url("/limited/c")).await.expect("a response").0,
        200
    );
}

/// Global limits across a fleet: two Envoys serving the same gateway (sharing its port by
/// reuse-port, so the kernel spreads connections over them), calling two `flotilla ratelimit`
/// instances (Envoy balances over the cluster's two endpoints) that count in one redis-server,
/// with the rules the store's API gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rate_limit_holds_across_two_envoys_and_two_services_sharing_redis() {
    const FLEET_N: u32 = 24;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis_port = free_port();
    let _redis = start_redis(dir.path(), "redis", redis_port);
    let (a, b) = (free_port(), free_port());
    let s = Standalone::start_in(
        dir,
        vec![
            "--ratelimit-service".into(),
            format!("127.0.0.1:{a},127.0.0.1:{b}"),
        ],
    );
    let (port, rules) = serve_global_limit(&s, FLEET_N).await;
    let _services: Vec<Proc> = [a, b]
        .iter()
        .map(|p| {
            let redis = vec!["--redis".into(), format!("127.0.0.1:{redis_port}")];
            start_ratelimit(&s, &format!("ratelimit-{p}"), *p, &rules, redis)
        })
        .collect();
    let xds = [format!("127.0.0.1:{}", s.xds)];
    let (_e1, admin1) = start_envoy(s.dir.path(), "envoy-1", "local/default/gw", &xds);
    let (_e2, admin2) = start_envoy_with(
        s.dir.path(),
        "envoy-2",
        "local/default/gw",
        &xds,
        &["--node-id".into(), "envoy-2".into()],
    );
    for admin in [admin1, admin2] {
        envoy_has(admin, GLOBAL_FILTER_CONFIG, GLOBAL_ROUTE_CONFIG).await;
        // Listening (both bind the gateway's port).
        eventually("the listener", T, || async {
            let (_, l) = get(&client(), &format!("http://127.0.0.1:{admin}/listeners")).await?;
            if l.contains(&format!(":{port}")) {
                Ok(())
            } else {
                Err(l)
            }
        })
        .await;
    }
    let c = fresh_client();
    let limited = format!("http://127.0.0.1:{port}/limited");
    assert_eq!(
        codes(&c, &limited, FLEET_N).await,
        vec![200; FLEET_N as usize]
    );
    for _ in 0..4 {
        assert_eq!(
            get(&c, &limited).await.expect("a response").0,
            429,
            "over the limit, whichever Envoy answers"
        );
    }
    // Both Envoys served, and both services answered.
    // Requests each Envoy's gateway listener (stat prefix `http-PORT`) served.
    let served = format!("http.http-{port}.downstream_rq_total");
    let served1 = counter(admin1, &served).await;
    let served2 = counter(admin2, &served).await;
    assert!(
        served1 > 0 && served2 > 0,
        "requests spread over both Envoys: {served1} and {served2}"
    );
    assert_eq!(served1 + served2, u64::from(FLEET_N) + 4);
    let mut per_service = [0u64; 2];
    for admin in [admin1, admin2] {
        let (_, clusters) = get(&client(), &format!("http://127.0.0.1:{admin}/clusters"))
            .await
            .expect("clusters");
        for (i, p) in [a, b].iter().enumerate() {
            let prefix = format!("ratelimit_cluster::127.0.0.1:{p}::rq_total::");
            per_service[i] += clusters
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix)?.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    assert!(
        per_service.iter().all(|n| *n > 0),
        "both rate limit services were called: {per_service:?}"
    );
}

/// `--ratelimit-service-ca`: a `flotilla ratelimit` serving TLS only (certificates from
/// `flotilla certs`) counts the global limit, so Envoy reached it over TLS (a plaintext call
/// would fail, and Envoy would let every request through); Envoy's handshake stats agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rate_limit_through_a_tls_rate_limit_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = crate::spine::make_certs(dir.path(), "local");
    let rl = free_port();
    let s = Standalone::start_in(
        dir,
        vec![
            "--ratelimit-service".into(),
            format!("127.0.0.1:{rl}"),
            "--ratelimit-service-ca".into(),
            certs.join("ca.pem").display().to_string(),
        ],
    );
    let (port, rules) = serve_global_limit(&s, N).await;
    // The service's certificate: an edge identity of the certificates' CA, for 127.0.0.1.
    let tls = crate::spine::tls_args(&certs, "edge-edge");
    let _service = start_ratelimit(&s, "ratelimit-tls", rl, &rules, tls);
    let (_envoy, admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "local/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    envoy_has(admin, GLOBAL_FILTER_CONFIG, GLOBAL_ROUTE_CONFIG).await;
    let c = fresh_client();
    let limited = format!("http://127.0.0.1:{port}/limited");
    s.expect(&limited, "the route", |code, _| code == 200).await;
    // One request was counted above; N in all fit.
    assert_eq!(
        codes(&c, &limited, N - 1).await,
        vec![200; (N - 1) as usize]
    );
    assert_eq!(get(&c, &limited).await.expect("a response").0, 429);
    let handshakes = counter(admin, "cluster.ratelimit_cluster.ssl.handshake").await;
    assert!(handshakes > 0, "no TLS handshake to the rate limit service");
}

/// With `--ratelimit-fail-closed`, a request under a global limit is refused when the service
/// cannot answer (here: nothing listens where it should be); others are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rate_limit_fails_closed_when_asked_and_the_service_is_down() {
    let nobody = free_port();
    let (s, port, _envoy, admin) = serve(vec![
        "--ratelimit-service".into(),
        format!("127.0.0.1:{nobody}"),
        "--ratelimit-fail-closed".into(),
    ])
    .await;
    write_file(&s.yaml, "policy.yaml", &policy_yaml(&global_limit(N)));
    envoy_has(admin, GLOBAL_FILTER_CONFIG, GLOBAL_ROUTE_CONFIG).await;
    let c = fresh_client();
    assert_eq!(
        get(&c, &format!("http://127.0.0.1:{port}/limited"))
            .await
            .expect("a response")
            .0,
        500
    );
    assert_eq!(
        get(&c, &format!("http://127.0.0.1:{port}/free"))
            .await
            .expect("a response")
            .0,
        200
    );
}
