//! One way to serve: an [`Acceptor`] (plaintext or TLS) behind [`crate::listen::incoming`],
//! the tonic server settings every Flotilla gRPC port shares, and what a part needs to know
//! to authenticate its callers ([`ServerSecurity`]) and itself to its servers
//! ([`ClientSecurity`]).

use crate::auth::{PeerAuth, TOKEN_HEADER};
use crate::identity::Identity;
use crate::listen::{self, Conn, Handshake, Limits, ListenStats, Plain};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// How a server turns TCP connections into the streams it speaks on.
#[derive(Clone, Debug, Default)]
pub enum Acceptor {
    /// Plaintext; the first byte must arrive within the handshake timeout.
    #[default]
    Plain,
    /// TLS; the handshake must finish within the handshake timeout.
    Tls(crate::tls::Acceptor),
}

/// A server-side connection stream: plaintext or TLS.
pub type Stream = crate::stream::MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

impl Handshake for Acceptor {
    type Io = Stream;
    async fn handshake(&self, tcp: TcpStream) -> io::Result<(Stream, Option<Identity>)> {
        match self {
            Acceptor::Plain => {
                let (s, id) = Plain.handshake(tcp).await?;
                Ok((Stream::Plain(s), id))
            }
            Acceptor::Tls(a) => {
                let (s, id) = a.handshake(tcp).await?;
                Ok((Stream::Tls(Box::new(s)), id))
            }
        }
    }
}

impl Acceptor {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Acceptor::Plain)
    }
}

/// How a server port authenticates and limits its callers.
#[derive(Clone, Debug)]
pub struct ServerSecurity {
    pub acceptor: Acceptor,
    pub auth: PeerAuth,
    pub limits: Limits,
}

impl Default for ServerSecurity {
    /// Plaintext, unauthenticated (loopback dev), default limits.
    fn default() -> Self {
        Self {
            acceptor: Acceptor::Plain,
            auth: PeerAuth::Open,
            limits: Limits::with_max_connections(1024),
        }
    }
}

/// How a part proves itself to the servers it calls.
#[derive(Clone, Debug)]
pub struct ClientSecurity {
    /// Sent as [`TOKEN_HEADER`] (the server's [`PeerAuth::Token`]).
    pub token: Option<Arc<str>>,
    /// Dials the server: plaintext, or TLS with this part's certificate.
    pub connector: crate::tls::Connector,
}

impl Default for ClientSecurity {
    fn default() -> Self {
        Self {
            token: None,
            connector: crate::tls::Connector::plain(),
        }
    }
}

impl ClientSecurity {
    /// Adds this part's credentials to an outgoing request.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(t) = &self.token {
            if let Ok(v) = t.parse() {
                req.metadata_mut().insert(TOKEN_HEADER, v);
            }
        }
    }
}

/// Accepted, handshaken connections of `listener`, for `serve_with_incoming`.
pub fn accept(
    listener: TcpListener,
    security: &ServerSecurity,
    stats: Arc<ListenStats>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<Conn<Stream>>> {
    ReceiverStream::new(listen::incoming(
        listener,
        security.limits,
        security.acceptor.clone(),
        stats,
        shutdown,
    ))
}

/// Streams one HTTP/2 connection may have open at once on an internal port (Raft: a few
/// replication and vote streams; watch: one per edge).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Streams a peer may open and reset before the connection is closed (the HTTP/2 rapid
/// reset attack).
pub const MAX_PENDING_RESETS: usize = 32;
/// Request headers an HTTP/2 peer may send.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Pings on every server connection: a peer that vanished is dropped, and a live one always
/// reads something well within the idle timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A tonic server builder with the limits every Flotilla gRPC port shares.
pub fn grpc_server(max_streams_per_connection: u32) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(max_streams_per_connection))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
}

/// [`accept`]'s connections as an axum listener (`axum::serve(listener, app)`); with
/// `into_make_service_with_connect_info::<ConnInfo>()` handlers see each connection's
/// [`ConnInfo`] as `ConnectInfo<ConnInfo>`.
pub struct HttpListener {
    rx: ReceiverStream<io::Result<Conn<Stream>>>,
    local: std::net::SocketAddr,
}

impl HttpListener {
    pub fn new(
        listener: TcpListener,
        security: &ServerSecurity,
        stats: Arc<ListenStats>,
        shutdown: CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            rx: accept(listener, security, stats, shutdown),
            local,
        })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn<Stream>;
    type Addr = crate::listen::ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt;
        loop {
            match self.rx.next().await {
                Some(Ok(conn)) => {
                    let info = conn.info().clone();
                    return (conn, info);
                }
                Some(Err(_)) => continue,
                // The listener stopped (shutdown): axum's graceful shutdown ends the server.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(crate::listen::ConnInfo {
            remote: self.local,
            peer: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for crate::listen::ConnInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        stream.remote_addr().clone()
    }
}
