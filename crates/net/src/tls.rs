//! TLS for every Flotilla port: one certificate per part, trusted through one CA bundle, reloaded
//! when its files change.
//!
//! [`Tls`] loads a part's [`TlsFiles`] (the CA bundle it trusts, its certificate chain, its key)
//! into rustls configurations for both sides of a connection: [`Tls::acceptor`] is the server
//! side for [`crate::listen::incoming`] (its [`ClientAuth`] says whether a client certificate is
//! required), [`connect::Connector`] the client side for tonic, and [`Tls::client_config`] the
//! configuration for other clients. [`Tls::watch`] polls the files and swaps in new
//! configurations: new connections use them, established ones keep theirs. A file that does not
//! load keeps the previous configuration in force.
//!
//! Every certificate names its holder with one URI SAN `spiffe://flotilla/<role>/<name>`
//! ([`identity_of_cert`]); the CA vouches for it, so a verified certificate proves an
//! [`Identity`]. There is no revocation list: a leaked certificate is valid until it expires,
//! which is why certificates are short-lived and rotated.

pub mod connect;

use crate::identity::{self, Identity, Role, TRUST_DOMAIN};
use crate::listen::Handshake;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use connect::{ClientStream, Connector};

/// How often [`Tls::watch`] looks at the files. Certificates are rotated well before they
/// expire, so seconds of delay cost nothing, and a `stat` of three files every 2 s is free.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The files of one part's TLS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM bundle of the CA certificates to trust (peers must chain to one of them).
    pub ca: PathBuf,
    /// PEM certificate chain of this part, its own certificate first.
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS files did not load. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: not a PEM {what}: {source}", path.display())]
    Pem {
        path: PathBuf,
        what: &'static str,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: holds no {what}", path.display())]
    Empty { path: PathBuf, what: &'static str },
    #[error("{}: {source}", path.display())]
    Cert { path: PathBuf, source: CertError },
    #[error("{}: certificate expired at {not_after}", path.display())]
    Expired {
        path: PathBuf,
        not_after: time::OffsetDateTime,
    },
    #[error("{}: {source}", path.display())]
    Rustls {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: the key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: {source}", path.display())]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a certificate does not prove a Flotilla [`Identity`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
    #[error("no spiffe://{TRUST_DOMAIN}/ URI SAN")]
    NoIdentity,
    #[error("{0} spiffe://{TRUST_DOMAIN}/ URI SANs (exactly one is allowed)")]
    ManyIdentities(usize),
    #[error(transparent)]
    Identity(#[from] identity::Error),
}

/// The identity a certificate carries: its one `spiffe://flotilla/` URI SAN. Other URI SANs
/// (another trust domain, a web address) are ignored; two Flotilla ones are refused, since which
/// one a peer means would be a guess.
pub fn identity_of_cert(der: &[u8]) -> Result<Identity, CertError> {
    let cert = parse_cert(der)?;
    identity_of(&cert)
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => Err(CertError::Parse(format!(
            "{} bytes after the certificate",
            rest.len()
        ))),
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(CertError::Parse(e.to_string())),
    }
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let prefix = format!("spiffe://{TRUST_DOMAIN}/");
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(format!("subjectAltName: {e}")))?;
    let ours: Vec<&str> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(&prefix) => Some(*u),
            _ => None,
        })
        .collect();
    match ours.as_slice() {
        [] => Err(CertError::NoIdentity),
        [uri] => Ok(Identity::from_uri(uri)?),
        many => Err(CertError::ManyIdentities(many.len())),
    }
}

/// What a part's current certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Identity,
    /// Serial number, hex bytes separated by `:`.
    pub serial: String,
    pub not_after: time::OffsetDateTime,
}

/// Whether a server requires a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// The handshake fails unless the client presents a certificate that chains to the CA and
    /// carries a Flotilla identity. For ports only Flotilla's own parts use (Raft, watch).
    Required,
    /// A client may present no certificate (it then authenticates some other way, e.g. a bearer
    /// token, and its `ConnInfo::peer` is `None`). For the xDS and API ports.
    ///
    /// A certificate it does present is verified exactly as under `Required`, and the handshake
    /// fails if it does not verify or carries no valid Flotilla identity: a client that offers
    /// a certificate claims an identity, and a claim that cannot be checked is refused rather
    /// than quietly downgraded to anonymous (which would hide a misconfiguration, and would let
    /// a certificate the CA issued for something else pass where a peer expected a Flotilla
    /// identity).
    Optional,
}

/// Counters of one [`Tls`].
#[derive(Debug, Default)]
struct Stats {
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// A snapshot of a [`Tls`]'s reload counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadCounters {
    /// Reloads that swapped in a new configuration.
    pub reloads: u64,
    /// Changes of the files that did not load (the previous configuration stayed).
    pub failures: u64,
}

