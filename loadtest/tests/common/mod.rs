//! Shared by the harness's integration tests: where the binaries are.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `flotilla` binary of this target dir; built if missing (e.g. `cargo test -p
/// flotilla-loadtest` alone does not build other packages' binaries).
pub fn flotilla_bin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_flotilla-loadtest"));
    let bin = exe.with_file_name("flotilla");
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "flotilla", "--bin", "flotilla"])
            .status()
            .expect("running cargo build -p flotilla");
        assert!(status.success(), "cargo build -p flotilla failed");
    }
    assert!(bin.is_file(), "no flotilla binary at {}", bin.display());
    bin
}

pub fn loadtest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flotilla-loadtest"))
}

pub fn nats_bin() -> PathBuf {
    PathBuf::from(
        std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".into()),
    )
}

/// Runs the harness with `args`; returns (exit code, stdout, stderr).
pub fn run_loadtest(args: &[String]) -> (i32, String, String) {
    let out = Command::new(loadtest_bin())
        .args(args)
        .arg("--flotilla")
        .arg(flotilla_bin())
        .arg("--nats-server")
        .arg(nats_bin())
        .arg("--no-progress")
        .output()
        .expect("running flotilla-loadtest");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
