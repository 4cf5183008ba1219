//! Who may call the API, and what they may do.
//!
//! A request's caller is a [`Principal`]: a name and a [`Role`] (`reader`: every `GET`;
//! `admin`: everything, Secret data in full). Credentials, in the order they are looked at:
//!
//! 1. `Authorization: Bearer <token>`, checked against a [`TokenFile`] (`--api-tokens`). A
//!    request that sends the header must send a valid token: it is never let through as
//!    anonymous, nor does a client certificate rescue it (a typo in a token should be an error,
//!    not a silent downgrade).
//! 2. A client certificate, as the TLS listener proved it: the request's extensions hold a
//!    `flotilla_net::ConnInfo`, either wrapped in `axum::extract::ConnectInfo` (a server built
//!    with `into_make_service_with_connect_info::<ConnInfo>()`) or inserted as is (tonic's way,
//!    or a hand-written accept loop). `spiffe://flotilla/admin/<name>` is an admin,
//!    `.../reader/<name>` a reader; every other identity (store, edge, agent, proxy) is known
//!    but has no API rights (403).
//! 3. Nothing. With credentials configured ([`Auth::requires_credentials`]), 401. Without any
//!    (dev mode: no `--api-tokens`, no client-certificate auth, today's loopback default) the
//!    caller is `anonymous` with the reader role, and the admin endpoints answer 403.
//!
//! Why dev mode reads but does not administer: reads are what a developer on a laptop needs
//! (curl the route and its status) and, with Secret data redacted for readers, give nothing
//! away; membership changes and snapshot purges can break a cluster, and their only users
//! (`flotilla ctl`, the membership e2e test) pass a token. So an API reachable without
//! credentials never changes the cluster and never shows a private key.
//!
//! 401 answers carry `WWW-Authenticate: Bearer`; 403 answers name the role the endpoint needs.
//! Every answer is JSON `{"error": "..."}`, as the rest of the API.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_net::ConnInfo;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// How often the tokens file is looked at for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The shortest token the file may hold: 32 characters (128 bits as hex) make guessing hopeless
/// even without a rate limit. `flotilla token` makes 64 (256 bits).
pub const MIN_TOKEN_LEN: usize = 32;
/// The prefix of a token stored as its SHA-256 (lowercase or uppercase hex).
pub const SHA256_PREFIX: &str = "sha256:";
/// The name of the caller of a server without credentials.
pub const ANONYMOUS: &str = "anonymous";

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every `GET` endpoint; Secret data redacted.
    Reader,
    /// Everything, Secret data in full.
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Reader, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The API role of a certificate identity's role; `None`: no API rights.
    pub fn of_identity(r: flotilla_net::Role) -> Option<Role> {
        match r {
            flotilla_net::Role::Admin => Some(Role::Admin),
            flotilla_net::Role::Reader => Some(Role::Reader),
            flotilla_net::Role::Store
            | flotilla_net::Role::Edge
            | flotilla_net::Role::Agent
            | flotilla_net::Role::Nats
            | flotilla_net::Role::Proxy => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request comes from. Handlers behind the auth layer find it in the request's
/// extensions (`Extension<Principal>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role)
    }
}

/// One problem of a tokens file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the API tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API tokens file {path} is invalid:{}", list(path, errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<LineError>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn list(path: &Path, errors: &[LineError]) -> String {
    errors
        .iter()
        .map(|e| format!("\n  {}:{}: {}", path.display(), e.line, e.message))
        .collect()
}

/// The SHA-256 of a token, as the file's `sha256:` form holds it.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token: 256 bits, 64 hex characters.
pub fn generate_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    // ThreadRng: a CSPRNG seeded from the OS, reseeded periodically.
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The tokens file line of `token` that holds only its digest.
pub fn token_line(role: Role, name: &str, token: &str) -> String {
    format!(
        "{role} {name} {SHA256_PREFIX}{}",
        hex::encode(token_digest(token))
    )
}

/// Checks a principal name as the tokens file takes it (it names the caller in logs).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?}: use 1 to 253 characters of [A-Za-z0-9._@-]"
        ))
    }
}

struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

/// The tokens of one version of a tokens file.
///
/// Format: one token a line, `<role> <name> <token>` (whitespace separated), where `<token>` is
/// the token itself (at least [`MIN_TOKEN_LEN`] characters) or `sha256:<64 hex digits>`, its
/// SHA-256, so that the file holds no secret. `#` starts a comment line; blank lines are
/// ignored. Names and tokens are unique.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<Entry>,
    /// Lines that hold a token itself rather than its digest.
    plaintext: usize,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: never the digests.
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.principal))
            .finish()
    }
}

