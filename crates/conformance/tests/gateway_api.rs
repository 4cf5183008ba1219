//! Runs the ratchet: every test listed in conformance/gateway-api-passing.txt must pass through
//! flotilla standalone and a real Envoy. The full table (and the list of passing tests that are
//! not yet listed) is `cargo run -p flotilla-conformance` (see .ci/run).

use std::process::Command;

#[test]
fn ratchet_listed_gateway_api_tests_pass() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-conformance"))
        .arg("--ratchet-only")
        .output()
        .expect("run flotilla-conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "flotilla-conformance --ratchet-only failed ({}); see the FAIL lines above",
        out.status
    );
}
