//! Who may call the REST API of `flotilla store` and `flotilla standalone`: the
//! `--api-tokens` flag, the task that reloads the tokens file, and `flotilla token`, which
//! makes a token and its line for that file. The rules themselves live in `flotilla_api::auth`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use flotilla_api::auth::{self, Auth, Role, TokenFile};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Args, Debug, Clone, Default)]
pub struct ApiAuthArgs {
    /// Bearer tokens of the REST API, one per line: `<admin|reader> <name> <token>`, where the
    /// token may be stored as `sha256:<hex>` (`flotilla token` prints such a line). Reloaded
    /// when it changes. Without it, API callers are anonymous readers (Secret data redacted)
    /// and the admin endpoints (membership, snapshots) answer 403.
    #[arg(long, env = "FLOTILLA_API_TOKENS")]
    pub api_tokens: Option<PathBuf>,
}

/// The API's authentication, ready to serve.
pub struct ApiAuth {
    pub auth: Auth,
    tokens: Option<TokenFile>,
}

impl ApiAuth {
    /// Reads the tokens file (a bad one stops the start, with its line numbers). `api` is the
    /// address the API listens on: without credentials, anything but loopback earns a warning.
    pub fn load(a: &ApiAuthArgs, api: SocketAddr) -> Result<ApiAuth> {
        let Some(path) = &a.api_tokens else {
            if !api.ip().is_loopback() {
                warn!(
                    %api,
                    "the API listens beyond loopback without credentials: anyone who reaches it \
                     reads every object (Secret data redacted); give it --api-tokens"
                );
            }
            return Ok(ApiAuth {
                auth: Auth::none(),
                tokens: None,
            });
        };
        let file = TokenFile::load(path)?;
        let tokens = file.tokens();
        if tokens.is_empty() {
            warn!(path = %path.display(), "the API tokens file holds no token: every API call but the probes is refused");
        }
        info!(path = %path.display(), tokens = tokens.len(), "API bearer tokens loaded");
        Ok(ApiAuth {
            auth: Auth::none().with_tokens(file.clone()),
            tokens: Some(file),
        })
    }

    /// What the start banner says of it.
    pub fn describe(&self) -> String {
        match &self.tokens {
            Some(f) => format!("bearer tokens from {}", f.path().display()),
            None => "none (anonymous read-only; admin operations need --api-tokens)".into(),
        }
    }

    /// Reloads the tokens file when it changes, until `shutdown`; `None` without one.
    pub fn reloader(
        &self,
        shutdown: CancellationToken,
    ) -> Option<impl std::future::Future<Output = Result<()>> + Send + 'static> {
        let file = self.tokens.clone()?;
        Some(async move {
            file.watch(auth::RELOAD_INTERVAL, shutdown).await;
            Ok(())
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Admin,
    Reader,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::Reader => Role::Reader,
        }
    }
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// What the token may do: `reader` reads (Secret data redacted), `admin` does everything.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// Who holds it (shown in the servers' logs): 1 to 253 of [A-Za-z0-9._@-].
    #[arg(long)]
    pub name: String,
}

/// `flotilla token`: prints a fresh token on the first line and its `--api-tokens` line (which
/// holds only the token's SHA-256) on the second; the explanation goes to stderr, so that
/// `flotilla token ... | { read token; read line; }` works.
pub fn token(a: TokenArgs) -> Result<()> {
    auth::check_name(&a.name)
        .map_err(anyhow::Error::msg)
        .context("--name")?;
    let token = auth::generate_token();
    eprintln!(
        "# line 1: the token (keep it secret; flotilla ctl reads it from --token-file)\n\
         # line 2: the line for the servers' --api-tokens file (it holds only the token's SHA-256)"
    );
    println!("{token}");
    println!("{}", auth::token_line(a.role.into(), &a.name, &token));
    Ok(())
}
