//! Counters in Redis, shared by every instance that uses the same Redis: the limit is global.
//!
//! Each hit is one `EVAL` of a two-line Lua script (`INCRBY` then `EXPIREAT`, atomic, so a
//! counter can never be left without an expiry); the hits of one request are pipelined on one
//! connection. The client speaks RESP2 itself: it needs two reply types (integer, error) and no
//! TLS, and a hand-written client keeps failure handling in view — any error or timeout drops
//! the connection, the next call reconnects, and a failed connect is not retried for
//! [`RECONNECT_BACKOFF`] so an outage costs callers an error, not a wait each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Counter, Error, Hit, Result};

const SCRIPT: &str = "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) \
                      redis.call('EXPIREAT', KEYS[1], ARGV[2]) return n";

/// After a failed connect, calls fail at once for this long instead of each trying again.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);
/// Longest reply line accepted from Redis (an error message); anything longer is not Redis.
const MAX_LINE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port`.
    pub address: String,
    /// Connections used round-robin; each carries one request's pipeline at a time.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Bound on connecting plus one request's round trip.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_connections() -> usize {
    4
}

fn default_timeout_ms() -> u64 {
    500
}

impl RedisConfig {
    pub fn new(address: impl Into<String>) -> RedisConfig {
        RedisConfig {
            address: address.into(),
            connections: default_connections(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

struct Conn {
    stream: BufReader<TcpStream>,
}

#[derive(Default)]
struct Slot {
    conn: Option<Conn>,
    failed_connect: Option<Instant>,
}

pub struct RedisCounter {
    cfg: RedisConfig,
    timeout: Duration,
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
}

impl RedisCounter {
    /// Connects lazily: a Redis that is down at start is an outage like any other.
    pub fn new(cfg: RedisConfig) -> RedisCounter {
        let n = cfg.connections.clamp(1, 64);
        RedisCounter {
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            cfg,
            slots: (0..n).map(|_| Mutex::new(Slot::default())).collect(),
            next: AtomicUsize::new(0),
        }
    }

    async fn run(&self, hits: &[Hit]) -> Result<Vec<u64>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        let (mut conn, reused) = match slot.conn.take() {
            Some(c) => (c, true),
            None => (self.connect(&mut slot).await?, false),
        };
        let out = match conn.pipeline(hits).await {
            Ok(out) => out,
            // A pooled connection that Redis closed while idle (a restart, a timeout) is only
            // found out on use. It failed at the write or the first reply, which for a closed
            // connection means Redis never ran the script: retried once, on a fresh connection.
            Err(Failed { stale: true, .. }) if reused => {
                conn = self.connect(&mut slot).await?;
                conn.pipeline(hits).await.map_err(|f| f.error)?
            }
            Err(f) => return Err(f.error),
        };
        // Only a connection whose every reply was read goes back: a failed one is dropped.
        slot.conn = Some(conn);
        Ok(out)
    }

    async fn connect(&self, slot: &mut Slot) -> Result<Conn> {
        if slot
            .failed_connect
            .is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF)
        {
            return Err(Error::Redis("not connected (reconnecting)".into()));
        }
        match TcpStream::connect(&self.cfg.address).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                slot.failed_connect = None;
                Ok(Conn {
                    stream: BufReader::new(s),
                })
            }
            Err(e) => {
                slot.failed_connect = Some(Instant::now());
                Err(Error::Redis(format!("connect {}: {e}", self.cfg.address)))
            }
        }
    }
}

/// A failed pipeline; `stale` when the connection turned out closed before any reply.
struct Failed {
    stale: bool,
    error: Error,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Failed {
        Failed {
            stale: false,
            error,
        }
    }
}

impl Conn {
    async fn pipeline(&mut self, hits: &[Hit]) -> Result<Vec<u64>, Failed> {
        let mut buf = Vec::with_capacity(hits.len() * 128);
        for h in hits {
            let hits = h.hits.to_string();
            let exp = h.expires_at.to_string();
            encode(&mut buf, &["EVAL", SCRIPT, "1", &h.key, &hits, &exp]);
        }
        let stale = |e: Error| Failed {
            stale: true,
            error: e,
        };
        if let Err(e) = self.stream.get_mut().write_all(&buf).await {
            return Err(stale(Error::Redis(e.to_string())));
        }
        let mut out = Vec::with_capacity(hits.len());
        let mut first_err = None;
        for i in 0..hits.len() {
            let reply = match self.read_reply().await {
                Ok(r) => r,
                Err(e) if i == 0 => return Err(stale(e)),
                Err(e) => return Err(e.into()),
            };
            match reply {
                Ok(n) => out.push(n),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            // A Redis error reply (e.g. OOM, a replica): the connection is still in step.
            Some(e) => Err(Error::Redis(e).into()),
            None => Ok(out),
        }
    }

    /// An integer reply, or Redis's error message; `Err` when the stream is unusable.
    async fn read_reply(&mut self) -> Result<Result<u64, String>> {
        let mut line = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| Error::Redis(e.to_string()))?;
        if n == 0 {
            return Err(Error::Redis("connection closed".into()));
        }
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return Err(Error::Redis("malformed reply".into()));
        };
        let text = String::from_utf8_lossy(&body[1..]).into_owned();
        match body.first() {
            Some(b':') => text
                .parse::<i64>()
                .map(|n| Ok(n.max(0) as u64))
                .map_err(|_| Error::Redis(format!("bad integer reply {text:?}"))),
            Some(b'-') => Ok(Err(text)),
            _ => Err(Error::Redis(format!("unexpected reply {text:?}"))),
        }
    }
}

/// A RESP array of bulk strings.
fn encode(buf: &mut Vec<u8>, args: &[&str]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
}

impl Counter for RedisCounter {
    fn increment<'a>(&'a self, hits: &'a [Hit], _now: u64) -> BoxFuture<'a, Result<Vec<u64>>> {
        Box::pin(async move {
            if hits.is_empty() {
                return Ok(Vec::new());
            }
            match tokio::time::timeout(self.timeout, self.run(hits)).await {
                Ok(r) => r,
                // The future that held the connection was dropped, and the connection with it.
                Err(_) => Err(Error::Timeout(self.timeout)),
            }
        })
    }
}
