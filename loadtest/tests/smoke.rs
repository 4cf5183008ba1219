//! A short load run of the harness through real processes: nats-server, three stores, two
//! edges, two file agents, a few hundred simulated proxies (delta and SotW) and two real
//! Envoys whose config must agree with the simulated proxies.

mod common;

#[test]
fn smoke_run_converges_and_real_envoys_agree() {
    let out = tempfile::tempdir().expect("tempdir");
    let scenario = out.path().join("smoke.yaml");
    std::fs::write(
        &scenario,
        "name: smoke-test
clusters: [east, west]
gateways_per_cluster: 2
routes_per_gateway: 3
services_per_cluster: 3
proxies_per_gateway: 75
sotw_percent: 20
edges: 2
real_envoys: 2
churn: {via: files, per_second: 4, duration: 8s}
",
    )
    .expect("write scenario");
    let (code, stdout, stderr) = common::run_loadtest(&[
        "--scenario".into(),
        scenario.display().to_string(),
        "--seed".into(),
        "42".into(),
        "--out".into(),
        out.path().display().to_string(),
    ]);
    assert_eq!(code, 0, "harness failed:\n{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("smoke-test.json")).expect("JSON report"),
    )
    .expect("report is JSON");
    assert_eq!(report["proxies"]["total"], 300, "{stdout}");
    assert_eq!(report["proxies"]["sotw"], 60);
    assert!(
        report["convergence"]["changes"].as_u64().unwrap_or(0) >= 20,
        "{stdout}"
    );
    assert_eq!(report["convergence"]["unconverged"], 0);
    assert!(
        report["convergence"]["all_proxies"]["p50"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.iter().all(|c| c["ok"] == true), "{stdout}");
    assert!(
        checks
            .iter()
            .any(|c| c["name"].as_str().unwrap_or("").contains("real Envoys")),
        "{stdout}"
    );
    assert!(stdout.contains("every proxy ACKed"), "{stdout}");
    let svg = std::fs::read_to_string(out.path().join("smoke-test.svg")).expect("SVG");
    assert!(svg.contains("<polyline"), "{svg}");
    // The processes' cost was read from /proc.
    let procs = report["processes"].as_array().expect("processes");
    assert!(procs
        .iter()
        .any(|p| p["role"] == "store" && p["peak_rss_mib"].as_f64().unwrap_or(0.0) > 1.0));
}
