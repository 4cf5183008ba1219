//! Real handshakes over real sockets, with certificates made by [`crate::certs`].

use super::*;
use crate::certs::Ca;
use crate::listen::{bind, incoming, Conn, ConnInfo, Limits, ListenStats, Plain};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Waits for real sockets, file polls and tasks; bounded so a broken test fails, not hangs.
const WAIT: Duration = Duration::from_secs(10);

fn id(role: Role, name: &str) -> Identity {
    Identity::new(role, name).expect("valid identity")
}

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

/// A CA in a temp dir, issuing certificates into it.
struct Pki {
    dir: TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::create(dir.path()).expect("CA");
        Self { dir, ca }
    }

    fn files(&self, who: &Identity) -> TlsFiles {
        self.files_with_hosts(who, &hosts())
    }

    fn files_with_hosts(&self, who: &Identity, hosts: &[String]) -> TlsFiles {
        let p = self
            .ca
            .issue(who, hosts, 1, self.dir.path())
            .expect("issue");
        TlsFiles {
            ca: self.ca.cert_path().to_path_buf(),
            cert: p.cert,
            key: p.key,
        }
    }

    fn tls(&self, who: &Identity) -> Tls {
        Tls::load(self.files(who)).expect("load")
    }

    /// Replaces `files`' certificate and key by a fresh certificate for `who`, the way a
    /// rotation does: each file renamed into place.
    fn rotate(&self, files: &TlsFiles, who: &Identity) {
        let next = self.dir.path().join("next");
        let p = self.ca.issue(who, &hosts(), 1, &next).expect("issue");
        std::fs::rename(&p.key, &files.key).expect("rename key");
        std::fs::rename(&p.cert, &files.cert).expect("rename cert");
    }
}

fn limits(handshake_timeout: Duration) -> Limits {
    Limits {
        backlog: 64,
        max_connections: 64,
        handshake_timeout,
        idle_timeout: Duration::from_secs(30),
    }
}

/// A listener that echoes every connection and reports its [`ConnInfo`].
struct Server {
    addr: SocketAddr,
    stats: Arc<ListenStats>,
    conns: mpsc::Receiver<ConnInfo>,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn serve<H: Handshake>(h: H, handshake_timeout: Duration) -> Server {
    let l = bind("127.0.0.1:0".parse().expect("addr"), 64).expect("bind");
    let addr = l.local_addr().expect("addr");
    let stats = Arc::new(ListenStats::default());
    let shutdown = CancellationToken::new();
    let mut rx = incoming(
        l,
        limits(handshake_timeout),
        h,
        stats.clone(),
        shutdown.clone(),
    );
    let (tx, conns) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(Ok(c)) = rx.recv().await {
            let _ = tx.send(c.info().clone()).await;
            tokio::spawn(echo(c));
        }
    });
    Server {
        addr,
        stats,
        conns,
        _shutdown: shutdown.drop_guard(),
    }
}

async fn echo<Io: AsyncRead + AsyncWrite + Unpin>(mut c: Conn<Io>) {
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if c.write_all(&buf[..n]).await.is_err() || c.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Server {
    fn uri(&self) -> http::Uri {
        format!("https://localhost:{}", self.addr.port())
            .parse()
            .expect("uri")
    }

    async fn next_conn(&mut self) -> ConnInfo {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("a connection reaches the server in time")
            .expect("server running")
    }
}

/// Writes a line and expects it back.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    s.write_all(b"ping").await?;
    s.flush().await?;
    let mut b = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut b))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
    assert_eq!(&b, b"ping");
    Ok(())
}

/// A bare rustls client trusting `ca`, presenting `cert` if given: for clients Flotilla's own
/// code would never be.
fn raw_client(ca: &Path, cert: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .expect("versions")
        .with_root_certificates(roots);
    let config = match cert {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .expect("cert")
                    .collect::<Result<_, _>>()
                    .expect("certs"),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client cert"),
    };
    Arc::new(config)
}

/// Handshakes with `config` and pings: the result of a client's whole attempt (under TLS 1.3
/// a client learns its certificate was refused only from the alert that follows the handshake).
async fn attempt(config: Arc<ClientConfig>, addr: SocketAddr) -> io::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut s = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    ping(&mut s).await
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn handshake_failures(s: &Server, n: u64) {
    eventually(&format!("{n} failed handshake(s)"), || {
        s.stats.snapshot().handshake_failed == n
    })
    .await;
}

