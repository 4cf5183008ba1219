//! Assembles the long-running components from the library crates.

use crate::cli::Command;
use anyhow::Result;

pub fn run_async(cmd: Command) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cmd {
            _ => anyhow::bail!("not wired yet"),
        }
    })
}
