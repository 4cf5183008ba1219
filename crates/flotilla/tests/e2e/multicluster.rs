//! Two clusters through the spine (two ingest agents, one NATS stream, the 3-node store, the
//! edge): a Service exported from both (Multi-Cluster Services) is one ServiceImport backend
//! whose remote endpoints take over in the real Envoy when the local ones go unready.

use crate::spine::Spine;
use crate::support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A Service exported with the Multi-Cluster Services API (ServiceExport + Service + slice).
fn exported(ns: &str, name: &str, target: u16, ready: bool) -> String {
    format!(
        "apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: {ns}}}
---
{}",
        service_yaml_ready(ns, name, target, ready)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_import_fails_over_to_the_other_cluster() {
    let mut s = Spine::start("east");
    let west_dir = s.dir.path().join("west-yaml");
    std::fs::create_dir_all(&west_dir).expect("west dir");
    let _west = Proc::spawn(
        "ingest-west",
        s.dir.path(),
        &flotilla_bin(),
        &[
            "ingest".into(),
            "--cluster".into(),
            "west".into(),
            "--dir".into(),
            west_dir.display().to_string(),
            "--nats".into(),
            s.nats_url.clone(),
        ],
    );
    let east_port = start_backend("east").await;
    let west_port = start_backend("west").await;
    let port = free_port();
    write_file(
        &s.yaml,
        "gateway.yaml",
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
    write_file(
        &s.yaml,
        "pool.yaml",
        &exported("default", "pool", east_port, true),
    );
    write_file(
        &west_dir,
        "pool.yaml",
        &exported("default", "pool", west_port, true),
    );
    let _leader = s.leader().await;
    let (_envoy, _admin) = start_envoy(
        s.dir.path(),
        "envoy",
        "east/default/gw",
        &[format!("127.0.0.1:{}", s.xds)],
    );
    let url = format!("http://127.0.0.1:{port}/x");
    let only = |want: &'static str| only_answering(&s.http, &url, want, T);
    // Both clusters' endpoints are known; the local ones take all the traffic.
    only("east").await;
    // The local endpoint goes unready: Envoy fails over to the west cluster's.
    write_file(
        &s.yaml,
        "pool.yaml",
        &exported("default", "pool", east_port, false),
    );
    only("west").await;
    // Back to ready: traffic returns home.
    write_file(
        &s.yaml,
        "pool.yaml",
        &exported("default", "pool", east_port, true),
    );
    only("east").await;
    // West stops exporting while east is unready: nothing healthy is left.
    std::fs::remove_file(west_dir.join("pool.yaml")).expect("rm west export");
    write_file(
        &s.yaml,
        "pool.yaml",
        &exported("default", "pool", east_port, false),
    );
    s.expect(&url, "no healthy endpoint anywhere", |c, _| c >= 500)
        .await;
    let stats = s.edge_stats().await.expect("edge stats");
    assert_eq!(stats["nacks"], 0, "Envoy NACKed: {stats}");
}
