//! A minimal WebSocket (RFC 6455) client and echo server: what HTTPRouteBackendProtocolWebSocket
//! needs, and no extensions. The client dials as the suite's Go client (golang.org/x/net/websocket
//! `Dial`) does: an HTTP/1.1 Upgrade with an Origin, masked frames; the echo server answers as
//! echo-basic's `/ws` handler does, echoing every message back.

use crate::manifests::base64;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The GUID a server appends to Sec-WebSocket-Key (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest frame or message either side accepts.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// Largest HTTP handshake response the client reads.
const MAX_HEAD: usize = 16 << 10;

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64(&h.digest().bytes())
}

/// A fresh random Sec-WebSocket-Key (16 random bytes, base64).
pub fn new_key() -> String {
    base64(uuid::Uuid::new_v4().as_bytes())
}

fn new_mask() -> [u8; 4] {
    let b = uuid::Uuid::new_v4().into_bytes();
    [b[0], b[1], b[2], b[3]]
}

/// One frame, payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A frame on the wire: masked with `mask` (clients must mask, servers must not).
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Parses the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// frame (unmasked), whether it was masked, and how many bytes it took.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, bool, usize)>, String> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(format!(
            "frame has reserved bits set ({:#04x}) without an extension",
            b0 & 0x70
        ));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(format!("unknown opcode {opcode:#x}"));
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (u64::from_be_bytes(a), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(format!(
            "control frame {opcode:#x} fragmented or longer than 125 bytes"
        ));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or_else(|| format!("frame of {len} bytes exceeds {MAX_PAYLOAD}"))?;
    let mask = if masked {
        let Some(k) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let Some(body) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let payload = match mask {
        Some(k) => body.iter().enumerate().map(|(i, b)| b ^ k[i % 4]).collect(),
        None => body.to_vec(),
    };
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        masked,
        at + len,
    )))
}

/// One side of a WebSocket connection: a client masks what it sends and refuses masked frames;
/// a server the other way round.
pub struct Conn<IO> {
    io: IO,
    buf: Vec<u8>,
    client: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// `buf`: bytes already read past the handshake.
    pub fn new(io: IO, buf: Vec<u8>, client: bool) -> Self {
        Conn { io, buf, client }
    }

    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mask = self.client.then(new_mask);
        self.io
            .write_all(&encode_frame(true, opcode, payload, mask))
            .await
            .map_err(|e| format!("WebSocket write: {e}"))?;
        self.io
            .flush()
            .await
            .map_err(|e| format!("WebSocket write: {e}"))
    }

    pub async fn read_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some((f, masked, used)) = decode_frame(&self.buf)? {
                self.buf.drain(..used);
                if masked == self.client {
                    return Err(if self.client {
                        "server sent a masked frame".into()
                    } else {
                        "client sent an unmasked frame".into()
                    });
                }
                return Ok(f);
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("WebSocket read: {e}"))?;
            if n == 0 {
                return Err("connection closed mid-frame or before a frame".into());
            }
        }
    }

    /// The next data message (fragments joined): its opcode (text or binary) and payload.
    /// Pings are answered; a close is answered and ends the connection (`Ok(None)`).
    pub async fn read_message(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let mut msg: Option<(u8, Vec<u8>)> = None;
        loop {
            let f = self.read_frame().await?;
            match f.opcode {
                OP_PING => self.send(OP_PONG, &f.payload).await?,
                OP_PONG => {}
                OP_CLOSE => {
                    // Echo the status code back (RFC 6455 §5.5.1).
                    let code = f.payload.get(..2).unwrap_or(&[]).to_vec();
                    let _ = self.send(OP_CLOSE, &code).await;
                    return Ok(None);
                }
                OP_CONTINUATION => {
                    let Some((_, data)) = msg.as_mut() else {
                        return Err("continuation frame without a message to continue".into());
                    };
                    if data.len() + f.payload.len() > MAX_PAYLOAD {
                        return Err(format!("message exceeds {MAX_PAYLOAD} bytes"));
                    }
                    data.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(msg);
                    }
                }
                op => {
                    if msg.is_some() {
                        return Err("new data frame inside a fragmented message".into());
                    }
                    if f.fin {
                        return Ok(Some((op, f.payload)));
                    }
                    msg = Some((op, f.payload));
                }
            }
        }
    }
}

/// Serves echo-basic's `/ws` on an upgraded connection: every message comes back with its
/// opcode, pings get pongs, a close is answered and ends it; a protocol error closes with 1002.
pub async fn serve_echo<IO: AsyncRead + AsyncWrite + Unpin>(io: IO) {
    let mut c = Conn::new(io, Vec::new(), false);
    loop {
        match c.read_message().await {
            Ok(Some((op, data))) => {
                if c.send(op, &data).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(_) => {
                let _ = c.send(OP_CLOSE, &1002u16.to_be_bytes()).await;
                return;
            }
        }
    }
}

/// One message of a `websocket_echo` expectation: what to send and what must come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub opcode: u8,
    pub send: Vec<u8>,
    pub want: Vec<u8>,
}

