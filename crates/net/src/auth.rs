//! Who may call a gRPC service, checked in the service itself, on every call.
//!
//! Parts authenticate to each other with client certificates ([`PeerAuth::Tls`]: the
//! certificate's identity must have one of the roles the service allows), or, inside one
//! process whose internal port is reachable by other local users (standalone mode), with a
//! secret generated at start ([`PeerAuth::Token`]). [`PeerAuth::Open`] checks nothing: a
//! plaintext port on loopback of a machine whose users are trusted (logged at start).
//!
//! Proxies prove their gateway either with a certificate `proxy/<cluster>/<ns>/<gateway>` or
//! with a per-gateway token, `hex(HMAC-SHA256(key, "proxy/" + gateway))`, sent as gRPC metadata
//! [`PROXY_TOKEN_HEADER`] (what `flotilla bootstrap --token-key` writes into Envoy's
//! bootstrap). The key lives with the edges and the bootstrap tooling; no list of tokens to
//! keep in sync.

use crate::identity::{Identity, Role};
use crate::listen::ConnInfo;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tonic::{Request, Status};

/// gRPC metadata carrying [`PeerAuth::Token`]'s secret.
pub const TOKEN_HEADER: &str = "x-flotilla-token";
/// gRPC metadata carrying a proxy's gateway token.
pub const PROXY_TOKEN_HEADER: &str = "x-flotilla-proxy-token";
/// Shortest accepted proxy token key.
pub const MIN_KEY_BYTES: usize = 32;

/// How a service authenticates its callers.
#[derive(Clone, Debug)]
pub enum PeerAuth {
    /// No check: plaintext on a trusted loopback.
    Open,
    /// Callers present this secret in [`TOKEN_HEADER`].
    Token(Arc<str>),
    /// Callers present a client certificate whose identity has an allowed role.
    Tls,
}

/// Counts refused calls (for metrics).
#[derive(Debug, Default)]
pub struct Denials(AtomicU64);

impl Denials {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a request's connection and metadata say about its caller.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub conn: Option<ConnInfo>,
    /// [`TOKEN_HEADER`]'s value.
    pub token: Option<String>,
    /// [`PROXY_TOKEN_HEADER`]'s value.
    pub proxy_token: Option<String>,
}

impl Caller {
    /// Reads what a tonic request carries (the connection info is inserted by a server fed by
    /// [`crate::listen::incoming`]).
    pub fn of<T>(req: &Request<T>) -> Self {
        let meta = |k: &str| {
            req.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            conn: req.extensions().get::<ConnInfo>().cloned(),
            token: meta(TOKEN_HEADER),
            proxy_token: meta(PROXY_TOKEN_HEADER),
        }
    }

    /// The identity the caller's certificate proved.
    pub fn peer(&self) -> Option<&Identity> {
        self.conn.as_ref().and_then(|c| c.peer.as_ref())
    }

    /// For log lines.
    pub fn remote(&self) -> String {
        self.conn
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |c| c.remote.to_string())
    }
}

impl PeerAuth {
    /// `Ok` when the caller may use `service`; otherwise `Unauthenticated` (no credentials)
    /// or `PermissionDenied` (wrong ones), a warning naming the caller, and a denial counted.
    pub fn check(
        &self,
        caller: &Caller,
        service: &str,
        allowed: &[Role],
        denials: &Denials,
    ) -> Result<(), Status> {
        let refusal = match self {
            PeerAuth::Open => return Ok(()),
            PeerAuth::Token(secret) => match &caller.token {
                Some(t) if ct_eq(t.as_bytes(), secret.as_bytes()) => return Ok(()),
                Some(_) => Status::permission_denied(format!("{service}: wrong {TOKEN_HEADER}")),
                None => Status::unauthenticated(format!(
                    "{service}: this port needs {TOKEN_HEADER} (it serves one process only)"
                )),
            },
            PeerAuth::Tls => match caller.peer() {
                Some(id) if allowed.contains(&id.role) => return Ok(()),
                Some(id) => Status::permission_denied(format!(
                    "{service}: {id} may not call this service (allowed roles: {})",
                    roles(allowed)
                )),
                None => Status::unauthenticated(format!(
                    "{service}: a client certificate with a role of {} is required",
                    roles(allowed)
                )),
            },
        };
        denials.bump();
        tracing::warn!(
            service,
            remote = %caller.remote(),
            peer = ?caller.peer().map(ToString::to_string),
            code = ?refusal.code(),
            reason = refusal.message(),
            "refused a call"
        );
        Err(refusal)
    }
}

fn roles(allowed: &[Role]) -> String {
    allowed
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A fresh 256-bit secret, hex: for [`PeerAuth::Token`] and for proxy token keys.
pub fn random_secret() -> String {
    hex_lower(&rand::random::<[u8; 32]>())
}

/// Constant-time equality (of lengths and bytes).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a proxy token key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("proxy token key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "proxy token key {path}: {len} bytes; at least {MIN_KEY_BYTES} random bytes are needed"
    )]
    Short { path: String, len: usize },
}

/// The key behind every proxy token; shared by edges and `flotilla bootstrap`.
#[derive(Clone)]
pub struct ProxyKey(Arc<[u8]>);

impl std::fmt::Debug for ProxyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyKey(..)")
    }
}