fn serial_of(cert: &CertificateDer<'_>) -> String {
    parse_cert(cert).expect("x509").raw_serial_as_string()
}

#[tokio::test]
async fn mtls_proves_both_identities() {
    let pki = Pki::new();
    let store = id(Role::Store, "1");
    let edge = id(Role::Edge, "east-1");
    let mut server = serve(
        pki.tls(&store).acceptor(ClientAuth::Required),
        Duration::from_secs(5),
    )
    .await;
    let connector = Connector::tls(pki.tls(&edge), Some(Role::Store));

    let mut s = connector.connect(&server.uri()).await.expect("connect");
    ping(&mut s).await.expect("echo over mTLS");
    assert_eq!(s.server_identity(), Some(store));
    assert_eq!(s.alpn_protocol(), Some(&b"h2"[..]));
    let info = server.next_conn().await;
    assert_eq!(info.peer, Some(edge));
    assert_eq!(info.remote.ip(), server.addr.ip());
}

#[tokio::test]
async fn required_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let server = serve(
        pki.tls(&id(Role::Store, "1"))
            .acceptor(ClientAuth::Required),
        Duration::from_secs(5),
    )
    .await;
    let err = attempt(raw_client(pki.ca.cert_path(), None), server.addr)
        .await
        .expect_err("no certificate, no connection");
    assert!(
        err.to_string().contains("CertificateRequired"),
        "alert says why: {err}"
    );
    handshake_failures(&server, 1).await;
    assert_eq!(server.stats.snapshot().active, 0);
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused_even_where_optional() {
    let pki = Pki::new();
    let other = Pki::new();
    let tls = pki.tls(&id(Role::Store, "1"));
    // Trusts our CA (so it accepts the server) but presents a certificate of another CA.
    let foreign = other.files(&id(Role::Admin, "mallory"));
    for auth in [ClientAuth::Required, ClientAuth::Optional] {
        let server = serve(tls.acceptor(auth), Duration::from_secs(5)).await;
        let client = raw_client(pki.ca.cert_path(), Some((&foreign.cert, &foreign.key)));
        let Err(err) = attempt(client, server.addr).await else {
            panic!("{auth:?}: another CA's certificate was accepted");
        };
        assert!(
            err.to_string().contains("UnknownCA"),
            "{auth:?}: alert says why: {err}"
        );
        handshake_failures(&server, 1).await;
    }
}

/// A certificate the CA signed without a Flotilla identity, made with rcgen directly (the
/// certs module never issues one).
fn cert_without_identity(pki: &Pki) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(pki.dir.path().join(crate::certs::CA_KEY_FILE)).expect("key"),
    )
    .expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(pki.ca.cert_path()).expect("ca"),
        ca_key,
    )
    .expect("issuer");
    let mut params =
        rcgen::CertificateParams::new(vec!["client.example".to_string()]).expect("params");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let (c, k) = (
        pki.dir.path().join("anon.pem"),
        pki.dir.path().join("anon.key"),
    );
    std::fs::write(&c, cert.pem()).expect("write");
    std::fs::write(&k, key.serialize_pem()).expect("write");
    (c, k)
}

#[tokio::test]
async fn a_ca_signed_certificate_without_an_identity_is_refused_even_where_optional() {
    let pki = Pki::new();
    let tls = pki.tls(&id(Role::Edge, "e"));
    let (cert, key) = cert_without_identity(&pki);
    assert_eq!(
        identity_of_cert(&CertificateDer::from_pem_file(&cert).expect("pem")),
        Err(CertError::NoIdentity)
    );
    for auth in [ClientAuth::Required, ClientAuth::Optional] {
        let server = serve(tls.acceptor(auth), Duration::from_secs(5)).await;
        let client = raw_client(pki.ca.cert_path(), Some((&cert, &key)));
        let Err(err) = attempt(client, server.addr).await else {
            panic!("{auth:?}: a certificate without an identity was accepted");
        };
        assert!(
            err.to_string().contains("CertificateUnknown"),
            "{auth:?}: alert says why: {err}"
        );
        handshake_failures(&server, 1).await;

        // What the server's log says.
        let l = bind("127.0.0.1:0".parse().expect("addr"), 8).expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = raw_client(pki.ca.cert_path(), Some((&cert, &key)));
        tokio::spawn(attempt(client, addr));
        let (tcp, _) = l.accept().await.expect("accept");
        let Err(err) = tls.acceptor(auth).handshake(tcp).await else {
            panic!("{auth:?}: accepted");
        };
        assert!(
            err.to_string()
                .contains("client certificate: no spiffe://flotilla/ URI SAN"),
            "{auth:?}: {err}"
        );
    }
}

