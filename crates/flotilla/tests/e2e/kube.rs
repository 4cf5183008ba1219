//! The Kubernetes source end to end: `flotilla ingest --kubernetes` against the fake API
//! server (`flotilla_testing::kube_api`, the real HTTP API driven by kube-rs unchanged), the
//! real NATS stream, the 3-node store, the edge and a real Envoy. Objects are written into the
//! fake as kubectl would (`put_object` / `delete_object`).

use crate::spine::Spine;
use crate::support::*;
use flotilla_testing::kube_api::FakeApiServer;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A kubeconfig for `fake` (plain HTTP, no credentials), written under `dir`.
fn kubeconfig(dir: &Path, name: &str, fake: &FakeApiServer) -> String {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]
users: [{{name: test, user: {{}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: test, namespace: default}}}}]
current-context: fake
",
            fake.url()
        ),
    )
    .expect("write kubeconfig");
    path.display().to_string()
}

/// `flotilla ingest --cluster CLUSTER --kubernetes --kubeconfig ...` publishing to the spine.
fn kube_agent(s: &Spine, cluster: &str, fake: &FakeApiServer) -> Proc {
    let kc = kubeconfig(s.dir.path(), cluster, fake);
    Proc::spawn(
        &format!("kube-ingest-{cluster}"),
        s.dir.path(),
        &flotilla_bin(),
        &[
            "ingest".into(),
            "--cluster".into(),
            cluster.into(),
            "--kubernetes".into(),
            "--kubeconfig".into(),
            kc,
            "--lease-namespace".into(),
            "default".into(),
            "--lease-name".into(),
            "flotilla-ingest".into(),
            "--nats".into(),
            s.nats_url.clone(),
        ],
    )
}

/// Puts every document of `yaml` into `fake`.
fn put_yaml(fake: &FakeApiServer, yaml: &str) {
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("yaml document");
        if v.is_null() {
            continue;
        }
        fake.put_object(v).expect("put_object");
    }
}

/// Whether the store (node `leader`) holds `cluster/kind/namespace/name`.
async fn in_store(s: &Spine, leader: usize, path: &str) -> Result<bool, String> {
    let url = format!(
        "{}://127.0.0.1:{}/api/v1/resources/{path}",
        s.scheme(),
        s.api[leader]
    );
    let (code, body) = get_as(&s.http, &url, Some(&s.tokens.reader)).await?;
    match code {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(format!("GET {url}: {code} {body}")),
    }
}

