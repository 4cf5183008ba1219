//! The file agent across a restart of `flotilla standalone` on the same data dir.

use crate::standalone::{Standalone, T};
use crate::support::*;

/// While the process was down, a route file was deleted and another file became malformed.
/// On restart the deletion is applied (the agent's resync no longer waits for every file to
/// parse) while what the malformed file produced before is kept (the resync names it in
/// `keep_origins`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_applies_deletions_and_keeps_what_a_malformed_file_produced() {
    let mut s = Standalone::start();
    let v1 = start_backend("v1").await;
    let port = free_port();
    // infra.yaml: the gateway, the backend and one route; route.yaml: another route.
    write_file(
        &s.yaml,
        "infra.yaml",
        &format!(
            "{}---\n{}---\n{}",
            gateway_yaml("default", "gw", "127.0.0.1", port),
            service_yaml("default", "v1", v1),
            route_yaml("default", "kept", "gw", "/kept", &[("v1", 1)])
        ),
    );
    write_file(
        &s.yaml,
        "route.yaml",
        &route_yaml("default", "app", "gw", "/app", &[("v1", 1)]),
    );
    let xds = [format!("127.0.0.1:{}", s.xds)];
    let base = format!("http://127.0.0.1:{port}");
    {
        let (_envoy, _) = start_envoy(s.dir.path(), "envoy-before", "local/default/gw", &xds);
        for path in ["/app", "/kept"] {
            s.expect(&format!("{base}{path}"), path, |c, _| c == 200)
                .await;
        }
    }
    s.stop();

    std::fs::remove_file(s.yaml.join("route.yaml")).expect("rm route.yaml");
    write_file(
        &s.yaml,
        "infra.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n",
    );
    s.start_again();
    let (_envoy, _) = start_envoy(s.dir.path(), "envoy-after", "local/default/gw", &xds);

    // The deleted route is gone from the store...
    let app = "/api/v1/resources/local/HTTPRoute/default/app";
    eventually("the deleted route to leave the store", T, || async {
        match s.api(app).await {
            Err(e) if e.contains(": 404 ") => Ok(()),
            Err(e) => Err(e),
            Ok(v) => Err(format!("still there: {v}")),
        }
    })
    .await;
    // ...and from Envoy, while the malformed file's objects still route.
    s.expect(&format!("{base}/kept"), "the kept route", |c, b| {
        c == 200 && b == "backend=v1 path=/kept"
    })
    .await;
    s.expect(&format!("{base}/app"), "/app no longer routed", |c, _| {
        c == 404
    })
    .await;
    for key in [
        "/api/v1/resources/local/HTTPRoute/default/kept",
        "/api/v1/resources/local/Gateway/default/gw",
        "/api/v1/resources/local/Service/default/v1",
    ] {
        s.api(key)
            .await
            .unwrap_or_else(|e| panic!("{key} kept: {e}"));
    }
    // The agent said why it kept them.
    let log = s.proc.log_text();
    assert!(log.contains("infra.yaml"), "{log}");
    assert!(log.contains("invalid YAML"), "{log}");
    assert!(s.proc.is_running());
}

/// A route file edited while `flotilla standalone` was down is applied when it starts again on
/// the same data dir. (The restarted embedded bus numbers events from 1 again; the store used
/// to skip every sequence up to the one it had saved, so the edit never applied.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_while_standalone_was_down_is_applied_after_its_restart() {
    let mut s = Standalone::start();
    let v1 = start_backend("v1").await;
    let port = free_port();
    write_file(
        &s.yaml,
        "infra.yaml",
        &format!(
            "{}---\n{}",
            gateway_yaml("default", "gw", "127.0.0.1", port),
            service_yaml("default", "v1", v1),
        ),
    );
    write_file(
        &s.yaml,
        "route.yaml",
        &route_yaml("default", "app", "gw", "/before", &[("v1", 1)]),
    );
    let xds = [format!("127.0.0.1:{}", s.xds)];
    let base = format!("http://127.0.0.1:{port}");
    let (mut envoy, _) = start_envoy(s.dir.path(), "envoy", "local/default/gw", &xds);
    s.expect(&format!("{base}/before"), "the route", |c, _| c == 200)
        .await;
    let applied_before = s.api("/api/v1/revision").await.expect("revision")["eventsApplied"]
        .as_u64()
        .unwrap_or(0);
    s.stop();
    write_file(
        &s.yaml,
        "route.yaml",
        &route_yaml("default", "app", "gw", "/after", &[("v1", 1)]),
    );
    s.start_again();
    // Envoy kept serving its last config while the control plane was away, and now gets the
    // edit.
    s.expect(
        &format!("{base}/after"),
        "the edit made while down",
        |c, b| c == 200 && b == "backend=v1 path=/after",
    )
    .await;
    s.expect(&format!("{base}/before"), "the old path gone", |c, _| {
        c == 404
    })
    .await;
    let v = s.api("/api/v1/revision").await.expect("revision");
    assert!(
        v["eventsApplied"].as_u64().unwrap_or(0) > applied_before,
        "the second life's events were applied: {v}"
    );
    envoy.kill();
}