#[tokio::test]
async fn optional_serves_clients_without_a_certificate_anonymously() {
    let pki = Pki::new();
    let mut server = serve(
        pki.tls(&id(Role::Edge, "e")).acceptor(ClientAuth::Optional),
        Duration::from_secs(5),
    )
    .await;
    attempt(raw_client(pki.ca.cert_path(), None), server.addr)
        .await
        .expect("served without a certificate");
    assert_eq!(server.next_conn().await.peer, None);

    let proxy = id(Role::Proxy, "east/infra/public");
    let mut s = Connector::tls(pki.tls(&proxy), Some(Role::Edge))
        .connect(&server.uri())
        .await
        .expect("connect");
    ping(&mut s).await.expect("echo");
    assert_eq!(server.next_conn().await.peer, Some(proxy));
}

/// Reads until the server closes; false if it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 256];
    let read_to_end = async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an alert, perhaps
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

#[tokio::test]
async fn plaintext_clients_are_refused_at_once() {
    let pki = Pki::new();
    let server = serve(
        pki.tls(&id(Role::Store, "1"))
            .acceptor(ClientAuth::Required),
        Duration::from_secs(30),
    )
    .await;
    for (n, hello) in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(hello).await.expect("write");
        // Well before the 30 s handshake timeout: refused, not timed out.
        assert!(closed_within(&mut s, Duration::from_secs(5)).await);
        handshake_failures(&server, n as u64 + 1).await;
    }
    assert_eq!(server.stats.snapshot().handshake_timeouts, 0);
}

#[tokio::test]
async fn silent_and_stalled_handshakes_are_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let server = serve(
        pki.tls(&id(Role::Store, "1"))
            .acceptor(ClientAuth::Required),
        Duration::from_millis(300),
    )
    .await;
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    // A TLS record header announcing a 512-byte ClientHello, and nothing more.
    let mut stalled = TcpStream::connect(server.addr).await.expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);
    eventually("two handshake timeouts", || {
        server.stats.snapshot().handshake_timeouts == 2
    })
    .await;
}

#[tokio::test]
async fn a_rotated_server_certificate_serves_new_connections_and_old_ones_stay() {
    let pki = Pki::new();
    let (first, second) = (id(Role::Store, "1"), id(Role::Store, "1b"));
    let files = pki.files(&first);
    let tls = Tls::load(files.clone()).expect("load");
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    tls.watch_every(Duration::from_millis(50), shutdown);
    let server = serve(tls.acceptor(ClientAuth::Required), Duration::from_secs(5)).await;
    let connector = Connector::tls(pki.tls(&id(Role::Edge, "e")), Some(Role::Store));

    let mut old = connector.connect(&server.uri()).await.expect("connect");
    ping(&mut old).await.expect("echo");
    let old_serial = serial_of(old.peer_certificate().expect("cert"));
    assert_eq!(old_serial, tls.cert_info().serial);

    pki.rotate(&files, &second);
    eventually("the new certificate is loaded", || tls.identity() == second).await;
    assert!(tls.reload_counters().reloads >= 1);

    let mut new = connector.connect(&server.uri()).await.expect("connect");
    ping(&mut new).await.expect("echo on a new connection");
    assert_eq!(new.server_identity(), Some(second));
    let new_serial = serial_of(new.peer_certificate().expect("cert"));
    assert_ne!(new_serial, old_serial);
    assert_eq!(new_serial, tls.cert_info().serial);
    ping(&mut old)
        .await
        .expect("the connection made before the rotation still works");
}

