//! `flotilla certs`: a local CA, the certificates of every part of a dev or test setup, and the
//! edges' proxy token key, in one directory.

use crate::cli::CertsArgs;
use anyhow::{Context, Result};
use flotilla_net::certs::{write_dev_set, DevSet};
use std::io::Write;
use std::path::Path;

/// The proxy token key's file name in the output directory.
pub const PROXY_KEY_FILE: &str = "proxy-token.key";

pub fn run(a: &CertsArgs) -> Result<()> {
    let set = DevSet {
        stores: a.stores.clone(),
        edges: a.edges.clone(),
        agents: a.agents.clone(),
        proxies: a.proxies.clone(),
        admins: a.admins.clone(),
        readers: a.readers.clone(),
        nats: a.nats.clone(),
        hosts: a.hosts.clone(),
        days: a.days,
    };
    let mut files = write_dev_set(&a.out, &set)
        .with_context(|| format!("writing certificates to {}", a.out.display()))?;
    let key = a.out.join(PROXY_KEY_FILE);
    if !key.exists() {
        write_secret(&key, &flotilla_net::auth::random_secret())?;
    }
    files.push(key);
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

/// Writes a secret file created 0600 (never readable by others, not even for an instant).
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