/// The exchanges of a request's `expect` (`websocket_echo`: items with send_text/recv_text or
/// send_binary_hex/recv_binary_hex); an error for anything else the harness would not check.
pub fn echo_plan(expect: &Value) -> Result<Vec<Exchange>, String> {
    let obj = expect.as_object().ok_or("expect is not an object")?;
    if let Some(k) = obj.keys().find(|k| *k != "websocket_echo") {
        return Err(format!("WebSocket expectation `{k}` not implemented"));
    }
    let items = obj
        .get("websocket_echo")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("no websocket_echo exchanges")?;
    items
        .iter()
        .map(|it| {
            let s = |k: &str| it.get(k).and_then(Value::as_str);
            let hex = |k: &str| -> Result<Option<Vec<u8>>, String> {
                s(k).map(|h| hex::decode(h).map_err(|e| format!("{k}: {e}")))
                    .transpose()
            };
            let n = it.as_object().map_or(0, |o| o.len());
            match (s("send_text"), s("recv_text")) {
                (Some(a), Some(b)) if n == 2 => Ok(Exchange {
                    opcode: OP_TEXT,
                    send: a.as_bytes().to_vec(),
                    want: b.as_bytes().to_vec(),
                }),
                _ => match (hex("send_binary_hex")?, hex("recv_binary_hex")?) {
                    (Some(a), Some(b)) if n == 2 => Ok(Exchange {
                        opcode: OP_BINARY,
                        send: a,
                        want: b,
                    }),
                    _ => Err(format!("websocket_echo item not understood: {it}")),
                },
            }
        })
        .collect()
}

fn printable(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("0x{}", hex::encode(b)),
    }
}

/// The client handshake on `io` (GET `path` with Upgrade: websocket, Host `host`, Origin
/// `origin`): checks the 101 answer and its Sec-WebSocket-Accept; returns the open connection.
pub async fn connect<IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
    host: &str,
    path: &str,
    origin: &str,
) -> Result<Conn<IO>, String> {
    let key = new_key();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nOrigin: {origin}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    io.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("WebSocket handshake write: {e}"))?;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("handshake response head over {MAX_HEAD} bytes"));
        }
        let n = io
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("WebSocket handshake read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed during the handshake (got {})",
                printable(&buf)
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    if status != 101 {
        return Err(format!("handshake status {status}, want 101"));
    }
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    };
    if !get("upgrade")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return Err(format!(
            "101 without Upgrade: websocket ({:?})",
            get("upgrade")
        ));
    }
    if !get("connection")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err(format!(
            "101 without Connection: Upgrade ({:?})",
            get("connection")
        ));
    }
    let want = accept_key(&key);
    match get("sec-websocket-accept").as_slice() {
        [a] if *a == want => {}
        got => {
            return Err(format!(
                "Sec-WebSocket-Accept {got:?}, want {want:?} for key {key:?}"
            ))
        }
    }
    Ok(Conn::new(io, rest, true))
}

