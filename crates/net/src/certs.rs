//! A local CA and the certificates of a dev setup (the library behind `flotilla certs`).
//!
//! [`Ca::create`] makes a CA (ECDSA P-256, ten years) in a folder, or loads the one already
//! there: a CA is never replaced silently, since every certificate issued under it would stop
//! verifying. [`Ca::issue`] writes a leaf certificate carrying one [`Identity`] as its URI SAN;
//! [`write_dev_set`] issues a whole setup's certificates in one call.
//!
//! Files are written to a temporary name and renamed into place, so a [`crate::tls::Tls`]
//! watching them never reads half a file; keys are created with mode 0600 (never readable by
//! others, not even between create and chmod).

use crate::identity::{self, Identity, Role};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The CA certificate's file in its folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file in its folder.
pub const CA_KEY_FILE: &str = "ca.key";
/// The CA's common name.
pub const CA_COMMON_NAME: &str = "Flotilla local CA";
/// How long the CA is valid.
pub const CA_DAYS: u32 = 3650;
/// A sensible default lifetime for leaf certificates: short enough that a leaked dev key does
/// not live for years, long enough that a dev setup does not need rotating every week.
pub const DEFAULT_LEAF_DAYS: u32 = 90;
/// Certificates are valid from this long before they are made, for clocks a little behind.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Why certificates could not be made. Every variant about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: rcgen::Error },
    #[error("{}: {reason}", path.display())]
    BadCert { path: PathBuf, reason: String },
    #[error("{}: not a CA certificate (no basicConstraints CA:true)", path.display())]
    NotCa { path: PathBuf },
    #[error("{}: the key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error(
        "{} exists but {} does not: refusing to make a new CA over half of one",
        present.display(),
        missing.display()
    )]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error("generating the certificate of {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    #[error("{0:?} is neither a DNS name nor an IP address")]
    Host(String),
    #[error("a certificate must be valid for at least one day")]
    Days,
    #[error(transparent)]
    Identity(#[from] identity::Error),
    #[error("{a} and {b} would both be written to {file}")]
    Collision {
        a: Identity,
        b: Identity,
        file: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A CA whose key is at hand: it can issue certificates.
pub struct Ca {
    cert_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    created: bool,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.cert_path)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// The files of an issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// Makes a CA in `dir` (created 0700 if missing), or loads the one there (see
    /// [`Ca::created`]). Half a CA (a certificate without its key or the reverse) is an error.
    pub fn create(dir: &Path) -> Result<Self> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                tracing::info!(dir = %dir.display(), "a CA exists; using it");
                return Self::load(dir);
            }
            (true, false) => {
                return Err(Error::HalfCa {
                    present: cert_path,
                    missing: key_path,
                })
            }
            (false, true) => {
                return Err(Error::HalfCa {
                    present: key_path,
                    missing: cert_path,
                })
            }
            (false, false) => {}
        }
        create_dir(dir)?;
        let key = new_key(CA_COMMON_NAME)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Flotilla");
        // Every dev CA has the same common name; a name of its own (its creation time) keeps
        // two of them apart, so a certificate of the other one is refused as "unknown CA"
        // rather than as a bad signature of a namesake.
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            format!(
                "created {}",
                time::OffsetDateTime::now_utc().unix_timestamp_nanos()
            ),
        );
        // Leaves only: the CA signs no intermediate.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_DAYS)?;
        let cert = params.self_signed(&key).map_err(|source| Error::Generate {
            what: CA_COMMON_NAME.into(),
            source,
        })?;
        // Key first: a certificate on disk always has its key beside it.
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(cert = %cert_path.display(), "CA created");
        Ok(Self {
            cert_path,
            issuer: Issuer::new(params, key),
            created: true,
        })
    }

    /// Loads the CA in `dir` (`ca.pem` and its PKCS#8 `ca.key`).
    pub fn load(dir: &Path) -> Result<Self> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let read = |p: &Path| {
            fs::read_to_string(p).map_err(|source| Error::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(&cert_path)?, read(&key_path)?);
        let key = KeyPair::from_pem(&key_pem).map_err(|source| Error::Parse {
            path: key_path.clone(),
            source,
        })?;
        let der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| Error::BadCert {
                path: cert_path.clone(),
                reason: format!("not a PEM certificate: {e}"),
            })?;
        let (_, x509) = X509Certificate::from_der(&der).map_err(|e| Error::BadCert {
            path: cert_path.clone(),
            reason: format!("not an X.509 certificate: {e}"),
        })?;
        if !x509.is_ca() {
            return Err(Error::NotCa { path: cert_path });
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|source| Error::Parse {
            path: cert_path.clone(),
            source,
        })?;
        Ok(Self {
            cert_path,
            issuer,
            created: false,
        })
    }

    /// Whether [`Ca::create`] made this CA (`false`: it was there already).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The CA certificate: the bundle every part trusts.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Issues a certificate for `identity`, valid for `days`, naming `hosts` (DNS names, or IP
    /// addresses, with or without IPv6 brackets) for servers, with both the serverAuth and the
    /// clientAuth usages (every part is a client of another). Written into `dir` as
    /// [`file_stem`]`.pem` / `.key`, replacing earlier ones (a rotation).
    pub fn issue(
        &self,
        identity: &Identity,
        hosts: &[String],
        days: u32,
        dir: &Path,
    ) -> Result<IssuedPaths> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        let uri = identity
            .uri()
            .try_into()
            .map_err(|source| Error::Generate {
                what: identity.to_string(),
                source,
            })?;
        params.subject_alt_names = std::iter::once(Ok(SanType::URI(uri)))
            .chain(hosts.iter().map(|h| host_san(h)))
            .collect::<Result<_>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, days)?;
        let key = new_key(&identity.to_string())?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| Error::Generate {
                what: identity.to_string(),
                source,
            })?;
        create_dir(dir)?;
        let stem = file_stem(identity);
        let paths = IssuedPaths {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        // Key first: a watcher that sees the new key with the old certificate refuses the pair
        // and takes both once the certificate lands.
        write_atomic(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&paths.cert, cert.pem().as_bytes(), 0o644)?;
        Ok(paths)
    }
}