/// A part's TLS configurations, swapped when its files change. Cloning is cheap: clones share
/// the configurations and see every reload.
#[derive(Clone, Debug)]
pub struct Tls {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: TlsFiles,
    /// Read once per connection, written once per reload; never held across an `.await`.
    current: RwLock<Arc<Loaded>>,
    /// What the files looked like when last loaded (successfully or not); also serialises
    /// reloads.
    stamps: Mutex<Stamps>,
    stats: Stats,
}

/// Everything built from one version of the files.
#[derive(Debug)]
struct Loaded {
    info: CertInfo,
    server_required: Arc<ServerConfig>,
    server_optional: Arc<ServerConfig>,
    client_h2: Arc<ClientConfig>,
    client_http1: Arc<ClientConfig>,
}

impl Tls {
    /// Loads `files`. The configuration does not change until [`Tls::watch`] (or
    /// [`Tls::reload_if_changed`]) sees the files change.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let stamps = Stamps::of(&files);
        let loaded = Loaded::read(&files)?;
        tracing::info!(
            identity = %loaded.info.identity,
            serial = %loaded.info.serial,
            not_after = %loaded.info.not_after,
            cert = %files.cert.display(),
            "TLS certificate loaded"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new(Arc::new(loaded)),
                stamps: Mutex::new(stamps),
                stats: Stats::default(),
            }),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    fn current(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a complete `Arc` (writers only swap it).
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// This part's certificate in force now.
    pub fn cert_info(&self) -> CertInfo {
        self.current().info.clone()
    }

    /// This part's identity in force now.
    pub fn identity(&self) -> Identity {
        self.current().info.identity.clone()
    }

    /// The server configuration in force now (ALPN `h2`, `http/1.1`).
    pub fn server_config(&self, auth: ClientAuth) -> Arc<ServerConfig> {
        let l = self.current();
        match auth {
            ClientAuth::Required => l.server_required.clone(),
            ClientAuth::Optional => l.server_optional.clone(),
        }
    }

    /// The client configuration in force now, presenting this part's certificate (ALPN `h2`).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.current().client_h2.clone()
    }

    /// As [`Tls::client_config`], for HTTP/1.1 clients (ALPN `http/1.1`).
    pub fn client_config_http1(&self) -> Arc<ClientConfig> {
        self.current().client_http1.clone()
    }

    /// The server side of a listener, for [`crate::listen::incoming`].
    pub fn acceptor(&self, auth: ClientAuth) -> Acceptor {
        Acceptor {
            tls: self.clone(),
            auth,
        }
    }

    pub fn reload_counters(&self) -> ReloadCounters {
        ReloadCounters {
            reloads: self.inner.stats.reloads.load(Ordering::Relaxed),
            failures: self.inner.stats.reload_failures.load(Ordering::Relaxed),
        }
    }

    /// Reloads the files if their modification time, length or inode changed since the last
    /// attempt (metadata follows symlinks: Kubernetes swaps a secret's files by re-pointing a
    /// symlink). `Ok(true)` if a new configuration is in force. On an error the previous
    /// configuration stays, and the same files are not tried again until they change again
    /// (a half-written rotation is retried once its last file lands).
    pub fn reload_if_changed(&self) -> Result<bool> {
        let mut last = self
            .inner
            .stamps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Stamps before contents: a change while reading shows up as a change next time.
        let now = Stamps::of(&self.inner.files);
        if now == *last {
            return Ok(false);
        }
        *last = now;
        match Loaded::read(&self.inner.files) {
            Ok(loaded) => {
                let info = loaded.info.clone();
                *self
                    .inner
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
                self.inner.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    identity = %info.identity,
                    serial = %info.serial,
                    not_after = %info.not_after,
                    cert = %self.inner.files.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                );
                Ok(true)
            }
            Err(e) => {
                self.inner
                    .stats
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Polls the files every [`RELOAD_EVERY`] until `shutdown`.
    pub fn watch(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        self.watch_every(RELOAD_EVERY, shutdown)
    }

    /// As [`Tls::watch`], polling every `every`.
    pub fn watch_every(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        let span = tracing::info_span!("tls_watch", cert = %self.inner.files.cert.display());
        tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = shutdown.cancelled() => return,
                    }
                    // A few `stat`s, and three small reads on a change: not worth a blocking
                    // thread.
                    if let Err(e) = tls.reload_if_changed() {
                        tracing::error!(
                            error = %e,
                            "TLS files changed but did not load; keeping the previous certificate"
                        );
                    }
                }
            }
            .instrument(span),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

