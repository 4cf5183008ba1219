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

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn nats_config_writes_the_files_the_agents_and_stores_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("nats");
        let out_arg = out.display().to_string();
        let cli = Cli::try_parse_from([
            "flotilla",
            "nats-config",
            "--out",
            &out_arg,
            "--clusters",
            "east,west",
        ])
        .expect("parses");
        let Command::NatsConfig(a) = cli.command else {
            panic!("not nats-config");
        };
        super::run(a).expect("writes");
        for user in ["agent-east", "agent-west", "store"] {
            let file = out.join(flotilla_ingest::natsconf::password_file_name(user));
            // What an agent or a store is started with reads back.
            let cli = Cli::try_parse_from([
                "flotilla",
                "ingest",
                "--nats-user",
                user,
                "--nats-password-file",
                &file.display().to_string(),
            ])
            .expect("parses");
            let Command::Ingest(a) = cli.command else {
                panic!("not ingest");
            };
            let cfg = a.nats.client_config();
            assert_eq!(cfg.user.as_deref(), Some(user));
            let pw = flotilla_ingest::client::read_password(&file).expect("password");
            assert_eq!(pw.len(), flotilla_ingest::natsconf::PASSWORD_LEN);
        }
        assert!(out.join("nats.conf").exists());
    }

    #[test]
    fn credentials_and_certificates_come_in_pairs() {
        for args in [
            &["--nats-user", "store"][..],
            &["--nats-password-file", "p"][..],
            &["--nats-cert", "c", "--nats-key", "k"][..],
            &["--nats-key", "k"][..],
        ] {
            let argv = ["flotilla", "store"].iter().chain(args.iter());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from([
            "flotilla",
            "store",
            "--nats-ca",
            "ca.pem",
            "--nats-cert",
            "c",
            "--nats-key",
            "k"
        ])
        .is_ok());
    }
}
