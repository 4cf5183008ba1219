//! The client side of Flotilla's connections, one code path with or without TLS.
//!
//! [`Connector`] is a `tower::Service<http::Uri>` for
//! `tonic::transport::Endpoint::connect_with_connector(_lazy)` (and hyper-util's clients): it
//! dials TCP, handshakes with the client configuration in force at that moment (so a rotated
//! certificate is used from the next connection on), and checks the server's identity has the
//! role the caller expects. The server name comes from the URI's host (a DNS name or an IP
//! address) and must be in the server certificate's SANs.
//!
//! The scheme is not what decides TLS, the connector is: a TLS connector speaks TLS to
//! `http://` URIs too, and a plaintext connector refuses `https://` ones rather than sending
//! plaintext where the caller meant TLS. (Flotilla builds tonic without its own TLS features;
//! with them, tonic would refuse `https://` URIs on a custom connector, so `http://` is the
//! portable spelling.)

use super::{check_role, Tls};
use crate::identity::{Identity, Role};
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// Default time for the TCP connect and the TLS handshake together: a server that accepts but
/// never answers must not hold a caller forever.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials Flotilla's servers; see the module documentation.
#[derive(Clone, Debug)]
pub struct Connector {
    tls: Option<TlsSide>,
    timeout: Duration,
}

#[derive(Clone, Debug)]
struct TlsSide {
    tls: Tls,
    expect_role: Option<Role>,
    http1: bool,
}

impl Connector {
    /// No TLS.
    pub fn plain() -> Self {
        Self {
            tls: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// TLS presenting `tls`'s certificate, ALPN `h2`. With `expect_role`, a server whose
    /// certificate carries another role (or no Flotilla identity) is refused after the
    /// handshake: an edge dialling a store must not stream from an edge or an admin client
    /// that happens to hold a certificate for the same host.
    pub fn tls(tls: Tls, expect_role: Option<Role>) -> Self {
        Self {
            tls: Some(TlsSide {
                tls,
                expect_role,
                http1: false,
            }),
            timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Offers ALPN `http/1.1` instead of `h2` (HTTP/1 clients). No effect without TLS.
    pub fn http1(mut self) -> Self {
        if let Some(t) = &mut self.tls {
            t.http1 = true;
        }
        self
    }

    /// Time for the TCP connect and the TLS handshake together.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Dials `uri`'s host and port (default 443 for `https`, 80 otherwise). Errors name the
    /// peer and the step that failed.
    pub async fn connect(&self, uri: &Uri) -> io::Result<ClientStream> {
        let host = uri.host().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host"))
        })?;
        let https = uri.scheme_str() == Some("https");
        if https && self.tls.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{uri}: an https URI needs a TLS connector (this one is plaintext)"),
            ));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `Uri::host` keeps an IPv6 address's brackets; the socket and the server name do not
        // want them.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let peer = format!("{host}:{port}");
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.dial(bare, port, &peer))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{peer}: not connected within {timeout:?}"),
                )
            })?
    }

    async fn dial(&self, host: &str, port: u16, peer: &str) -> io::Result<ClientStream> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {peer}: {e}")))?;
        tcp.set_nodelay(true)?;
        let Some(side) = &self.tls else {
            return Ok(ClientStream::Plain(tcp));
        };
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{peer}: {host:?} is not a DNS name or an IP address: {e}"),
            )
        })?;
        let config = if side.http1 {
            side.tls.client_config_http1()
        } else {
            side.tls.client_config()
        };
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {peer}: {e}")))?;
        if let Some(want) = side.expect_role {
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first());
            if let Err(why) = check_role(cert, want) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{peer} {why}"),
                ));
            }
        }
        Ok(ClientStream::Tls(Box::new(stream)))
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<ClientStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await.map(TokioIo::new) })
    }
}

/// A connection a [`Connector`] made.
pub type ClientStream = crate::stream::MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

impl ClientStream {
    /// The server's own certificate; `None` without TLS.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.get_ref().1.peer_certificates().and_then(|c| c.first()),
        }
    }

    /// The identity the server's certificate carries; `None` without TLS or without one.
    pub fn server_identity(&self) -> Option<Identity> {
        self.peer_certificate()
            .and_then(|c| super::identity_of_cert(c).ok())
    }

    /// The protocol ALPN settled on.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}
