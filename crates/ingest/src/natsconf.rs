//! The nats-server configuration a Flotilla deployment runs with ([`write`]): JetStream, and one
//! user per part with only the permissions that part needs.
//!
//! - `agent-<cluster>` (one per cluster): publish on `flotilla.events.<cluster>` and subscribe
//!   to its own inbox `_INBOX.agent-<cluster>.>` (a JetStream publish is a request: the
//!   acknowledgement comes back there). Nothing else: no other cluster's subject, no JetStream
//!   API (the stores create the stream), no other client's inbox. To write statuses back, it
//!   reads its own cluster's keys of the status bucket, and no other's ([`status_reader`]).
//! - `store`: the JetStream API of the event stream only (create and inspect it, read one
//!   message, create, inspect, list and delete its consumers, pull, ack) and its own inbox
//!   `_INBOX.store.>`, where its pull consumer delivers. It needs no subscription on
//!   `flotilla.events.>`. And the status bucket, which the leader writes ([`status_writer`]).
//!
//! Inboxes are per user ([`crate::client::inbox_prefix`]) because the store's inbox carries
//! every cluster's events: with the usual `_INBOX.>`, any agent could read them all.
//!
//! Passwords are random (40 alphanumeric characters, about 238 bits), written in clear only to
//! `nats-<user>.password` (mode 0600, created with it) for the part that logs in, and to
//! `nats.conf` as bcrypt hashes, which nats-server checks. Password files that exist are kept,
//! so running again to add a cluster rotates nobody's password.

use crate::client::inbox_prefix;
use crate::validate_cluster;
use rand::distr::{Alphanumeric, SampleString};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("hashing the password of {user}: {source}")]
    Hash {
        user: String,
        #[source]
        source: bcrypt::BcryptError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The user of the stores.
pub const STORE_USER: &str = "store";
/// Length of a generated password (alphanumeric: about 5.95 bits each).
pub const PASSWORD_LEN: usize = 40;
/// Shortest password accepted from an existing password file.
pub const MIN_PASSWORD_LEN: usize = 32;
/// bcrypt cost of the hashes in nats.conf: nats-server checks one per connection, so this is
/// paid at every (re)connect; 11 is what `nats server passwd` uses.
const BCRYPT_COST: u32 = 11;
/// The file names in the output directory.
pub const CONF_FILE: &str = "nats.conf";

/// The user of the agent of `cluster`.
pub fn agent_user(cluster: &str) -> String {
    format!("agent-{cluster}")
}

/// Where the password of `user` is written: `nats-<user>.password`.
pub fn password_file_name(user: &str) -> String {
    format!("nats-{user}.password")
}

/// What one user may publish and subscribe to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// The agent of `cluster`: its cluster's subject, its inbox, and a read of its cluster's keys
/// of the status bucket.
pub fn agent(cluster: &str) -> User {
    let name = agent_user(cluster);
    let mut publish = vec![flotilla_model::events_subject(cluster)];
    publish.extend(status_reader(cluster));
    User {
        publish,
        subscribe: vec![format!("{}.>", inbox_prefix(&name))],
        name,
    }
}

/// What reading `cluster`'s keys of the status bucket takes (see
/// `flotilla_ingest::kube::status`): the bucket's stream info, and creating an ordered
/// consumer through the subject form that names the consumer and its filter
/// (`CONSUMER.CREATE.<stream>.<name>.<filter>`, nats-server >= 2.9), with the filter fixed to
/// `cluster`'s keys; the server refuses a request whose body filters on other subjects than
/// the one its subject names. The filter-less form (`CONSUMER.CREATE.<stream>`), durable
/// creates, direct gets and message gets stay closed: they would read any cluster's keys. The
/// consumer delivers into the agent's own inbox; flow-control replies go to `$JS.FC`.
pub fn status_reader(cluster: &str) -> Vec<String> {
    let stream = flotilla_model::status_kv::status_stream();
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!(
            "$JS.API.CONSUMER.CREATE.{stream}.*.{}",
            flotilla_model::status_kv::status_subjects_of(cluster)
        ),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// What the stores need of the status bucket (`flotilla_store::status`): create and inspect
/// its stream, read it whole through a named ordered consumer (and remove that), put and
/// delete keys.
pub fn status_writer() -> Vec<String> {
    let stream = flotilla_model::status_kv::status_stream();
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
        format!("{}>", flotilla_model::status_kv::status_subject_prefix()),
    ]
}

/// The stores: the JetStream API of `stream` (the calls `flotilla_store::NatsSource` makes),
/// acks of its messages, their inbox.
pub fn store(stream: &str) -> User {
    let api = |what: &str| format!("$JS.API.{what}");
    User {
        name: STORE_USER.to_string(),
        publish: vec![
            api(&format!("STREAM.INFO.{stream}")),
            api(&format!("STREAM.CREATE.{stream}")),
            api(&format!("STREAM.MSG.GET.{stream}")),
            api(&format!("CONSUMER.CREATE.{stream}.>")),
            api(&format!("CONSUMER.INFO.{stream}.>")),
            api(&format!("CONSUMER.DELETE.{stream}.>")),
            api(&format!("CONSUMER.NAMES.{stream}")),
            api(&format!("CONSUMER.MSG.NEXT.{stream}.>")),
            format!("$JS.ACK.{stream}.>"),
        ]
        .into_iter()
        .chain(status_writer())
        .collect(),
        subscribe: vec![format!("{}.>", inbox_prefix(STORE_USER))],
    }
}

/// TLS of the server: its certificate and key; with `client_ca`, clients must present a
/// certificate signed by it (on top of their user and password).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Output directory: nats.conf, the password files, JetStream's store directory.
    pub dir: PathBuf,
    /// One agent user per cluster.
    pub clusters: Vec<String>,
    /// The server's client address HOST:PORT.
    pub listen: String,
    pub tls: Option<ServerTls>,
    /// The event stream (`flotilla_ingest::nats::STREAM`).
    pub stream: String,
}

