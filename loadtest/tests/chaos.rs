//! The chaos run: faults at random (kill -9 of stores, the leader, edges, agents; leader
//! SIGSTOP; nats-server and standalone restarts; poison inputs) while routes and services
//! churn, then the checks (no event lost or applied twice, every replica's digest equals the
//! fold of the files, every proxy holds the final state, revisions never go back, no intruder
//! proxy is served another gateway), every part running with TLS.
//!
//! Two minutes by default; `LOADTEST_CHAOS_DURATION=30m cargo test -p flotilla-loadtest --test
//! chaos` runs it as long as asked (`LOADTEST_SEED` repeats a run).

mod common;

#[test]
fn chaos_run_passes_every_check() {
    let out = tempfile::tempdir().expect("tempdir");
    let duration = std::env::var("LOADTEST_CHAOS_DURATION").unwrap_or_else(|_| "2m".into());
    // With certificates: Raft between the stores and the edges' watch over mTLS, proxies and the
    // API over TLS, through every kill, stop and restart.
    let mut args = vec![
        "--chaos".to_string(),
        "--tls".into(),
        "--preset".into(),
        "smoke".into(),
        "--duration".into(),
        duration,
        "--out".into(),
        out.path().display().to_string(),
    ];
    if let Ok(seed) = std::env::var("LOADTEST_SEED") {
        args.extend(["--seed".into(), seed]);
    }
    let (code, stdout, stderr) = common::run_loadtest(&args);
    // Keep the evidence where a developer can find it after the temp dir is gone.
    let keep = std::env::temp_dir().join("flotilla-loadtest-chaos-last.txt");
    let _ = std::fs::write(&keep, format!("{stdout}\n---- stderr ----\n{stderr}"));
    assert_ne!(code, 2, "the harness itself failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("chaos-smoke.json")).expect("JSON report"),
    )
    .expect("report is JSON");
    let failed: Vec<String> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != true)
        .map(|c| format!("{}: {}", c["name"], c["detail"]))
        .collect();
    assert!(
        failed.is_empty() && code == 0,
        "chaos checks failed (output kept in {}):\n{}\n\n{stdout}",
        keep.display(),
        failed.join("\n")
    );
}