async fn wait_in_store(s: &Spine, leader: usize, path: &str, present: bool) {
    let what = format!(
        "{path} {} the store",
        if present { "in" } else { "gone from" }
    );
    eventually(&what, T, || async {
        if in_store(s, leader, path).await? == present {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
}

/// Prints the spine's and the agents' log tails if the test panics while this is alive.
struct Dump<'a> {
    spine: &'a Spine,
    agents: &'a [&'a str],
}

impl Drop for Dump<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.spine.dump_logs();
        for a in self.agents {
            let name = format!("kube-ingest-{a}");
            let text = std::fs::read_to_string(self.spine.dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("==== {name} ====");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Test 1, 3 and 6: a Gateway, HTTPRoute, Service and EndpointSlice put into the API server
/// reach a real Envoy; a route change is followed; a malformed HTTPRoute is skipped with a
/// log line naming it while the rest flows; a status-only change publishes nothing; a
/// deleted route answers 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_changes_reach_envoy() {
    let fake = FakeApiServer::start().await.expect("fake API server");
    fake.install_gateway_api_crds();
    let mut s = Spine::start("files");
    let agent = kube_agent(&s, "east", &fake);
    let backend = start_backend("v1").await;
    let port = free_port();
    put_yaml(&fake, &gateway_yaml("default", "gw", "127.0.0.1", port));
    put_yaml(&fake, &service_yaml("default", "v1", backend));
    put_yaml(
        &fake,
        &route_yaml("default", "app", "gw", "/one", &[("v1", 1)]),
    );
    let leader = s.leader().await;
    let (_envoy, _admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "east/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let base = format!("http://127.0.0.1:{port}");
    let _dump = Dump {
        spine: &s,
        agents: &["east"],
    };
    s.expect(&format!("{base}/one"), "route /one served", |c, b| {
        c == 200 && b == "backend=v1 path=/one"
    })
    .await;

    // The route's path changes: Envoy follows.
    put_yaml(
        &fake,
        &route_yaml("default", "app", "gw", "/two", &[("v1", 1)]),
    );
    s.expect(&format!("{base}/two"), "route /two served", |c, _| c == 200)
        .await;
    s.expect(&format!("{base}/one"), "route /one gone", |c, _| c == 404)
        .await;

    // A malformed HTTPRoute (rules is not a list) is skipped; a good one after it flows.
    let mut bad: Value =
        serde_yaml_ng::from_str(&route_yaml("default", "bad", "gw", "/bad", &[("v1", 1)]))
            .expect("yaml");
    bad["spec"]["rules"] = json!("not a list");
    fake.put_object(bad).expect("put bad route");
    put_yaml(
        &fake,
        &route_yaml("default", "three", "gw", "/three", &[("v1", 1)]),
    );
    s.expect(&format!("{base}/three"), "route /three served", |c, _| {
        c == 200
    })
    .await;
    assert!(!in_store(&s, leader, "east/HTTPRoute/default/bad")
        .await
        .expect("api"));
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("does not parse")
            && l.contains("default/bad")
            && l.contains("HTTPRoute")),
        "no log line names the malformed route:\n{log}"
    );
    // ... and a Warning Event on it, as `kubectl describe` shows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let event = loop {
        let found = fake
            .objects("events")
            .into_iter()
            .find(|e| e["involvedObject"]["name"] == "bad");
        if let Some(e) = found {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Warning Event on HTTPRoute default/bad"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["reason"], "Invalid", "{event}");
    assert_eq!(event["involvedObject"]["kind"], "HTTPRoute", "{event}");
    assert_eq!(event["metadata"]["namespace"], "default", "{event}");
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("rules")),
        "{event}"
    );

    // The whole loop back: the store's statuses reach the objects in the API server, written
    // by the agent holding the Lease (server-side apply, Envoy Gateway's field manager).
    let accepted = |o: &Value| -> bool {
        o["status"]["parents"][0]["conditions"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Accepted" && c["status"] == "True")
            })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let route = loop {
        let r = fake.get_object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "default",
            "three",
        );
        if let Some(r) = r.filter(|r| accepted(r)) {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Accepted status written back to HTTPRoute default/three:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        route["status"]["parents"][0]["controllerName"],
        "gateway.envoyproxy.io/gatewayclass-controller"
    );
    let managers: Vec<&str> = route["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["subresource"] == "status")
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["envoy-gateway"], "{route}");
    let gw = fake
        .get_object("gateway.networking.k8s.io/v1", "Gateway", "default", "gw")
        .expect("gateway in the fake");
    assert!(
        gw["status"]["conditions"].as_array().is_some_and(|cs| cs
            .iter()
            .any(|c| c["type"] == "Programmed" && c["status"] == "True")),
        "no Programmed status on the Gateway: {gw}"
    );
    // The malformed route never reached the store: nothing speaks for it.
    let bad = fake
        .get_object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "default",
            "bad",
        )
        .expect("bad route in the fake");
    assert!(bad["status"].is_null(), "{bad}");

    // A status-only change (what Flotilla's own status write-back does) publishes nothing.
    let (before, _) = s.stream_state().await.expect("stream state");
    let mut route = fake
        .get_object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "default",
            "app",
        )
        .expect("route in the fake");
    route["status"] = json!({"parents": [{"parentRef": {"name": "gw"}, "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""}]}]});
    let rv_before = fake.resource_version();
    fake.put_object(route).expect("status write");
    assert!(
        fake.resource_version() > rv_before,
        "the status write changed nothing in the fake"
    );
    // A later spec change is published, so the status write has certainly been seen by then.
    put_yaml(
        &fake,
        &route_yaml("default", "four", "gw", "/four", &[("v1", 1)]),
    );
    s.expect(&format!("{base}/four"), "route /four served", |c, _| {
        c == 200
    })
    .await;
    let (after, _) = s.stream_state().await.expect("stream state");
    assert_eq!(
        after,
        before + 1,
        "a status-only change must publish nothing (only the route 'four' upsert)"
    );

    // Deleted: 404.
    fake.delete_object(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "default",
        "app",
    );
    s.expect(&format!("{base}/two"), "route /two deleted", |c, _| {
        c == 404
    })
    .await;
    let stats = s.edge_stats().await.expect("edge stats");
    assert_eq!(stats["nacks"], 0, "Envoy NACKed: {stats}");
}

/// Tests 2, 4 and 5 at the store: a relist after 410 loses no deletion (and deletes nothing
/// of other kinds), an agent restart loses no deletion, a CRD installed after start is
/// picked up, and Secrets ship only while referenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_crds_and_secrets() {
    let fake = FakeApiServer::start().await.expect("fake API server");
    fake.install_gateway_api_crds();
    let mut s = Spine::start("files");
    let mut agent = kube_agent(&s, "east", &fake);
    put_yaml(
        &fake,
        &gateway_yaml("default", "gw", "127.0.0.1", free_port()),
    );
    put_yaml(
        &fake,
        &route_yaml("default", "keep", "gw", "/k", &[("v1", 1)]),
    );
    put_yaml(
        &fake,
        &route_yaml("default", "doomed", "gw", "/d", &[("v1", 1)]),
    );
    let leader = s.leader().await;
    let _dump = Dump {
        spine: &s,
        agents: &["east"],
    };
    wait_in_store(&s, leader, "east/HTTPRoute/default/doomed", true).await;
    wait_in_store(&s, leader, "east/Gateway/default/gw", true).await;

    // 2. Every watch is dropped while a route is deleted and the history compacted: the
    // watches cannot resume (410) and relist.
    let lists = |fake: &FakeApiServer| {
        fake.requests()
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && r.path.ends_with("/httproutes")
                    && !r.query.contains("watch=true")
            })
            .count()
    };
    let lists_before = lists(&fake);
    // The watches' first attempts to resume fail (500, backoff), the route is deleted, then
    // the history is compacted: resuming from the old resourceVersion is 410 Expired.
    fake.fail_next(20, 500);
    fake.close_watches();
    fake.delete_object(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "default",
        "doomed",
    );
    fake.compact();
    wait_in_store(&s, leader, "east/HTTPRoute/default/doomed", false).await;
    assert!(in_store(&s, leader, "east/HTTPRoute/default/keep")
        .await
        .expect("api"));
    assert!(in_store(&s, leader, "east/Gateway/default/gw")
        .await
        .expect("api"));
    assert!(
        lists(&fake) > lists_before,
        "no relist of HTTPRoutes reached the fake: {:?}",
        fake.requests()
            .iter()
            .filter(|r| r.path.contains("httproutes"))
            .collect::<Vec<_>>()
    );

    // Restart: a route deleted while the agent is down is deleted by the new agent's resync.
    agent.kill();
    fake.delete_object(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "default",
        "keep",
    );
    agent = kube_agent(&s, "east", &fake);
    wait_in_store(&s, leader, "east/HTTPRoute/default/keep", false).await;
    assert!(in_store(&s, leader, "east/Gateway/default/gw")
        .await
        .expect("api"));

    // 4. A CRD installed after start: its objects flow once installed.
    assert!(!in_store(&s, leader, "east/ServiceExport/default/pool")
        .await
        .expect("api"));
    fake.install_crd(
        "multicluster.x-k8s.io",
        "v1alpha1",
        "ServiceExport",
        "serviceexports",
        true,
    );
    put_yaml(
        &fake,
        "apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: pool, namespace: default}
",
    );
    wait_in_store(&s, leader, "east/ServiceExport/default/pool", true).await;
    // The CRD is deleted: its watcher stops and its objects are deleted from the store.
    fake.delete_object(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "",
        "serviceexports.multicluster.x-k8s.io",
    )
    .expect("CRD deleted");
    wait_in_store(&s, leader, "east/ServiceExport/default/pool", false).await;

    // 5. Secrets: an unreferenced one is not published...
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "cert", "namespace": "default"},
        "data": {"tls.crt": "", "tls.key": ""}});
    fake.put_object(secret).expect("put secret");
    put_yaml(
        &fake,
        &route_yaml("default", "sentinel", "gw", "/s", &[("v1", 1)]),
    );
    wait_in_store(&s, leader, "east/HTTPRoute/default/sentinel", true).await;
    assert!(
        !in_store(&s, leader, "east/Secret/default/cert")
            .await
            .expect("api"),
        "an unreferenced Secret was published"
    );
    // ...referencing it from a Gateway listener publishes it...
    let mut gw: Value =
        serde_yaml_ng::Deserializer::from_str(&gateway_yaml("default", "gw", "127.0.0.1", 8443))
            .filter_map(|d| serde::Deserialize::deserialize(d).ok())
            .find(|v: &Value| v["kind"] == "Gateway")
            .expect("gateway yaml");
    gw["spec"]["listeners"] = json!([{"name": "https", "port": 8443, "protocol": "HTTPS",
        "tls": {"certificateRefs": [{"name": "cert"}]}}]);
    fake.put_object(gw.clone()).expect("gateway with cert");
    wait_in_store(&s, leader, "east/Secret/default/cert", true).await;
    // ...and removing the reference deletes it from the store.
    gw["spec"]["listeners"] = json!([{"name": "http", "port": 8443, "protocol": "HTTP"}]);
    fake.put_object(gw).expect("gateway without cert");
    wait_in_store(&s, leader, "east/Secret/default/cert", false).await;
    drop(agent);
}

