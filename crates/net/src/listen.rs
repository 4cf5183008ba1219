//! Listeners that a hostile peer cannot exhaust.
//!
//! [`bind`] listens with a chosen backlog (a connect storm of thousands of proxies must not
//! overflow the kernel's accept queue). [`incoming`] accepts under a connection limit (at the
//! limit the oldest connection still in its handshake makes room; when every slot is an
//! established connection it stops accepting: the kernel queue holds newcomers, nothing
//! spins), backs accept
//! errors off (EMFILE is retried after a pause, not at once), gives every connection a
//! deadline for its handshake (TLS, or the first byte of a plaintext protocol), closes
//! connections that read nothing for the idle timeout, and yields [`Conn`]s that carry their
//! peer's address and [`Identity`] to the service (tonic: `request.extensions()` holds a
//! [`ConnInfo`]; axum: `ConnectInfo<ConnInfo>`).

use crate::identity::Identity;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Default listen backlog. The kernel caps it at `net.core.somaxconn` (4,096 on current
/// kernels; raise that too for bigger storms).
pub const DEFAULT_BACKLOG: u32 = 4096;
/// Default time a new connection has for its TLS handshake or first byte.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may read nothing. Longer than every keepalive Flotilla's servers
/// and clients send (a live HTTP/2 peer answers pings), so only dead or silent peers hit it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Pauses after an accept error: doubling from the first to the last.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What one listener allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Kernel accept queue length.
    pub backlog: u32,
    /// Connections held at once; at the limit the listener stops accepting.
    pub max_connections: usize,
    /// Time from accept to a finished handshake (TLS) or the first byte (plaintext).
    pub handshake_timeout: Duration,
    /// A connection that reads nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The defaults with `max_connections`.
    pub fn with_max_connections(max_connections: usize) -> Self {
        Self {
            backlog: DEFAULT_BACKLOG,
            max_connections: max_connections.max(1),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What a service learns about the connection a request came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    /// The identity its client certificate proved; `None` without TLS or without a certificate.
    pub peer: Option<Identity>,
}

/// Turns an accepted TCP stream into the stream a server speaks on, proving who the peer is
/// where it can.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(
        &self,
        tcp: TcpStream,
    ) -> impl Future<Output = io::Result<(Self::Io, Option<Identity>)>> + Send;
}

/// No TLS: the connection is handed on once its first byte arrived (a connection that never
/// sends anything never reaches the server).
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    async fn handshake(&self, tcp: TcpStream) -> io::Result<(TcpStream, Option<Identity>)> {
        let mut b = [0u8; 1];
        match tcp.peek(&mut b).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before sending anything",
            )),
            _ => Ok((tcp, None)),
        }
    }
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenStats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub handshake_failed: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub idle_closed: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Times the listener stopped accepting because it held `max_connections` established
    /// connections.
    pub at_limit: AtomicU64,
    /// Connections closed before their handshake finished to make room for a newcomer.
    pub evicted: AtomicU64,
}

/// A snapshot of [`ListenStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenCounters {
    pub accepted: u64,
    pub active: u64,
    pub handshake_failed: u64,
    pub handshake_timeouts: u64,
    pub idle_closed: u64,
    pub accept_errors: u64,
    pub at_limit: u64,
    pub evicted: u64,
}

impl ListenStats {
    pub fn snapshot(&self) -> ListenCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenCounters {
            accepted: g(&self.accepted),
            active: g(&self.active),
            handshake_failed: g(&self.handshake_failed),
            handshake_timeouts: g(&self.handshake_timeouts),
            idle_closed: g(&self.idle_closed),
            accept_errors: g(&self.accept_errors),
            at_limit: g(&self.at_limit),
            evicted: g(&self.evicted),
        }
    }
}