impl Tokens {
    /// Parses a tokens file's text; every problem, with its line number.
    pub fn parse(text: &str) -> Result<Tokens, Vec<LineError>> {
        let mut out = Tokens::default();
        let mut errors = Vec::new();
        let mut names = std::collections::HashMap::new();
        let mut digests = std::collections::HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut err = |message: String| errors.push(LineError { line: n, message });
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, token] = fields[..] else {
                err(format!(
                    "expected `<role> <name> <token>` (3 fields), found {}",
                    fields.len()
                ));
                continue;
            };
            let role = Role::parse(role);
            if role.is_none() {
                err(format!(
                    "unknown role {:?} (expected admin or reader)",
                    fields[0]
                ));
            }
            if let Err(e) = check_name(name) {
                err(e);
            }
            let digest = match token.strip_prefix(SHA256_PREFIX) {
                Some(h) => match hex::decode(h) {
                    Ok(d) if d.len() == 32 => {
                        let mut a = [0u8; 32];
                        a.copy_from_slice(&d);
                        Some(a)
                    }
                    _ => {
                        err(format!(
                            "{SHA256_PREFIX} must be followed by 64 hex digits (the token's SHA-256)"
                        ));
                        None
                    }
                },
                None if token.chars().count() < MIN_TOKEN_LEN => {
                    err(format!(
                        "the token of {name:?} has {} characters; tokens need at least {MIN_TOKEN_LEN} (make one with `flotilla token`)",
                        token.chars().count()
                    ));
                    None
                }
                None => {
                    out.plaintext += 1;
                    Some(token_digest(token))
                }
            };
            if let Some(first) = names.insert(name.to_string(), n) {
                err(format!("name {name:?} is already used on line {first}"));
            }
            if let Some(d) = digest {
                if let Some(first) = digests.insert(d, n) {
                    err(format!("the same token is already on line {first}"));
                }
            }
            if let (Some(role), Some(digest)) = (role, digest) {
                out.entries.push(Entry {
                    digest,
                    principal: Principal {
                        name: name.to_string(),
                        role,
                    },
                });
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// The principal a token stands for. The token's digest is compared with every entry's in
    /// constant time, so the answer's timing tells nothing about how close a guess was.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        let d = token_digest(token);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&d)) {
                found = Some(&e.principal);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What identifies one version of a file: a change of any of these means "read it again".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        }
    }
}

/// A tokens file and the tokens of its last good version, shared by the API's requests and
/// the task that reloads it ([`TokenFile::watch`]).
#[derive(Clone)]
pub struct TokenFile {
    path: PathBuf,
    current: Arc<RwLock<Arc<Tokens>>>,
    /// The version last looked at (good or bad): a bad version is reported once, not every poll.
    seen: Arc<std::sync::Mutex<Option<Stamp>>>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("tokens", &self.tokens().len())
            .finish()
    }
}

impl TokenFile {
    /// Reads and checks the file; any problem is an error (a server refuses to start on it).
    pub fn load(path: impl Into<PathBuf>) -> Result<TokenFile> {
        let path = path.into();
        let (tokens, stamp) = read(&path)?;
        warn_if_exposed(&path, &tokens);
        Ok(TokenFile {
            path,
            current: Arc::new(RwLock::new(Arc::new(tokens))),
            seen: Arc::new(std::sync::Mutex::new(Some(stamp))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens of the last good version.
    pub fn tokens(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the file again if it changed since last looked at. `None`: unchanged;
    /// `Some(Ok(n))`: now `n` tokens; `Some(Err(_))`: the new version is bad and the tokens
    /// before it stay.
    pub fn reload_if_changed(&self) -> Option<Result<usize>> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some(Stamp::of(&m)),
            Err(_) => None,
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == stamp {
                return None;
            }
            *seen = stamp;
        }
        Some(read(&self.path).map(|(tokens, _)| {
            warn_if_exposed(&self.path, &tokens);
            let n = tokens.len();
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
            n
        }))
    }

    /// Looks at the file every `interval` until `shutdown`, and swaps in every good new
    /// version. A bad one is logged (with its line numbers) and the tokens before it stay.
    pub async fn watch(self, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            // A few small syscalls: the blocking pool would cost more than it saves.
            match self.reload_if_changed() {
                None => {}
                Some(Ok(n)) => tracing::info!(
                    path = %self.path.display(),
                    tokens = n,
                    "reloaded the API tokens file"
                ),
                Some(Err(e)) => tracing::error!(
                    "{e}\n(keeping the {} tokens of its last good version)",
                    self.tokens().len()
                ),
            }
        }
    }
}

fn read(path: &Path) -> Result<(Tokens, Stamp)> {
    let io = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let stamp = Stamp::of(&std::fs::metadata(path).map_err(io)?);
    let text = std::fs::read_to_string(path).map_err(io)?;
    let tokens = Tokens::parse(&text).map_err(|errors| Error::Invalid {
        path: path.to_path_buf(),
        errors,
    })?;
    Ok((tokens, stamp))
}

/// A file that holds tokens themselves should be readable by its owner only.
fn warn_if_exposed(path: &Path, tokens: &Tokens) {
    use std::os::unix::fs::PermissionsExt;
    if tokens.plaintext == 0 {
        return;
    }
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the API tokens file holds {} token(s) in clear and others may read it: \
                 chmod 600 it, or store `sha256:` digests (flotilla token prints them)",
                tokens.plaintext
            );
        }
    }
}