/// A WebSocket to `addr` (`path`, Host `host`, Origin `origin`): each exchange's message is sent
/// and the next message received must carry the expected bytes (as the suite's Go client, which
/// compares payloads whatever the data frame type); then the connection is closed.
pub async fn check_echo(
    addr: SocketAddr,
    host: &str,
    path: &str,
    origin: &str,
    plan: &[Exchange],
    timeout: Duration,
) -> Result<(), String> {
    tokio::time::timeout(timeout, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let mut c = connect(tcp, host, path, origin).await?;
        for x in plan {
            c.send(x.opcode, &x.send).await?;
            match c.read_message().await? {
                Some((_, got)) if got == x.want => {}
                Some((_, got)) => {
                    return Err(format!(
                        "sent {}, got back {}, want {}",
                        printable(&x.send),
                        printable(&got),
                        printable(&x.want)
                    ))
                }
                None => {
                    return Err(format!(
                        "closed by the server after sending {}",
                        printable(&x.send)
                    ))
                }
            }
        }
        // Close as Go's ws.Close does: a close frame, then the connection goes.
        let _ = c.send(OP_CLOSE, &1000u16.to_be_bytes()).await;
        Ok(())
    })
    .await
    .map_err(|_| format!("WebSocket exchange not done within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(new_key().len(), 24);
    }

    #[test]
    fn frames_round_trip_at_every_length_encoding() {
        for len in [0usize, 5, 125, 126, 0xffff, 0x10000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut wire = encode_frame(true, OP_BINARY, &payload, mask);
                wire.extend_from_slice(b"next");
                let (f, masked, used) = decode_frame(&wire).unwrap().unwrap();
                assert_eq!(f.payload, payload);
                assert_eq!((f.fin, f.opcode, masked), (true, OP_BINARY, mask.is_some()));
                assert_eq!(&wire[used..], b"next");
                // Every strict prefix asks for more bytes.
                for cut in [0, 1, used / 2, used - 1] {
                    assert_eq!(
                        decode_frame(&wire[..cut]).unwrap(),
                        None,
                        "len {len} cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn frame_wire_format_matches_rfc_6455_examples() {
        // RFC 6455 §5.7: unmasked and masked "Hello", a 256-byte binary frame's header.
        let hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(encode_frame(true, OP_TEXT, b"Hello", None), hello);
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            encode_frame(true, OP_TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])),
            masked
        );
        let (f, m, _) = decode_frame(&masked).unwrap().unwrap();
        assert_eq!((f.payload.as_slice(), m), (&b"Hello"[..], true));
        assert_eq!(
            encode_frame(true, OP_BINARY, &[0; 256], None)[..4],
            [0x82, 0x7e, 0x01, 0x00]
        );
        // A fragment: "Hel" without FIN.
        assert_eq!(
            encode_frame(false, OP_TEXT, b"Hel", None)[..2],
            [0x01, 0x03]
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(decode_frame(&[0xc1, 0x00]).is_err(), "RSV1 set");
        assert!(decode_frame(&[0x83, 0x00]).is_err(), "opcode 3");
        assert!(decode_frame(&[0x09, 0x00]).is_err(), "fragmented ping");
        assert!(
            decode_frame(&[0x89, 0x7e, 0x00, 0x7e]).is_err(),
            "126-byte ping"
        );
        let huge = [0x82, 0x7f, 0xff, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode_frame(&huge).is_err(), "over MAX_PAYLOAD");
    }

    #[test]
    fn echo_plan_reads_the_table_entry() {
        let e = json!({"websocket_echo": [
            {"send_text": "Websocket Support!", "recv_text": "Websocket Support!"},
            {"send_binary_hex": "01020304050607", "recv_binary_hex": "01020304050607"}]});
        let p = echo_plan(&e).unwrap();
        assert_eq!(p[0].opcode, OP_TEXT);
        assert_eq!(p[0].send, b"Websocket Support!");
        assert_eq!(p[1].opcode, OP_BINARY);
        assert_eq!(p[1].want, vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(echo_plan(&json!({"websocket_echo": [], })).is_err());
        assert!(echo_plan(&json!({"websocket_echo": [{"send_text": "a"}]})).is_err());
        assert!(echo_plan(
            &json!({"websocket_echo": [{"send_binary_hex": "zz", "recv_binary_hex": "00"}]})
        )
        .is_err());
        let extra =
            json!({"status": [200], "websocket_echo": [{"send_text": "a", "recv_text": "a"}]});
        assert!(echo_plan(&extra).is_err());
    }

    /// The client against the echo server over an in-memory pipe, with the server's answers
    /// checked frame by frame: fragments joined, ping answered, close echoed.
    #[tokio::test]
    async fn client_and_echo_server_talk() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(serve_echo(b));
        let mut c = Conn::new(a, Vec::new(), true);
        c.send(OP_TEXT, b"hi").await.unwrap();
        assert_eq!(
            c.read_message().await.unwrap(),
            Some((OP_TEXT, b"hi".to_vec()))
        );
        c.send(OP_BINARY, &[1, 2, 3]).await.unwrap();
        assert_eq!(
            c.read_message().await.unwrap(),
            Some((OP_BINARY, vec![1, 2, 3]))
        );
        // A fragmented message with a ping in between.
        let mask = Some([9, 8, 7, 6]);
        let mut wire = encode_frame(false, OP_TEXT, b"ab", mask);
        wire.extend(encode_frame(true, OP_PING, b"p", mask));
        wire.extend(encode_frame(true, OP_CONTINUATION, b"cd", mask));
        c.io.write_all(&wire).await.unwrap();
        let pong = c.read_frame().await.unwrap();
        assert_eq!((pong.opcode, pong.payload.as_slice()), (OP_PONG, &b"p"[..]));
        assert_eq!(
            c.read_message().await.unwrap(),
            Some((OP_TEXT, b"abcd".to_vec()))
        );
        c.send(OP_CLOSE, &1000u16.to_be_bytes()).await.unwrap();
        let close = c.read_frame().await.unwrap();
        assert_eq!((close.opcode, close.payload), (OP_CLOSE, vec![0x03, 0xe8]));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn server_closes_on_unmasked_client_frames() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve_echo(b));
        a.write_all(&encode_frame(true, OP_TEXT, b"x", None))
            .await
            .unwrap();
        server.await.unwrap();
        let mut buf = Vec::new();
        a.read_to_end(&mut buf).await.unwrap();
        let (f, masked, used) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(
            (f.opcode, f.payload, masked, used),
            (OP_CLOSE, 1002u16.to_be_bytes().to_vec(), false, buf.len())
        );
    }
}
