use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limits(max: usize) -> Limits {
    Limits {
        backlog: 64,
        max_connections: max,
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
    }
}

/// Echoes every connection the listener hands on.
fn echo(mut rx: mpsc::Receiver<io::Result<Conn<TcpStream>>>) {
    tokio::spawn(async move {
        while let Some(Ok(mut c)) = rx.recv().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                loop {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

async fn start(max: usize) -> (SocketAddr, Arc<ListenStats>, CancellationToken) {
    let l = bind("127.0.0.1:0".parse().expect("addr"), 64).expect("bind");
    let addr = l.local_addr().expect("addr");
    let stats = Arc::new(ListenStats::default());
    let shutdown = CancellationToken::new();
    echo(incoming(
        l,
        limits(max),
        Plain,
        stats.clone(),
        shutdown.clone(),
    ));
    (addr, stats, shutdown)
}

async fn round_trip(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"ping").await?;
    let mut b = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
    assert_eq!(&b, b"ping");
    Ok(())
}

/// Reads until the server closes; Err if it stays open past `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 16];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let (addr, stats, _sd) = start(16).await;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    assert_eq!(stats.snapshot().handshake_timeouts, 1);
    round_trip(addr).await.expect("a talking client is served");
}

#[tokio::test]
async fn a_connection_that_stops_talking_is_closed_after_the_idle_timeout() {
    let (addr, stats, _sd) = start(16).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"hi").await.expect("write");
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.expect("echo");
    // Talking keeps it open past the idle timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(b"hi").await.expect("write");
        s.read_exact(&mut b).await.expect("still open");
    }
    // ...silence closes it.
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);
    assert_eq!(stats.snapshot().idle_closed, 1);
}

#[tokio::test]
async fn a_flood_of_silent_connections_cannot_keep_a_talking_client_out() {
    let (addr, stats, _sd) = start(8).await;
    // Far more silent connections than slots, all within the handshake timeout.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    round_trip(addr)
        .await
        .expect("served while silent connections hold every slot");
    assert!(stats.snapshot().evicted >= 192, "{:?}", stats.snapshot());
}

#[tokio::test]
async fn at_the_connection_limit_newcomers_wait_and_are_served_once_a_slot_frees() {
    let (addr, stats, _sd) = start(2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"x").await.expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("echo");
        held.push(s);
    }
    // A third connects (the kernel queues it) but is not served while two are held.
    let mut third = TcpStream::connect(addr).await.expect("queued");
    third.write_all(b"y").await.expect("write");
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), third.read_exact(&mut b))
            .await
            .is_err(),
        "served past the limit"
    );
    assert!(stats.snapshot().at_limit >= 1);
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut b))
        .await
        .expect("served once a slot freed")
        .expect("echo");
    assert_eq!(&b, b"y");
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (addr, _stats, sd) = start(4).await;
    round_trip(addr).await.expect("served");
    sd.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(round_trip(addr).await.is_err());
}

#[test]
fn the_backlog_is_the_one_asked_for() {
    // With the old default of 128, the 129th connection's SYN is dropped and its connect
    // waits for a retransmit (1 s, then 3 s...).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let l = bind("127.0.0.1:0".parse().expect("addr"), DEFAULT_BACKLOG).expect("bind");
        let addr = l.local_addr().expect("addr");
        // Without accepting, far more than the old default of 128 connections complete.
        let mut conns = Vec::new();
        for _ in 0..1000 {
            let c = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
                .await
                .expect("the kernel queued it: no SYN dropped")
                .expect("connect");
            conns.push(c);
        }
    });
}