impl Loaded {
    fn read(files: &TlsFiles) -> Result<Self> {
        let provider = provider();

        let ca = certs_in(&files.ca, "CA certificate")?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|source| Error::Rustls {
                path: files.ca.clone(),
                source,
            })?;
        }
        let roots = Arc::new(roots);

        let chain = certs_in(&files.cert, "certificate")?;
        let leaf = parse_cert(&chain[0]).map_err(|source| Error::Cert {
            path: files.cert.clone(),
            source,
        })?;
        let identity = identity_of(&leaf).map_err(|source| Error::Cert {
            path: files.cert.clone(),
            source,
        })?;
        let not_after = leaf.validity().not_after.to_datetime();
        if not_after < time::OffsetDateTime::now_utc() {
            return Err(Error::Expired {
                path: files.cert.clone(),
                not_after,
            });
        }
        let info = CertInfo {
            identity,
            serial: leaf.raw_serial_as_string(),
            not_after,
        };

        let key_pem = read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| Error::Pem {
            path: files.key.clone(),
            what: "private key",
            source,
        })?;
        let certified = CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
                    key: files.key.clone(),
                    cert: files.cert.clone(),
                },
                source => Error::Rustls {
                    path: files.key.clone(),
                    source,
                },
            },
        )?;
        let certified = Arc::new(certified);

        let server = |auth: ClientAuth| -> Result<Arc<ServerConfig>> {
            let builder =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let builder = match auth {
                ClientAuth::Required => builder,
                ClientAuth::Optional => builder.allow_unauthenticated(),
            };
            let webpki = builder.build().map_err(|source| Error::Verifier {
                path: files.ca.clone(),
                source,
            })?;
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(VERSIONS)
                .map_err(Error::Config)?
                .with_client_cert_verifier(Arc::new(IdentityVerifier { webpki }))
                .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    certified.clone(),
                )));
            config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
            Ok(Arc::new(config))
        };
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|source| Error::Verifier {
                    path: files.ca.clone(),
                    source,
                })?;
        let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>> {
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(VERSIONS)
                .map_err(Error::Config)?
                .with_webpki_verifier(server_verifier.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|source| Error::Rustls {
                    path: files.key.clone(),
                    source,
                })?;
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };

        Ok(Self {
            info,
            server_required: server(ClientAuth::Required)?,
            server_optional: server(ClientAuth::Optional)?,
            client_h2: client(ALPN_H2)?,
            client_http1: client(ALPN_HTTP1)?,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of a PEM file; at least one.
fn certs_in(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            path: path.to_path_buf(),
            what,
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(certs)
}

/// What the three files looked like: a change of any field is a change of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamps([Option<Stamp>; 3]);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    /// A file renamed over another (an atomic write, a symlink swap) is a new inode even where
    /// its time and length match.
    inode: (u64, u64),
}

impl Stamps {
    fn of(files: &TlsFiles) -> Self {
        Self([&files.ca, &files.cert, &files.key].map(|p| {
            // `metadata` follows symlinks; a missing file is a state like any other (the next
            // load reports it by name).
            std::fs::metadata(p).ok().map(|m| Stamp {
                modified: m.modified().ok(),
                len: m.len(),
                inode: inode(&m),
            })
        }))
    }
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The CA's verification (chain, validity, clientAuth usage), then the Flotilla identity: a
/// certificate without one fails the handshake with an alert, and the server's log says why.
#[derive(Debug)]
struct IdentityVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        match identity_of_cert(end_entity) {
            Ok(_) => Ok(verified),
            Err(e) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(Refusal(e)))),
            )),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Why a client certificate was refused. rustls shows the reason of an `Other` certificate
/// error with `Debug`, so its `Debug` is the message.
struct Refusal(CertError);

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client certificate: {}", self.0)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Refusal {}

/// The TLS server side of a listener: handshakes with the configuration in force when the
/// connection arrived, and hands on the client's identity.
#[derive(Clone, Debug)]
pub struct Acceptor {
    tls: Tls,
    auth: ClientAuth,
}

impl Acceptor {
    pub fn client_auth(&self) -> ClientAuth {
        self.auth
    }
}

impl Handshake for Acceptor {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<(Self::Io, Option<Identity>)> {
        let config = self.tls.server_config(self.auth);
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let cert = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        let peer = match (cert, self.auth) {
            (Some(cert), _) => {
                // The verifier checked this already; parsed again for its value.
                Some(identity_of_cert(cert).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("client certificate: {e}"),
                    )
                })?)
            }
            (None, ClientAuth::Optional) => None,
            (None, ClientAuth::Required) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "client presented no certificate",
                ))
            }
        };
        Ok((stream, peer))
    }
}

/// Checks a server's identity has the role a client expects.
pub(crate) fn check_role(
    cert: Option<&CertificateDer<'_>>,
    want: Role,
) -> Result<Identity, String> {
    let cert = cert.ok_or_else(|| "presented no certificate".to_string())?;
    let id = identity_of_cert(cert).map_err(|e| format!("server certificate: {e}"))?;
    if id.role != want {
        return Err(format!("is {} ({}), expected a {want}", id, id.uri()));
    }
    Ok(id)
}

#[cfg(test)]
mod tests;
