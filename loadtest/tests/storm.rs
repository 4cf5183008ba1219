//! A connect storm: 10,000 simulated delta proxies, each proving its gateway with a token,
//! connect to one edge at once (no client-side pacing). Every one must get its config on its
//! first connection, and the kernel must not drop a SYN for a full accept queue (the edge
//! listens with a backlog of 4,096 and accepts without pausing; a backlog of 128 overflowed
//! thousands of times and left proxies waiting on SYN retransmits).

mod common;

/// TcpExtListenOverflows of this machine (all listeners).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if let Some(i) = names.iter().position(|n| *n == "ListenOverflows") {
            return values.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    0
}

#[test]
fn ten_thousand_proxies_connecting_at_once_all_sync_on_their_first_attempt() {
    let out = tempfile::tempdir().expect("tempdir");
    let scenario = out.path().join("storm.yaml");
    std::fs::write(
        &scenario,
        "name: storm-test
clusters: [local]
topology: standalone
gateways_per_cluster: 10
routes_per_gateway: 3
services_per_cluster: 3
proxies_per_gateway: 1000
sotw_percent: 0
real_envoys: 0
max_concurrent_connects: 10000
warmup_timeout: 180s
churn: {via: files, per_second: 2, duration: 4s}
",
    )
    .expect("write scenario");
    let overflows = listen_overflows();
    let (code, stdout, stderr) = common::run_loadtest(&[
        "--scenario".into(),
        scenario.display().to_string(),
        "--seed".into(),
        "8".into(),
        "--out".into(),
        out.path().display().to_string(),
    ]);
    let overflowed = listen_overflows() - overflows;
    assert_eq!(code, 0, "harness failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("storm-test.json")).expect("JSON report"),
    )
    .expect("report is JSON");
    eprintln!("{stdout}");
    assert_eq!(report["proxies"]["total"], 10_000, "{stdout}");
    assert_eq!(
        report["proxies"]["reconnects"], 0,
        "proxies had to reconnect:\n{stdout}"
    );
    assert_eq!(report["convergence"]["unconverged"], 0, "{stdout}");
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["ok"] == true), "{stdout}");
    assert_eq!(
        overflowed, 0,
        "the kernel dropped {overflowed} connections for a full accept queue"
    );
}
