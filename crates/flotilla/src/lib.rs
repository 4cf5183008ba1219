//! Wiring for the `flotilla` binary: every component (ingest, store, edge, standalone) is
//! assembled here from the library crates; `main.rs` only parses arguments, [`cli`] only
//! declares them, and [`run`] dispatches to the module of each command.

pub mod api_auth;
pub mod bootstrap;
pub mod certs_cmd;
pub mod cli;
pub mod ctl;
pub mod natsconf;
pub mod ratelimit_cmd;
pub mod runtime;
pub mod serve;
pub mod telemetry;
pub mod translate_cmd;

use cli::{Cli, Command};
use std::process::ExitCode;

/// Runs the command; logs the error chain and exits non-zero on failure.
pub fn run(cli: Cli) -> ExitCode {
    crate::telemetry::init_logging(cli.log_json);
    let result = match cli.command {
        Command::Bootstrap(a) => crate::bootstrap::with_token_key(
            &a.gateway,
            &a.xds,
            a.admin_port,
            a.node_id.as_deref(),
            a.token_key.as_deref(),
        )
        .and_then(|mut b| {
            if let Some(ca) = &a.tls_ca {
                crate::bootstrap::set_tls(
                    &mut b,
                    ca,
                    a.tls_cert.as_deref().zip(a.tls_key.as_deref()),
                )?;
            }
            println!("{}", serde_json::to_string_pretty(&b)?);
            Ok(())
        }),
        Command::Translate(a) => {
            crate::translate_cmd::run(&a.file, a.flags.as_deref(), &a.cluster, a.output, a.to)
        }
        Command::Ctl(a) => crate::ctl::run(a),
        Command::Certs(a) => crate::certs_cmd::run(&a),
        Command::Token(a) => crate::api_auth::token(a),
        Command::NatsConfig(a) => crate::natsconf::run(a),
        other => crate::runtime::run_async(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
