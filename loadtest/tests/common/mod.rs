//! Shared by the harness's integration tests: where the binaries are.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `flotilla` binary of this target dir (`cargo test --workspace` builds it), else
/// `$FLOTILLA_BIN`. Not built from here: a nested cargo would wait on the lock of the
/// cargo running this test.
pub fn flotilla_bin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_flotilla-loadtest"));
    let bin = exe.with_file_name("flotilla");
    if bin.is_file() {
        return bin;
    }
    if let Some(p) = std::env::var_os("FLOTILLA_BIN") {
        return PathBuf::from(p);
    }
    panic!(
        "no flotilla binary at {}: run `cargo build -p flotilla` first (or cargo test --workspace), or set FLOTILLA_BIN",
        bin.display()
    );
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
