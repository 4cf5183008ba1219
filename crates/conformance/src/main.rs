//! `flotilla-conformance`: runs the Gateway API conformance table through flotilla standalone and
//! real Envoys; exits non-zero if a test listed in the ratchet file does not pass.

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: flotilla-conformance [--suite DIR] [--flotilla BIN] [--envoy BIN] \
[--ratchet FILE | --no-ratchet] [--ratchet-only] [--write-ratchet] [--only NAME[,NAME...]] \
[--filter SUBSTRING] [--budget SECS] [-v]";

fn main() -> ExitCode {
    let mut opts = match flotilla_conformance::default_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("flotilla-conformance: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut ratchet_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "--suite" => opts.suite = val().into(),
            "--flotilla" => opts.flotilla = val().into(),
            "--envoy" => opts.envoy = val().into(),
            "--ratchet" => opts.ratchet = Some(val().into()),
            "--no-ratchet" => opts.ratchet = None,
            "--ratchet-only" => ratchet_only = true,
            "--write-ratchet" => opts.write_ratchet = true,
            "--only" => opts
                .only
                .extend(val().split(',').filter(|s| !s.is_empty()).map(String::from)),
            "--filter" => opts.filter = Some(val()),
            "--budget" => opts.budget = Duration::from_secs(val().parse().unwrap_or(900)),
            "-v" | "--verbose" => opts.verbose = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if ratchet_only {
        let listed = opts
            .ratchet
            .as_deref()
            .map(flotilla_conformance::read_ratchet)
            .unwrap_or_default();
        if listed.is_empty() {
            println!("0 passed, 0 failed (ratchet is empty)");
            return ExitCode::SUCCESS;
        }
        opts.only.extend(listed);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flotilla-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let res = rt.block_on(async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = flotilla_conformance::run(opts) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
            _ = term => None,
        }
    });
    // Dropping the runtime kills every child (kill_on_drop) and stops the echo servers.
    drop(rt);
    match res {
        None => {
            eprintln!("flotilla-conformance: interrupted");
            ExitCode::from(130)
        }
        Some(Err(e)) => {
            eprintln!("flotilla-conformance: {e:#}");
            ExitCode::from(2)
        }
        Some(Ok(s)) if !s.regressions.is_empty() => ExitCode::FAILURE,
        Some(Ok(_)) => ExitCode::SUCCESS,
    }
}