/// `<role>-<name with / replaced by ->`: the file name (without extension) of an identity's
/// certificate.
pub fn file_stem(identity: &Identity) -> String {
    format!("{}-{}", identity.role, identity.name.replace('/', "-"))
}

fn host_san(host: &str) -> Result<SanType> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // The same check a TLS client applies to a server name, so a name that would never match
    // is refused here rather than at the first handshake.
    rustls_pki_types::DnsName::try_from(host).map_err(|_| Error::Host(host.into()))?;
    Ok(SanType::DnsName(
        host.try_into().map_err(|_| Error::Host(host.into()))?,
    ))
}

fn new_key(what: &str) -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| Error::Generate {
        what: what.into(),
        source,
    })
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<()> {
    if days == 0 {
        return Err(Error::Days);
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(i64::from(days));
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `path` through a temporary file in the same folder (created with `mode`, synced, then
/// renamed over `path`), so readers see the old file or the new one, never a part.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(())
}

/// The parts of a dev setup to issue certificates for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevSet {
    /// Store node ids.
    pub stores: Vec<String>,
    /// Edge names.
    pub edges: Vec<String>,
    /// Cluster names, one ingest agent each.
    pub agents: Vec<String>,
    /// `cluster/namespace/gateway` of each proxy.
    pub proxies: Vec<String>,
    /// API clients with the admin role.
    pub admins: Vec<String>,
    /// API clients with the read-only role.
    pub readers: Vec<String>,
    /// NATS servers (a server certificate each, for NATS TLS).
    pub nats: Vec<String>,
    /// DNS names and IP addresses the servers are reached at.
    pub hosts: Vec<String>,
    /// Lifetime of the leaf certificates.
    pub days: u32,
}

/// Whether certificates of `role` name the hosts: only servers need them (stores serve Raft,
/// the watch and the API; edges serve xDS; NATS serves the event bus), and a client certificate that also names hosts
/// could pose as a server there.
fn serves(role: Role) -> bool {
    matches!(role, Role::Store | Role::Edge | Role::Nats)
}

impl DevSet {
    /// Every identity of the set, checked, in role order.
    pub fn identities(&self) -> Result<Vec<Identity>> {
        let groups: [(Role, &[String]); 7] = [
            (Role::Store, &self.stores),
            (Role::Edge, &self.edges),
            (Role::Agent, &self.agents),
            (Role::Proxy, &self.proxies),
            (Role::Admin, &self.admins),
            (Role::Reader, &self.readers),
            (Role::Nats, &self.nats),
        ];
        let ids = groups
            .into_iter()
            .flat_map(|(role, names)| names.iter().map(move |n| Identity::new(role, n.as_str())))
            .collect::<Result<Vec<_>, _>>()?;
        // Names that differ only in `/` against `-` would share a file.
        let mut files: BTreeMap<String, &Identity> = BTreeMap::new();
        for id in &ids {
            if let Some(prev) = files.insert(file_stem(id), id) {
                if prev != id {
                    return Err(Error::Collision {
                        a: prev.clone(),
                        b: id.clone(),
                        file: file_stem(id),
                    });
                }
            }
        }
        Ok(ids)
    }
}

/// Makes (or reuses) the CA in `dir` and issues every certificate of `set` into it. Returns
/// every file, the CA certificate first (the CA key is not listed: it stays where it is and
/// goes nowhere else).
pub fn write_dev_set(dir: &Path, set: &DevSet) -> Result<Vec<PathBuf>> {
    let ids = set.identities()?;
    let ca = Ca::create(dir)?;
    let mut files = vec![ca.cert_path().to_path_buf()];
    for id in &ids {
        let hosts: &[String] = if serves(id.role) { &set.hosts } else { &[] };
        let p = ca.issue(id, hosts, set.days, dir)?;
        files.push(p.cert);
        files.push(p.key);
    }
    Ok(files)
}

#[cfg(test)]
mod tests;
