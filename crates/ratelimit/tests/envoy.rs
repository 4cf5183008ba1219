//! Through a real Envoy: the HTTP ratelimit filter calls the service, requests beyond N per
//! minute for one descriptor value get 429, another value is unaffected.

mod support;

use flotilla_ratelimit::{Backend, FailureMode, MemoryCounter};
use support::*;

#[tokio::test]
async fn envoy_answers_429_beyond_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = start_backend().await;
    let svc = start_service(
        &per_user_config(3),
        Backend::new(MemoryCounter::new(1000), FailureMode::Open),
    )
    .await;
    let port = free_port();
    let envoy = start_envoy(dir.path(), "envoy", port, backend, svc.port);
    let c = http();
    wait_for_fresh_minute(15).await;

    let mut alice = Vec::new();
    for _ in 0..5 {
        alice.push(get_as(&c, port, "alice").await);
    }
    assert_eq!(
        alice,
        [200, 200, 200, 429, 429],
        "envoy log:\n{}",
        envoy.log_text()
    );
    // Another value of the distinct header: its own budget.
    let mut bob = Vec::new();
    for _ in 0..4 {
        bob.push(get_as(&c, port, "bob").await);
    }
    assert_eq!(bob, [200, 200, 200, 429]);
    // A request without the header produces no descriptor (Envoy skips the entry) and is
    // not limited.
    let plain = c
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("GET")
        .status()
        .as_u16();
    assert_eq!(plain, 200);
}