/// What [`write`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    pub conf: PathBuf,
    /// (user, password file, whether the file was created now rather than kept).
    pub passwords: Vec<(String, PathBuf, bool)>,
}

/// Writes `nats.conf` and the password files into `cfg.dir` (created 0700 if missing).
pub fn write(cfg: &ServerConfig) -> Result<Written> {
    let mut users = Vec::new();
    let mut seen = BTreeSet::new();
    if cfg.clusters.is_empty() {
        return Err(Error::Invalid("no cluster given".into()));
    }
    for c in &cfg.clusters {
        validate_cluster(c).map_err(|e| Error::Invalid(e.to_string()))?;
        if !seen.insert(c.as_str()) {
            return Err(Error::Invalid(format!("cluster {c:?} is named twice")));
        }
        users.push(agent(c));
    }
    users.push(store(&cfg.stream));

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.dir)
        .map_err(io(&cfg.dir))?;
    let dir = std::fs::canonicalize(&cfg.dir).map_err(io(&cfg.dir))?;
    let tls = match &cfg.tls {
        None => None,
        Some(t) => {
            let abs = |p: &Path| std::fs::canonicalize(p).map_err(io(p));
            Some(ServerTls {
                cert: abs(&t.cert)?,
                key: abs(&t.key)?,
                client_ca: t.client_ca.as_deref().map(abs).transpose()?,
            })
        }
    };

    let mut hashed = Vec::new();
    let mut passwords = Vec::new();
    for user in &users {
        let path = dir.join(password_file_name(&user.name));
        let (password, created) = password_for(&path)?;
        let hash = bcrypt::hash_with_result(&password, BCRYPT_COST)
            .map_err(|source| Error::Hash {
                user: user.name.clone(),
                source,
            })?
            .format_for_version(bcrypt::Version::TwoA);
        hashed.push((user, hash));
        passwords.push((user.name.clone(), path, created));
    }

    // nats-server keeps JetStream's files in `<store_dir>/jetstream`.
    let text = render(&cfg.listen, &dir, tls.as_ref(), &hashed);
    let conf = dir.join(CONF_FILE);
    let tmp = dir.join(format!("{CONF_FILE}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let mut f = create_private(&tmp)?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &conf).map_err(io(&conf))?;
    Ok(Written { conf, passwords })
}

/// A new file, mode 0600 from its creation (never readable by others, not even briefly).
fn create_private(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

/// The password in `path`, or a new one written there. Returns whether it was created.
fn password_for(path: &Path) -> Result<(String, bool)> {
    if path.exists() {
        let password =
            crate::client::read_password(path).map_err(|e| Error::Invalid(e.to_string()))?;
        if password.len() < MIN_PASSWORD_LEN {
            return Err(Error::Invalid(format!(
                "{}: the password is shorter than {MIN_PASSWORD_LEN} characters (delete the file to generate a new one)",
                path.display()
            )));
        }
        return Ok((password, false));
    }
    let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN);
    let mut f = create_private(path)?;
    f.write_all(password.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok((password, true))
}

/// A double-quoted string of the NATS configuration format (no variable expansion inside).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The text of nats.conf.
fn render(
    listen: &str,
    store_dir: &Path,
    tls: Option<&ServerTls>,
    users: &[(&User, String)],
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# Generated by `flotilla nats-config`. One user per part, each with only what it needs;\n\
         # the clear passwords are in the nats-<user>.password files beside this one.\n"
    );
    let _ = writeln!(out, "listen: {}\n", quote(listen));
    let _ = writeln!(
        out,
        "jetstream {{\n  store_dir: {}\n}}\n",
        quote(&store_dir.display().to_string())
    );
    if let Some(t) = tls {
        let _ = writeln!(out, "tls {{");
        let _ = writeln!(out, "  cert_file: {}", quote(&t.cert.display().to_string()));
        let _ = writeln!(out, "  key_file: {}", quote(&t.key.display().to_string()));
        if let Some(ca) = &t.client_ca {
            let _ = writeln!(out, "  ca_file: {}", quote(&ca.display().to_string()));
            let _ = writeln!(out, "  verify: true");
        }
        let _ = writeln!(out, "}}\n");
    }
    let _ = writeln!(out, "authorization {{\n  users: [");
    for (user, hash) in users {
        let _ = writeln!(out, "    {{");
        let _ = writeln!(out, "      user: {}", quote(&user.name));
        let _ = writeln!(out, "      password: {}", quote(hash));
        let _ = writeln!(out, "      permissions: {{");
        let _ = writeln!(out, "        publish: {{ allow: {} }}", list(&user.publish));
        let _ = writeln!(
            out,
            "        subscribe: {{ allow: {} }}",
            list(&user.subscribe)
        );
        let _ = writeln!(out, "      }}");
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "  ]\n}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn spec(dir: &Path, clusters: &[&str]) -> ServerConfig {
        ServerConfig {
            dir: dir.to_path_buf(),
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            listen: "127.0.0.1:4222".into(),
            tls: None,
            stream: "FLOTILLA_EVENTS".into(),
        }
    }

    #[test]
    fn agents_may_publish_their_cluster_only() {
        let a = agent("east");
        assert_eq!(a.name, "agent-east");
        assert_eq!(
            a.publish,
            vec![
                "flotilla.events.east",
                "$JS.API.STREAM.INFO.KV_flotilla-status",
                "$JS.API.CONSUMER.CREATE.KV_flotilla-status.*.$KV.flotilla-status.east.>",
                "$JS.FC.KV_flotilla-status.>",
            ]
        );
        assert_eq!(a.subscribe, vec!["_INBOX.agent-east.>".to_string()]);
        let s = store("FLOTILLA_EVENTS");
        assert!(
            s.publish
                .iter()
                .all(|p| p.contains(".FLOTILLA_EVENTS") || p.contains("flotilla-status")),
            "{s:?}"
        );
        assert!(
            !s.publish.iter().any(|p| p.starts_with("flotilla.")),
            "{s:?}"
        );
        assert_eq!(s.subscribe, vec!["_INBOX.store.>".to_string()]);
    }

    #[test]
    fn writes_private_password_files_and_hashes_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("nats");
        let w = write(&spec(&dir, &["east", "west"])).expect("write");
        let users: Vec<_> = w
            .passwords
            .iter()
            .map(|(u, _, c)| (u.as_str(), *c))
            .collect();
        assert_eq!(
            users,
            vec![("agent-east", true), ("agent-west", true), ("store", true)]
        );
        let conf = std::fs::read_to_string(&w.conf).expect("conf");
        for (user, path, _) in &w.passwords {
            let mode = std::fs::metadata(path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{user}");
            let password = std::fs::read_to_string(path).expect("password");
            assert_eq!(password.len(), PASSWORD_LEN);
            assert!(
                !conf.contains(&password),
                "clear password of {user} in nats.conf"
            );
        }
        assert_eq!(
            std::fs::metadata(&w.conf)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(conf.matches("password: \"$2a$11$").count(), 3, "{conf}");
        assert!(
            conf.contains("publish: { allow: [\"flotilla.events.west\", \"$JS.API.STREAM.INFO.KV_flotilla-status\", \"$JS.API.CONSUMER.CREATE.KV_flotilla-status.*.$KV.flotilla-status.west.>\", \"$JS.FC.KV_flotilla-status.>\"] }"),
            "{conf}"
        );
        assert!(conf.contains(&format!(
            "store_dir: \"{}\"",
            dir.canonicalize().expect("abs").display()
        )));

        // Again, with a new cluster: the existing passwords are kept.
        let before = std::fs::read_to_string(&w.passwords[0].1).expect("read");
        let again = write(&spec(&dir, &["east", "west", "north"])).expect("write again");
        let created: Vec<_> = again
            .passwords
            .iter()
            .map(|(u, _, c)| (u.as_str(), *c))
            .collect();
        assert_eq!(
            created,
            vec![
                ("agent-east", false),
                ("agent-west", false),
                ("agent-north", true),
                ("store", false)
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&again.passwords[0].1).expect("read"),
            before
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for (clusters, want) in [
            (&[][..], "no cluster"),
            (&["east", "east"][..], "twice"),
            (&["a.b"][..], "invalid cluster name"),
        ] {
            let e = write(&spec(tmp.path(), clusters)).expect_err("refused");
            assert!(e.to_string().contains(want), "{e}");
        }
        let mut s = spec(tmp.path(), &["east"]);
        s.tls = Some(ServerTls {
            cert: tmp.path().join("missing-cert.pem"),
            key: tmp.path().join("key.pem"),
            client_ca: None,
        });
        let e = write(&s).expect_err("missing cert");
        assert!(e.to_string().contains("missing-cert.pem"), "{e}");
        // A short password someone put there is not used.
        std::fs::write(tmp.path().join("nats-agent-east.password"), "short").expect("write");
        let e = write(&spec(tmp.path(), &["east"])).expect_err("short");
        assert!(e.to_string().contains("shorter than"), "{e}");
    }

    #[test]
    fn quoting_keeps_dollars_and_escapes_quotes() {
        assert_eq!(quote("$JS.API.X"), "\"$JS.API.X\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
