//! `flotilla ratelimit`: the rate limit service as its own process, its rules from a file that
//! is reread while it serves.

use crate::support::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use std::time::Duration;

fn rules(per_hour: u32) -> String {
    format!(
        "domains:
- domain: edge
  rules:
  - descriptor: [{{key: user, value: alice}}]
    limit: {{requests_per_unit: {per_hour}, unit: hour}}
"
    )
}

async fn ask(port: u16, user: &str) -> Result<i32, String> {
    let mut c = RateLimitServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|e| e.to_string())?;
    let r = c
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![Entry {
                    key: "user".into(),
                    value: user.into(),
                }],
                ..Default::default()
            }],
            hits_addend: 1,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.into_inner().overall_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_service_limits_and_rereads_its_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yaml");
    write_file(dir.path(), "rules.yaml", &rules(3));
    let port = free_port();
    let p = Proc::spawn(
        "ratelimit",
        dir.path(),
        &flotilla_bin(),
        &[
            "ratelimit".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--config".into(),
            file.display().to_string(),
        ],
    );
    let ok = Code::Ok as i32;
    let over = Code::OverLimit as i32;
    let first = eventually("the service", Duration::from_secs(20), || {
        ask(port, "alice")
    })
    .await;
    assert_eq!(first, ok);
    assert_eq!(ask(port, "alice").await, Ok(ok));
    assert_eq!(ask(port, "alice").await, Ok(ok));
    assert_eq!(
        ask(port, "alice").await,
        Ok(over),
        "the 4th of 3 per hour (a window boundary is unlikely inside the test)"
    );
    assert_eq!(ask(port, "bob").await, Ok(ok), "another user has no limit");

    // A broken file keeps the rules in force, and says so.
    write_file(
        dir.path(),
        "rules.yaml",
        "domains: [{domain: edge, rules: [{limit: 7}]}]",
    );
    eventually(
        "the refusal in the log",
        Duration::from_secs(10),
        || async {
            if p.log_text().contains("rate limit rules not replaced") {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    assert_eq!(ask(port, "alice").await, Ok(over));

    // Raised to 10 per hour: once the file is reread, alice (5 hits so far) gets through.
    // (Asking while waiting would count hits of its own: wait for the log line instead.)
    let rereads = || p.log_text().matches("rate limit rules reread").count();
    let before = rereads();
    write_file(dir.path(), "rules.yaml", &rules(10));
    eventually("the new rules", Duration::from_secs(10), || async {
        if rereads() > before {
            Ok(())
        } else {
            Err("not reread yet".to_string())
        }
    })
    .await;
    assert_eq!(ask(port, "alice").await, Ok(ok));
}