/// How the API authenticates its callers.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    tokens: Option<TokenFile>,
    client_certs: bool,
}

impl Auth {
    /// Dev mode: no credentials; anonymous callers read (Secret data redacted) and nobody
    /// administers. See the module documentation for why.
    pub fn none() -> Auth {
        Auth::default()
    }

    /// Bearer tokens from `tokens`.
    pub fn with_tokens(mut self, tokens: TokenFile) -> Auth {
        self.tokens = Some(tokens);
        self
    }

    /// The listener verifies client certificates and passes the identity on in a
    /// `flotilla_net::ConnInfo` extension: callers without credentials get 401.
    pub fn with_client_certs(mut self) -> Auth {
        self.client_certs = true;
        self
    }

    /// Whether a caller without credentials is refused (else: anonymous reader).
    pub fn requires_credentials(&self) -> bool {
        self.tokens.is_some() || self.client_certs
    }

    /// The caller of a request.
    pub fn authenticate(&self, req: &Request) -> Result<Principal, AuthError> {
        if let Some(h) = req.headers().get(header::AUTHORIZATION) {
            return self.bearer(h);
        }
        let conn = req
            .extensions()
            .get::<ConnectInfo<ConnInfo>>()
            .map(|c| &c.0)
            .or_else(|| req.extensions().get::<ConnInfo>());
        if let Some(id) = conn.and_then(|c| c.peer.as_ref()) {
            return match Role::of_identity(id.role) {
                Some(role) => Ok(Principal {
                    name: id.name.clone(),
                    role,
                }),
                None => Err(AuthError::Forbidden(format!(
                    "the client certificate's identity {} has no API rights \
                     (API clients are spiffe://flotilla/admin/NAME or .../reader/NAME)",
                    id.uri()
                ))),
            };
        }
        if self.requires_credentials() {
            return Err(AuthError::Unauthenticated {
                message: "credentials required: send `Authorization: Bearer <token>`".into(),
                invalid_token: false,
            });
        }
        Ok(Principal {
            name: ANONYMOUS.into(),
            role: Role::Reader,
        })
    }

    fn bearer(&self, h: &HeaderValue) -> Result<Principal, AuthError> {
        let bad = |message: &str, invalid_token| AuthError::Unauthenticated {
            message: message.into(),
            invalid_token,
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let token = h
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the Authorization header must be `Bearer <token>`", false))?;
        let Some(file) = &self.tokens else {
            return Err(bad(
                "this server takes no bearer tokens (it was started without --api-tokens)",
                true,
            ));
        };
        file.tokens()
            .authenticate(token)
            .cloned()
            .ok_or_else(|| bad("invalid token", true))
    }
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: no credentials, or bad ones.
    #[error("{message}")]
    Unauthenticated {
        message: String,
        invalid_token: bool,
    },
    /// 403: a known caller without the role.
    #[error("{0}")]
    Forbidden(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (code, challenge) = match &self {
            AuthError::Unauthenticated {
                invalid_token: true,
                ..
            } => (
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="flotilla", error="invalid_token""#),
            ),
            AuthError::Unauthenticated { .. } => {
                (StatusCode::UNAUTHORIZED, Some(r#"Bearer realm="flotilla""#))
            }
            AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, None),
        };
        let mut r = (code, Json(json!({"error": self.to_string()}))).into_response();
        if let Some(c) = challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        r
    }
}

/// The auth layer's state: how to authenticate, and the role the routes it guards need.
#[derive(Clone)]
pub(crate) struct Guard {
    pub auth: Auth,
    pub needs: Role,
}

/// Middleware: authenticates the caller, checks its role, and hands the [`Principal`] to the
/// handler. Runs before the handler reads the body or waits for the heavy-answer gate, so an
/// unauthenticated caller costs neither.
pub(crate) async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let p = match g.auth.authenticate(&req) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(method = %req.method(), path = %req.uri().path(), error = %e, "refused");
            return e.into_response();
        }
    };
    if p.role < g.needs {
        let msg = if !g.auth.requires_credentials() {
            "admin operations need credentials: start the store with --api-tokens".to_string()
        } else {
            format!(
                "{} {} needs the {} role; {} has the {} role",
                req.method(),
                req.uri().path(),
                g.needs,
                p.name,
                p.role
            )
        };
        return AuthError::Forbidden(msg).into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        // The audit trail of changes: who asked for what.
        tracing::info!(principal = %p, method = %req.method(), uri = %req.uri(), "admin request");
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

#[cfg(test)]
mod tests;
