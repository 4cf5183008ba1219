//! `flotilla-net`: what every Flotilla port shares.
//!
//! - [`identity`]: who a peer is (`spiffe://flotilla/<role>/<name>`, from its certificate).
//! - [`listen`]: listeners with a backlog, a connection limit, handshake and first-byte
//!   timeouts and accept errors backed off, yielding connections that carry their peer's
//!   identity (for tonic through [`listen::ConnInfo`]).
//! - [`tls`]: TLS on both sides of every connection, from a CA bundle, a certificate and a key
//!   that are reloaded when their files change; peers proved by their certificate's identity.
//! - [`server`]: one way to serve (plaintext or TLS behind the listener) and the gRPC server
//!   settings every port shares.
//! - [`auth`]: who may call a gRPC service (certificate roles, tokens, proxy tokens).
//! - [`certs`]: a local CA and the certificates of a dev setup (`flotilla certs`).
//! - [`limits`]: the process's file descriptor limit, raised at start.

pub mod auth;
pub mod certs;
pub mod identity;
pub mod limits;
pub mod listen;
pub mod server;
pub mod stream;
pub mod tls;

pub use auth::{Caller, Denials, PeerAuth, ProxyAuth, ProxyKey};
pub use identity::{Identity, Role};
pub use listen::{ConnInfo, Limits, ListenStats, Plain};
pub use server::{Acceptor, ClientSecurity, ServerSecurity};
pub use tls::{ClientAuth, Connector, Tls, TlsFiles};
