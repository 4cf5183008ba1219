//! `flotilla nats-config`: writes the nats-server configuration and the users' password files
//! (what they contain and why: `flotilla_ingest::natsconf`), then says how to use them.

use crate::cli::NatsConfigArgs;
use anyhow::{Context, Result};
use flotilla_ingest::natsconf::{self, ServerConfig, ServerTls};

pub fn run(a: NatsConfigArgs) -> Result<()> {
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert,
            key,
            client_ca: a.tls_ca,
        }),
        _ => None,
    };
    let written = natsconf::write(&ServerConfig {
        dir: a.out.clone(),
        clusters: a.clusters.clone(),
        listen: a.listen,
        tls,
        stream: flotilla_ingest::nats::STREAM.to_string(),
    })
    .with_context(|| format!("writing the NATS configuration into {}", a.out.display()))?;
    println!("wrote {}", written.conf.display());
    for (user, file, created) in &written.passwords {
        let what = if *created { "new" } else { "kept" };
        println!("  user {user:<16} password in {} ({what})", file.display());
    }
    println!(
        "start the server:  nats-server -c {}",
        written.conf.display()
    );
    let dir = written
        .conf
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    if let Some(c) = a.clusters.first() {
        let user = natsconf::agent_user(c);
        println!(
            "an agent:          flotilla ingest --cluster {c} --nats-user {user} --nats-password-file {dir}/{}",
            natsconf::password_file_name(&user)
        );
    }
    println!(
        "the stores:        flotilla store ... --nats-user {0} --nats-password-file {dir}/{1}",
        natsconf::STORE_USER,
        natsconf::password_file_name(natsconf::STORE_USER)
    );
    Ok(())
}
