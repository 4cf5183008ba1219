//! How every Flotilla part connects to NATS ([`NatsClientConfig`]): the server URL, the
//! credentials (a user and a password file), TLS (a CA to trust, a client certificate), and
//! what the server refuses on the connection ([`Refusals`]).
//!
//! The files are read and checked once, up front, and every error names its file. The first
//! connection retries while the server cannot be reached (a part may start before NATS) but
//! fails at once when the server refuses the credentials or TLS fails: retrying cannot help and
//! would hide the reason.
//!
//! A client with a user name takes replies on its own inbox prefix, `_INBOX.<user>` (see
//! [`inbox_prefix`]), so that the server configuration can let each user subscribe to its own
//! replies only: the store's pull consumer receives every cluster's events on its inbox, which
//! no agent may read.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a NATS client could not be configured or connected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    /// Options that do not go together (a password without a user, a key without a
    /// certificate).
    #[error("NATS client options: {0}")]
    Options(String),
    #[error("TLS client configuration: {0}")]
    Tls(String),
    /// The server refused the credentials or the TLS handshake failed: retrying cannot help.
    #[error("connecting to NATS at {url}: {message}")]
    Refused { url: String, message: String },
    #[error("connecting to NATS at {url}: {message}")]
    Connect { url: String, message: String },
}

/// The reply-inbox prefix of a client that logs in as `user`: `_INBOX.<user>`. The server
/// configuration ([`crate::natsconf`]) lets each user subscribe under its own prefix only.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX.{user}")
}

/// How to reach and authenticate to NATS (the `--nats-*` options of every part).
#[derive(Clone, Debug, Default)]
pub struct NatsClientConfig {
    /// `nats://HOST:PORT` (or `tls://`).
    pub url: String,
    /// User name; requires `password_file`.
    pub user: Option<String>,
    /// A file holding the user's password (surrounding whitespace, such as the newline an
    /// editor adds, is ignored).
    pub password_file: Option<PathBuf>,
    /// Require TLS and trust (only) this CA (PEM) for the server's certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) and its private key, for a server that verifies clients.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// First delay between attempts of the first connection, doubled up to the next constant.
const CONNECT_BACKOFF_START: Duration = Duration::from_millis(100);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The checked contents of a [`NatsClientConfig`]'s files.
struct Loaded {
    auth: Option<(String, String)>,
    tls: Option<rustls::ClientConfig>,
}

impl NatsClientConfig {
    /// A client of `url` without credentials or TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Reads and checks the files the options name.
    fn load(&self) -> Result<Loaded> {
        let auth = match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => {
                check_user(user)?;
                Some((user.clone(), read_password(file)?))
            }
            (None, None) => None,
            (Some(_), None) => return Err(Error::Options("a user needs a password file".into())),
            (None, Some(_)) => return Err(Error::Options("a password file needs a user".into())),
        };
        let tls = match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => None,
            (_, Some(_), None) => {
                return Err(Error::Options("a client certificate needs its key".into()))
            }
            (_, None, Some(_)) => {
                return Err(Error::Options("a client key needs its certificate".into()))
            }
            (None, Some(_), Some(_)) => {
                return Err(Error::Options(
                    "a client certificate needs the CA that signed the server's certificate".into(),
                ))
            }
            (Some(ca), cert, key) => Some(tls_config(ca, cert.as_deref().zip(key.as_deref()))?),
        };
        Ok(Loaded { auth, tls })
    }

    fn options(&self, loaded: &Loaded, refusals: &Refusals) -> async_nats::ConnectOptions {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some((user, password)) = &loaded.auth {
            opts = opts
                .user_and_password(user.clone(), password.clone())
                .custom_inbox_prefix(inbox_prefix(user));
        }
        if let Some(tls) = &loaded.tls {
            opts = opts.require_tls(true).tls_client_config(tls.clone());
        }
        let refusals = refusals.clone();
        opts.event_callback(move |event| {
            let refusals = refusals.clone();
            async move { refusals.observe(&event) }
        })
    }

    /// Connects. Retries (with backoff, forever) while the server cannot be reached; fails at
    /// once on a bad file, refused credentials or a failed TLS handshake. Returns the client
    /// and the refusals the server reports on it.
    pub async fn connect(&self) -> Result<(async_nats::Client, Refusals)> {
        let loaded = self.load()?;
        let refusals = Refusals::new();
        let mut backoff = CONNECT_BACKOFF_START;
        loop {
            let e = match self.options(&loaded, &refusals).connect(&self.url).await {
                Ok(client) => return Ok((client, refusals)),
                Err(e) => e,
            };
            use async_nats::ConnectErrorKind as K;
            let kind = if is_tls_failure(&e) { K::Tls } else { e.kind() };
            let hint = match kind {
                K::AuthorizationViolation | K::Authentication => Some(match &self.user {
                    Some(user) => format!(
                        "the server refused user {user:?}: check the user and its password file"
                    ),
                    None => "the server requires credentials: give a user and a password file"
                        .to_string(),
                }),
                K::Tls => Some(match (&self.ca, &self.cert) {
                    (None, _) => "TLS failed (no CA given: the server's certificate was checked \
                                  against the system's roots; give the CA that signed it)"
                        .to_string(),
                    (Some(ca), None) => format!(
                        "TLS failed (trusting the CA in {}; no client certificate given, which \
                         a server that verifies its clients refuses)",
                        ca.display()
                    ),
                    (Some(ca), Some(cert)) => format!(
                        "TLS failed (trusting the CA in {}, client certificate {})",
                        ca.display(),
                        cert.display()
                    ),
                }),
                _ => None,
            };
            if let Some(hint) = hint {
                return Err(Error::Refused {
                    url: self.url.clone(),
                    message: format!("{hint}: {}", error_chain(&e)),
                });
            }
            tracing::warn!(url = %self.url, error = %error_chain(&e), retry_in = ?backoff, "cannot reach NATS yet");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
        }
    }

    /// Connects once, without retrying (tests, tools).
    pub async fn connect_once(&self) -> Result<(async_nats::Client, Refusals)> {
        let loaded = self.load()?;
        let refusals = Refusals::new();
        match self.options(&loaded, &refusals).connect(&self.url).await {
            Ok(client) => Ok((client, refusals)),
            Err(e) => Err(Error::Connect {
                url: self.url.clone(),
                message: error_chain(&e),
            }),
        }
    }
}

