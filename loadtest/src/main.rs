//! `flotilla-loadtest`: parse arguments, run (see `cli`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    flotilla_loadtest::cli::run(flotilla_loadtest::cli::Cli::parse())
}
