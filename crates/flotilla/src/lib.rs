//! Wiring for the `flotilla` binary: every component (ingest, store, edge, standalone) is
//! assembled here from the library crates; `main.rs` only parses arguments.

pub mod api_auth;
pub mod bootstrap;
pub mod certs_cmd;
pub mod cli;
pub mod ctl;
pub mod natsconf;
pub mod runtime;
pub mod telemetry;
pub mod translate_cmd;