/// Whether a TLS error is behind `e`: async-nats reports a failed handshake (an untrusted
/// server certificate, a client certificate the server wants) as an IO error around rustls'.
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // `io::Error::source` skips the wrapped error itself; look at it.
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        next = err.source();
    }
    e.kind() == async_nats::ConnectErrorKind::Tls
}

/// An error and its sources, `: `-separated (async-nats keeps the useful part in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// The user name becomes a subject token of the inbox prefix.
fn check_user(user: &str) -> Result<()> {
    if user.is_empty()
        || user
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        return Err(Error::Options(format!(
            "user name {user:?} must be one NATS subject token (no '.', '*', '>' or whitespace): \
             it names the client's reply inbox"
        )));
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a password file: its content without surrounding whitespace, which must not be empty.
pub fn read_password(path: &Path) -> Result<String> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid(path, "not UTF-8 text"))?;
    let password = text.trim();
    if password.is_empty() {
        return Err(invalid(path, "the password file is empty"));
    }
    Ok(password.to_string())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The rustls configuration: trust `ca` only (not the system's roots: the NATS server's
/// certificate comes from the deployment's own CA), and present `client` (cert, key) if given.
fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| invalid(ca, format!("not a usable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert)?;
            let key_pem = read(key)?;
            let private = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| invalid(key, format!("not a PEM private key: {e}")))?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                Error::Tls(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })
        }
    }
}

/// How many refusals a watcher may fall behind by. A refusal matters to the publishes waiting
/// when it arrives (a handful at a time); one that lags only misses refusals meant for others.
const REFUSALS_BUFFER: usize = 64;

/// The permission violations the server reports on one connection. NATS does not answer a
/// refused publish: it drops it and sends an asynchronous error on the connection, so a
/// publisher waiting for an acknowledgement would only time out. A publisher that watches
/// these fails at once, with the server's words ([`crate::Error::Denied`]).
#[derive(Clone, Debug)]
pub struct Refusals {
    tx: broadcast::Sender<String>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}