/// Multi-Cluster Services through two agents: `east` and `west` (two API servers) export
/// Service `pool`; east's Gateway routes to the ServiceImport. When east's EndpointSlice
/// loses its ready endpoint, the real Envoy fails over to west's; back when it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_fail_over_through_service_import() {
    let east = FakeApiServer::start().await.expect("east API server");
    let west = FakeApiServer::start().await.expect("west API server");
    for f in [&east, &west] {
        f.install_gateway_api_crds();
        f.install_envoy_gateway_crds();
    }
    let mut s = Spine::start("files");
    let _east_agent = kube_agent(&s, "east", &east);
    let _west_agent = kube_agent(&s, "west", &west);
    let east_port = start_backend("east").await;
    let west_port = start_backend("west").await;
    let port = free_port();
    let export = |target: u16, ready: bool| {
        format!(
            "apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: pool, namespace: default}}
---
{}",
            service_yaml_ready("default", "pool", target, ready)
        )
    };
    put_yaml(
        &east,
        &format!(
            "{}---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {{name: pool, namespace: default}}
spec: {{type: ClusterSetIP, ports: [{{name: http, port: 80, protocol: TCP}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{group: multicluster.x-k8s.io, kind: ServiceImport, name: pool, port: 80}}]
",
            gateway_yaml("default", "gw", "127.0.0.1", port)
        ),
    );
    put_yaml(&east, &export(east_port, true));
    put_yaml(&west, &export(west_port, true));
    let _leader = s.leader().await;
    let (_envoy, _admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "east/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let _dump = Dump {
        spine: &s,
        agents: &["east", "west"],
    };
    let url = format!("http://127.0.0.1:{port}/x");
    let only = |want: &'static str| only_answering(&s.http, &url, want, T);
    only("east").await;
    // East's endpoint goes unready (its EndpointSlice changes in east's API server).
    put_yaml(&east, &export(east_port, false));
    only("west").await;
    put_yaml(&east, &export(east_port, true));
    only("east").await;
    let stats = s.edge_stats().await.expect("edge stats");
    assert_eq!(stats["nacks"], 0, "Envoy NACKed: {stats}");
}