impl ProxyKey {
    pub fn new(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short {
                path: "(given)".into(),
                len: bytes.len(),
            });
        }
        Ok(Self(bytes.into()))
    }

    /// Reads a key file (its bytes as they are; trailing whitespace ignored).
    pub fn load(path: &std::path::Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        Self::new(&bytes[..end]).map_err(|_| KeyError::Short {
            path: path.display().to_string(),
            len: end,
        })
    }

    /// The token of a proxy of `gateway` ("CLUSTER/NAMESPACE/NAME").
    pub fn token(&self, gateway: &str) -> String {
        hex_lower(&self.mac(gateway))
    }

    fn mac(&self, gateway: &str) -> [u8; 32] {
        // new_from_slice only fails for algorithms with fixed key sizes; HMAC takes any.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        mac.update(b"proxy/");
        mac.update(gateway.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `token` is `gateway`'s.
    pub fn verify(&self, gateway: &str, token: &str) -> bool {
        ct_eq(self.token(gateway).as_bytes(), token.as_bytes())
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How an edge authenticates proxies.
#[derive(Clone, Debug, Default)]
pub struct ProxyAuth {
    /// Accept per-gateway tokens made with this key.
    pub key: Option<ProxyKey>,
    /// Accept client certificates `proxy/<gateway>` (the listener does TLS).
    pub certs: bool,
}

impl ProxyAuth {
    /// Anyone may name any gateway (dev, loopback).
    pub fn open(&self) -> bool {
        self.key.is_none() && !self.certs
    }

    /// `Ok` when the caller proved it serves `gateway`.
    pub fn check(&self, caller: &Caller, gateway: &str, denials: &Denials) -> Result<(), Status> {
        if self.open() {
            return Ok(());
        }
        if self.certs {
            if let Some(id) = caller.peer() {
                if id.role == Role::Proxy && id.name == gateway {
                    return Ok(());
                }
            }
        }
        if let (Some(key), Some(t)) = (&self.key, &caller.proxy_token) {
            if key.verify(gateway, t) {
                return Ok(());
            }
        }
        let why = match (caller.peer(), &caller.proxy_token) {
            (Some(id), _) if self.certs => format!("the client certificate is {id}"),
            (_, Some(_)) if self.key.is_some() => {
                format!("its {PROXY_TOKEN_HEADER} is not this gateway's")
            }
            _ => format!(
                "it presented no credentials (a client certificate proxy/{gateway} or \
                 {PROXY_TOKEN_HEADER}, as `flotilla bootstrap` writes them)"
            ),
        };
        denials.bump();
        tracing::warn!(
            gateway,
            remote = %caller.remote(),
            peer = ?caller.peer().map(ToString::to_string),
            reason = %why,
            "refused a proxy: it names a gateway it has not proved it serves"
        );
        Err(Status::permission_denied(format!(
            "this proxy may not receive gateway {gateway}: {why}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(peer: Option<Identity>, token: Option<&str>, proxy: Option<&str>) -> Caller {
        Caller {
            conn: Some(ConnInfo {
                remote: "127.0.0.1:1".parse().expect("addr"),
                peer,
            }),
            token: token.map(str::to_owned),
            proxy_token: proxy.map(str::to_owned),
        }
    }

    fn id(role: Role, name: &str) -> Option<Identity> {
        Some(Identity::new(role, name).expect("identity"))
    }

    #[test]
    fn tls_checks_the_role() {
        let d = Denials::default();
        let a = PeerAuth::Tls;
        assert!(a
            .check(
                &caller(id(Role::Store, "2"), None, None),
                "raft",
                &[Role::Store],
                &d
            )
            .is_ok());
        let e = a
            .check(
                &caller(id(Role::Edge, "e"), None, None),
                "raft",
                &[Role::Store],
                &d,
            )
            .expect_err("edge on raft");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = a
            .check(&caller(None, None, None), "raft", &[Role::Store], &d)
            .expect_err("anonymous");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert_eq!(d.get(), 2);
    }

    #[test]
    fn tokens_must_match_exactly() {
        let d = Denials::default();
        let a = PeerAuth::Token("s3cret-s3cret".into());
        assert!(a
            .check(&caller(None, Some("s3cret-s3cret"), None), "w", &[], &d)
            .is_ok());
        for bad in [None, Some(""), Some("s3cret-s3cre"), Some("s3cret-s3cret!")] {
            assert!(a.check(&caller(None, bad, None), "w", &[], &d).is_err());
        }
    }

    #[test]
    fn a_proxy_token_names_one_gateway() {
        let key = ProxyKey::new(&[7u8; 32]).expect("key");
        let auth = ProxyAuth {
            key: Some(key.clone()),
            certs: true,
        };
        let d = Denials::default();
        let t = key.token("east/infra/public");
        assert!(auth
            .check(&caller(None, None, Some(&t)), "east/infra/public", &d)
            .is_ok());
        assert!(auth
            .check(&caller(None, None, Some(&t)), "east/infra/private", &d)
            .is_err());
        let other = ProxyKey::new(&[8u8; 32]).expect("key");
        assert!(auth
            .check(
                &caller(None, None, Some(&other.token("east/infra/public"))),
                "east/infra/public",
                &d
            )
            .is_err());
        // A certificate names its gateway.
        let cert = id(Role::Proxy, "east/infra/public");
        assert!(auth
            .check(&caller(cert.clone(), None, None), "east/infra/public", &d)
            .is_ok());
        assert!(auth
            .check(&caller(cert, None, None), "east/infra/private", &d)
            .is_err());
        // A store's certificate is not a proxy's.
        assert!(auth
            .check(
                &caller(id(Role::Store, "1"), None, None),
                "east/infra/public",
                &d
            )
            .is_err());
        assert!(ProxyKey::new(&[1u8; 31]).is_err());
        assert_eq!(d.get(), 4);
    }
}