impl Refusals {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(REFUSALS_BUFFER).0,
        }
    }

    /// Logs a connection event and passes permission violations on to the watchers.
    pub fn observe(&self, event: &async_nats::Event) {
        use async_nats::{Event, ServerError};
        match event {
            Event::ServerError(ServerError::Other(message))
                if message.starts_with("Permissions Violation") =>
            {
                // A warning, not an error: an agent's first refusal is the expected one of the
                // stream check (see `nats::ensure_stream_if_allowed`); what a refusal costs is
                // reported by whoever waited on it.
                tracing::warn!(refused = %message, "the NATS server refused an operation of this client");
                // No watcher is not an error: nobody was waiting on this one.
                let _ = self.tx.send(message.clone());
            }
            Event::ServerError(e) => tracing::error!(error = %e, "NATS server error"),
            Event::ClientError(e) => tracing::error!(error = %e, "NATS client error"),
            Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
            Event::Connected => tracing::debug!("connected to NATS"),
            other => tracing::debug!(event = %other, "NATS connection event"),
        }
    }

    /// Starts watching: refusals reported from now on.
    pub fn watch(&self) -> RefusalWatch {
        RefusalWatch(self.tx.subscribe())
    }
}

/// A receiver of [`Refusals`].
pub struct RefusalWatch(broadcast::Receiver<String>);

impl RefusalWatch {
    /// The next permission violation the server reports (its message). Pending forever if
    /// none comes.
    pub async fn next(&mut self) -> String {
        loop {
            match self.0.recv().await {
                Ok(message) => return message,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }

    /// Waits for the server to refuse a publish on a subject `refused` accepts; returns the
    /// server's message. Pending forever if none comes.
    pub async fn publish_refused(&mut self, refused: impl Fn(&str) -> bool) -> String {
        loop {
            let message = self.next().await;
            if refused_publish_subject(&message).is_some_and(&refused) {
                return message;
            }
        }
    }
}

/// The subject of a server message `Permissions Violation for Publish to "SUBJECT"`.
pub fn refused_publish_subject(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("Permissions Violation for Publish to ")?;
    let rest = rest.strip_prefix('"')?;
    rest.split_once('"').map(|(subject, _)| subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_subjects_are_parsed() {
        assert_eq!(
            refused_publish_subject(
                r#"Permissions Violation for Publish to "flotilla.events.west""#
            ),
            Some("flotilla.events.west")
        );
        assert_eq!(
            refused_publish_subject(
                r#"Permissions Violation for Subscription to "_INBOX.store.>""#
            ),
            None
        );
        assert_eq!(refused_publish_subject("Authorization Violation"), None);
    }

    #[test]
    fn options_must_go_together_and_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.password");
        let cfg = NatsClientConfig {
            user: Some("agent-east".into()),
            password_file: Some(missing.clone()),
            ..NatsClientConfig::new("nats://127.0.0.1:1")
        };
        let e = cfg.load().err().expect("missing file");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );

        let empty = dir.path().join("empty.password");
        std::fs::write(&empty, "\n").expect("write");
        let cfg = NatsClientConfig {
            password_file: Some(empty.clone()),
            ..cfg
        };
        let e = cfg.load().err().expect("empty file");
        assert!(e.to_string().contains("empty.password") && e.to_string().contains("empty"));

        let pw = dir.path().join("ok.password");
        std::fs::write(&pw, "s3cret\n").expect("write");
        let cfg = NatsClientConfig {
            password_file: Some(pw.clone()),
            ..cfg
        };
        let loaded = cfg.load().expect("loads");
        assert_eq!(
            loaded.auth,
            Some(("agent-east".to_string(), "s3cret".to_string()))
        );

        for (user, pw, ca, cert, key) in [
            (Some("u"), None, None, None, None),
            (None, Some(&pw), None, None, None),
            (Some("a.b"), Some(&pw), None, None, None),
            (None, None, Some(&pw), Some(&pw), None),
            (None, None, Some(&pw), None, Some(&pw)),
            (None, None, None, Some(&pw), Some(&pw)),
        ] {
            let cfg = NatsClientConfig {
                user: user.map(str::to_string),
                password_file: pw.cloned(),
                ca: ca.cloned(),
                cert: cert.cloned(),
                key: key.cloned(),
                ..NatsClientConfig::new("nats://127.0.0.1:1")
            };
            assert!(
                matches!(cfg.load(), Err(Error::Options(_))),
                "{user:?} {pw:?} {ca:?} {cert:?} {key:?}"
            );
        }

        // A CA file that holds no certificate is named.
        let cfg = NatsClientConfig {
            ca: Some(pw.clone()),
            ..NatsClientConfig::new("nats://127.0.0.1:1")
        };
        let e = cfg.load().err().expect("not a CA");
        assert!(e.to_string().contains("ok.password"), "{e}");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
