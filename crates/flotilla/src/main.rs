//! The `flotilla` binary: parse arguments, run the chosen component.

use clap::Parser;

/// Translation and the store allocate many small, short-lived objects; glibc's allocator spent
/// a third of their time (BENCHMARKS.md measures both).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = flotilla::cli::Cli::parse();
    flotilla::run(cli)
}
