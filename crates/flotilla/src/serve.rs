//! Server plumbing every command shares: supervising the tasks of a process, binding a
//! listener, connection limits, and the TLS of client-facing servers. It knows the flags
//! ([`crate::cli`]) and no command: `runtime` and `ratelimit_cmd` both build on it.

use crate::cli::ListenArgs;
use anyhow::{anyhow, bail, Context, Result};
use flotilla_net::{ClientAuth, Limits, PeerAuth, Role, ServerSecurity, Tls};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Runs every task until shutdown; the first task to fail (or to end before shutdown) stops
/// the others and makes the process exit non-zero.
pub(crate) async fn supervise(
    mut tasks: JoinSet<Result<()>>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let outcome: Result<()> = match done {
            Ok(Ok(())) if shutdown.is_cancelled() => continue,
            Ok(Ok(())) => Err(anyhow!("a critical task ended unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow!("a critical task panicked: {e}")),
        };
        if let Err(e) = outcome {
            tracing::error!("{e:#}");
            first_error.get_or_insert(e);
            shutdown.cancel();
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Binds a listener after checking it may be exposed as configured: a plaintext port on a
/// non-loopback address needs `--insecure` (and is logged).
pub(crate) fn bind(
    addr: SocketAddr,
    what: &str,
    listen: &ListenArgs,
    tls: bool,
) -> Result<TcpListener> {
    if !tls && !addr.ip().is_loopback() {
        if !listen.insecure {
            bail!(
                "refusing to serve the {what} port on {addr} without TLS: every host that can \
                 reach it could use it. Give this part certificates (--tls-ca, --tls-cert, \
                 --tls-key; `flotilla certs` makes them), bind a loopback address, or pass \
                 --insecure to accept the risk"
            );
        }
        tracing::warn!(
            %addr,
            "INSECURE: the {what} port serves plaintext on a non-loopback address; anyone who \
             can reach it is trusted"
        );
    }
    flotilla_net::listen::bind(addr, listen.backlog)
        .with_context(|| format!("binding the {what} address {addr}"))
}

/// Connections reserved for files (logs, data, YAML), outgoing connections and the runtime.
pub(crate) const FD_RESERVE: usize = 1024;

/// Connection limits of the listeners that are not a part's main one.
pub(crate) const API_CONNECTIONS: usize = 1024;

pub(crate) const ADMIN_CONNECTIONS: usize = 64;

/// Edges and peers on a store's gRPC port (no proxies there).
pub(crate) const STORE_GRPC_CONNECTIONS: usize = 4096;

/// The limits of a listener allowed `max_connections`.
pub(crate) fn limits(listen: &ListenArgs, max_connections: usize) -> Limits {
    Limits {
        backlog: listen.backlog,
        max_connections,
        handshake_timeout: std::time::Duration::from_secs(listen.handshake_timeout_secs.max(1)),
        idle_timeout: std::time::Duration::from_secs(listen.idle_timeout_secs.max(1)),
    }
}

/// The main listener's connection limit: as asked, or what the open file limit leaves after
/// `others` connections of the other listeners and [`FD_RESERVE`]; so that the process never
/// runs out of descriptors for its files, whatever its peers do.
pub(crate) fn main_limit(listen: &ListenArgs, others: usize) -> Result<usize> {
    let nofile = usize::try_from(flotilla_net::limits::nofile()).unwrap_or(usize::MAX);
    let budget = nofile.saturating_sub(others + FD_RESERVE);
    match listen.max_connections {
        Some(n) if n > budget => bail!(
            "--max-connections {n} does not fit the open file limit {nofile} (other listeners \
             {others}, reserve {FD_RESERVE}): raise the limit (ulimit -n) or lower it"
        ),
        Some(n) => Ok(n.max(1)),
        None if budget < 64 => {
            bail!("the open file limit {nofile} leaves {budget} connections: raise it (ulimit -n)")
        }
        None => Ok(budget),
    }
}

/// Plaintext security of a listener.
pub(crate) fn plain(auth: PeerAuth, limits: Limits) -> ServerSecurity {
    ServerSecurity {
        acceptor: flotilla_net::Acceptor::Plain,
        auth,
        limits,
    }
}

/// A listener's security: TLS with `client_auth` when this part has a certificate, else
/// plaintext.
pub(crate) fn secured(
    tls: Option<&Tls>,
    client_auth: ClientAuth,
    auth: PeerAuth,
    limits: Limits,
) -> ServerSecurity {
    match tls {
        Some(t) => ServerSecurity {
            acceptor: flotilla_net::Acceptor::Tls(t.acceptor(client_auth)),
            auth,
            limits,
        },
        None => plain(auth, limits),
    }
}

/// A port that proxies, API and metrics clients reach: TLS when this part has a certificate,
/// a client certificate optional (they may bring a token instead); who may do what is decided
/// above the connection (proxy and API authentication).
pub(crate) fn client_facing(tls: Option<&Tls>, limits: Limits) -> ServerSecurity {
    secured(tls, ClientAuth::Optional, PeerAuth::Open, limits)
}

/// Loads this part's certificate, checks it is one of `roles`, and reloads the files when
/// they change (until shutdown).
pub(crate) fn load_tls(
    listen: &ListenArgs,
    roles: &[Role],
    shutdown: &CancellationToken,
) -> Result<Option<Tls>> {
    let Some(files) = listen.tls_files() else {
        return Ok(None);
    };
    let tls = Tls::load(files)?;
    let id = tls.identity();
    if !roles.contains(&id.role) {
        bail!(
            "the certificate {} is {id}: this part needs a certificate of role {}",
            tls.files().cert.display(),
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    info!(identity = %id, "TLS on: peers must prove who they are");
    tls.watch(shutdown.clone());
    Ok(Some(tls))
}
