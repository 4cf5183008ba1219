//! The `flotilla` binary: parse arguments, run the chosen component.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = flotilla::cli::Cli::parse();
    flotilla::run(cli)
}