#[tokio::test]
async fn a_rotated_client_certificate_is_presented_on_new_connections() {
    let pki = Pki::new();
    let mut server = serve(
        pki.tls(&id(Role::Store, "1"))
            .acceptor(ClientAuth::Required),
        Duration::from_secs(5),
    )
    .await;
    let (first, second) = (id(Role::Edge, "a"), id(Role::Edge, "b"));
    let files = pki.files(&first);
    let client = Tls::load(files.clone()).expect("load");
    let connector = Connector::tls(client.clone(), Some(Role::Store));

    let mut s = connector.connect(&server.uri()).await.expect("connect");
    ping(&mut s).await.expect("echo");
    assert_eq!(server.next_conn().await.peer, Some(first));

    pki.rotate(&files, &second);
    assert!(client.reload_if_changed().expect("reload"));
    let mut s = connector.connect(&server.uri()).await.expect("connect");
    ping(&mut s).await.expect("echo");
    assert_eq!(server.next_conn().await.peer, Some(second));
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into()
    }
}

// One thread: the watch task logs through this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_broken_file_keeps_the_previous_certificate_and_says_which() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    let store = id(Role::Store, "1");
    let files = pki.files(&store);
    let tls = Tls::load(files.clone()).expect("load");
    let before = tls.cert_info();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    tls.watch_every(Duration::from_millis(50), shutdown);
    let server = serve(tls.acceptor(ClientAuth::Required), Duration::from_secs(5)).await;
    let connector = Connector::tls(pki.tls(&id(Role::Edge, "e")), Some(Role::Store));

    // Written in place, not renamed: the worst a careless rotation can do.
    std::fs::write(&files.cert, b"not a certificate\n").expect("write");
    eventually("the failed reload is counted", || {
        tls.reload_counters().failures == 1
    })
    .await;
    let text = logs.text();
    let cert = files.cert.display().to_string();
    assert!(
        text.contains("keeping the previous certificate") && text.contains(&cert),
        "the log names the file: {text}"
    );
    assert_eq!(tls.cert_info(), before);
    let mut s = connector.connect(&server.uri()).await.expect("connect");
    ping(&mut s)
        .await
        .expect("still served with the old certificate");
    assert_eq!(
        serial_of(s.peer_certificate().expect("cert")),
        before.serial
    );

    // A good pair is taken by the watcher.
    pki.rotate(&files, &store);
    eventually("the good pair is loaded", || {
        tls.reload_counters().reloads == 1
    })
    .await;
    let after = tls.cert_info();
    assert_ne!(after.serial, before.serial);

    // A key that is not a key, reloaded directly (no `.await` from here on, so the watcher
    // does not run in between): the error names the file, and unchanged files are not retried.
    std::fs::write(&files.key, b"-----BEGIN PRIVATE KEY-----\nAAAA\n").expect("write");
    let err = tls
        .reload_if_changed()
        .expect_err("a bad key does not load");
    assert!(
        err.to_string().contains(&files.key.display().to_string()),
        "names the key file: {err}"
    );
    assert!(!tls.reload_if_changed().expect("no change, no attempt"));
    assert_eq!(tls.reload_counters().failures, 2);
    assert_eq!(tls.cert_info(), after);
}

#[tokio::test]
async fn loading_reports_the_file_at_fault() {
    let pki = Pki::new();
    let good = pki.files(&id(Role::Store, "1"));
    let other = pki.files(&id(Role::Store, "2"));
    let missing = TlsFiles {
        ca: pki.dir.path().join("nope.pem"),
        ..good.clone()
    };
    let mismatched = TlsFiles {
        key: other.key.clone(),
        ..good.clone()
    };
    let (anon, _) = cert_without_identity(&pki);
    let anonymous = TlsFiles {
        cert: anon.clone(),
        ..good.clone()
    };
    for (files, path, says) in [
        (&missing, &missing.ca, "No such file"),
        (
            &mismatched,
            &other.key,
            "does not belong to the certificate",
        ),
        (&anonymous, &anon, "no spiffe://flotilla/ URI SAN"),
    ] {
        let err = Tls::load(files.clone()).expect_err("refused").to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(says),
            "{err}"
        );
    }
}