/// Binds `addr` with `backlog` (and SO_REUSEADDR, so a restarted server rebinds at once).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts connections from `listener` under `limits` until `shutdown` (or until the returned
/// receiver is dropped). Connections come out of the receiver once their handshake is done;
/// a tonic server takes it as `ReceiverStream::new(rx)`.
pub fn incoming<H: Handshake>(
    listener: TcpListener,
    limits: Limits,
    handshake: H,
    stats: Arc<ListenStats>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<Conn<H::Io>>> {
    // Every connection holds a permit, so at most `max_connections` can be queued here.
    let (tx, rx) = mpsc::channel(limits.max_connections.max(1));
    let addr = listener.local_addr().ok();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let pending = Pending::default();
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut next_id: u64 = 0;
        // Said once per episode at the limit, not once per newcomer.
        let mut limit_logged = false;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    a
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would spin; the
                    // pending connection stays queued and is taken once resources free up.
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if backoff == ACCEPT_BACKOFF_MIN {
                        tracing::error!(?addr, error = %e, "accept failed; backing off");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => {
                    limit_logged = false;
                    p
                }
                Err(_) => {
                    // Full, and a newcomer is here. Connections that have not finished their
                    // handshake have proved nothing: the oldest makes room for it (a flood of
                    // silent connections then only evicts itself, and a client that talks at
                    // once gets through). When every slot is an established connection, the
                    // newcomer waits for one to close and the kernel queues the rest.
                    if pending.evict_oldest() {
                        stats.evicted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.at_limit.fetch_add(1, Ordering::Relaxed);
                        if !limit_logged {
                            tracing::warn!(
                                ?addr,
                                limit = limits.max_connections,
                                "connection limit reached: not accepting until a connection closes"
                            );
                            limit_logged = true;
                        }
                    }
                    tokio::select! {
                        p = permits.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        () = shutdown.cancelled() => return,
                        () = tx.closed() => return,
                    }
                }
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = tcp.set_nodelay(true);
            next_id += 1;
            let id = next_id;
            let evicted = pending.add(id);
            let (h, tx, stats, pending) = (
                handshake.clone(),
                tx.clone(),
                stats.clone(),
                pending.clone(),
            );
            tokio::spawn(async move {
                let outcome = tokio::select! {
                    r = tokio::time::timeout(limits.handshake_timeout, h.handshake(tcp)) => Some(r),
                    () = evicted.cancelled() => None,
                };
                pending.remove(id);
                match outcome {
                    Some(Ok(Ok((io, peer)))) => {
                        stats.active.fetch_add(1, Ordering::Relaxed);
                        let conn = Conn {
                            io,
                            info: ConnInfo { remote, peer },
                            idle: Idle::new(limits.idle_timeout),
                            stats: stats.clone(),
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Some(Ok(Err(e))) => {
                        stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%remote, error = %e, "handshake failed");
                    }
                    Some(Err(_)) => {
                        stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%remote, "handshake timed out");
                    }
                    None => tracing::debug!(%remote, "evicted before its handshake finished"),
                }
            });
        }
    });
    rx
}

/// Connections whose handshake is running, oldest first.
#[derive(Clone, Default)]
struct Pending(Arc<std::sync::Mutex<std::collections::BTreeMap<u64, CancellationToken>>>);

impl Pending {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, CancellationToken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a handshake; the token fires if it is evicted.
    fn add(&self, id: u64) -> CancellationToken {
        let t = CancellationToken::new();
        self.lock().insert(id, t.clone());
        t
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Cancels the oldest running handshake; false if there is none.
    fn evict_oldest(&self) -> bool {
        match self.lock().pop_first() {
            Some((_, t)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The read deadline of a connection.
struct Idle {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

/// An accepted connection: its stream, what is known of its peer, and its share of the
/// listener's connection limit (returned when it is dropped).
pub struct Conn<Io> {
    io: Io,
    info: ConnInfo,
    idle: Idle,
    stats: Arc<ListenStats>,
    _permit: OwnedSemaphorePermit,
}

impl<Io> Conn<Io> {
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl<Io> Drop for Conn<Io> {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Conn<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let deadline = tokio::time::Instant::now() + this.idle.timeout;
                    this.idle.sleep.as_mut().reset(deadline);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.idle.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(remote = %this.info.remote, "closing an idle connection");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Conn<Io> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<Io> tonic::transport::server::Connected for Conn<Io> {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests;