#[tokio::test]
async fn the_connector_refuses_a_server_of_another_role() {
    let pki = Pki::new();
    let server = serve(
        pki.tls(&id(Role::Edge, "impostor"))
            .acceptor(ClientAuth::Required),
        Duration::from_secs(5),
    )
    .await;
    let err = Connector::tls(pki.tls(&id(Role::Edge, "e")), Some(Role::Store))
        .connect(&server.uri())
        .await
        .expect_err("an edge is not a store");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("localhost:{}", server.addr.port()))
            && msg.contains("edge/impostor")
            && msg.contains("expected a store"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_connector_checks_the_host_is_in_the_certificate() {
    let pki = Pki::new();
    let only_localhost = pki.files_with_hosts(&id(Role::Store, "1"), &["localhost".into()]);
    let server = serve(
        Tls::load(only_localhost)
            .expect("load")
            .acceptor(ClientAuth::Required),
        Duration::from_secs(5),
    )
    .await;
    let connector = Connector::tls(pki.tls(&id(Role::Edge, "e")), None);
    let by_ip: http::Uri = format!("https://127.0.0.1:{}", server.addr.port())
        .parse()
        .expect("uri");
    let err = connector
        .connect(&by_ip)
        .await
        .expect_err("127.0.0.1 is not in the certificate");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "TLS handshake with 127.0.0.1:{}",
            server.addr.port()
        )) && msg.contains("not valid for name"),
        "{msg}"
    );
    let mut s = connector.connect(&server.uri()).await.expect("by name");
    ping(&mut s).await.expect("echo");
}

#[tokio::test]
async fn the_connector_times_out_on_a_server_that_never_answers() {
    // Listening but never accepting: the kernel completes the TCP handshake, nobody answers
    // the ClientHello.
    let l = bind("127.0.0.1:0".parse().expect("addr"), 8).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let pki = Pki::new();
    let err = Connector::tls(pki.tls(&id(Role::Edge, "e")), Some(Role::Store))
        .connect_timeout(Duration::from_millis(300))
        .connect(&format!("https://localhost:{port}").parse().expect("uri"))
        .await
        .expect_err("times out");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    drop(l);
}

#[tokio::test]
async fn the_plain_connector_refuses_https() {
    let err = Connector::plain()
        .connect(&"https://localhost:1".parse().expect("uri"))
        .await
        .expect_err("plaintext to an https URI");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// A gRPC-shaped service answering every call with the caller's identity in a header.
#[derive(Clone)]
struct WhoAmI;

impl tonic::server::NamedService for WhoAmI {
    const NAME: &'static str = "flotilla.test.WhoAmI";
}

impl tower::Service<http::Request<tonic::body::Body>> for WhoAmI {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<ConnInfo>()
            .map(|i| {
                i.peer
                    .as_ref()
                    .map_or("anonymous".into(), |p| p.to_string())
            })
            .unwrap_or_else(|| "no ConnInfo".into());
        let resp = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "0")
            .header("x-peer", peer)
            .body(tonic::body::Body::empty())
            .expect("response");
        std::future::ready(Ok(resp))
    }
}

/// Serves [`WhoAmI`] with tonic on `handshake`'s connections; calls it through `connector`.
async fn who_am_i<H>(handshake: H, connector: Connector) -> String
where
    H: Handshake,
    H::Io: Send + 'static,
{
    let l = bind("127.0.0.1:0".parse().expect("addr"), 64).expect("bind");
    let port = l.local_addr().expect("addr").port();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let conns = incoming(
        l,
        limits(Duration::from_secs(5)),
        handshake,
        Arc::new(ListenStats::default()),
        shutdown.clone(),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WhoAmI)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::ReceiverStream::new(conns),
                shutdown.cancelled_owned(),
            ),
    );
    // `http://` even over TLS: the connector, not the scheme, decides (see `connect`).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://localhost:{port}"))
        .expect("endpoint")
        .connect_with_connector(connector)
        .await
        .expect("channel");
    let req = http::Request::builder()
        .method("POST")
        .uri("/flotilla.test.WhoAmI/Get")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::empty())
        .expect("request");
    let resp = tower::ServiceExt::oneshot(channel, req)
        .await
        .expect("gRPC call");
    assert_eq!(resp.status(), http::StatusCode::OK);
    resp.headers()
        .get("x-peer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn tonic_calls_over_mtls_carry_the_callers_identity() {
    let pki = Pki::new();
    let server = pki.tls(&id(Role::Store, "1"));
    let client = Connector::tls(pki.tls(&id(Role::Edge, "east")), Some(Role::Store));
    assert_eq!(
        who_am_i(server.acceptor(ClientAuth::Required), client).await,
        "edge/east"
    );
}

#[tokio::test]
async fn tonic_calls_over_plaintext_take_the_same_path() {
    assert_eq!(who_am_i(Plain, Connector::plain()).await, "anonymous");
}
