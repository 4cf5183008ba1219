//! `flotilla-net`: what every Flotilla port shares.
//!
//! - [`identity`]: who a peer is (`spiffe://flotilla/<role>/<name>`, from its certificate).
//! - [`listen`]: listeners with a backlog, a connection limit, handshake and first-byte
//!   timeouts and accept errors backed off, yielding connections that carry their peer's
//!   identity (for tonic through [`listen::ConnInfo`]).
//! - [`auth`]: who may call a gRPC service (certificate roles, tokens, proxy tokens).
//! - [`limits`]: the process's file descriptor limit, raised at start.

pub mod auth;
pub mod identity;
pub mod limits;
pub mod listen;
pub mod server;

pub use auth::{Caller, Denials, PeerAuth, ProxyAuth, ProxyKey};
pub use identity::{Identity, Role};
pub use listen::{ConnInfo, Limits, ListenStats, Plain};
pub use server::{Acceptor, ClientSecurity, ServerSecurity};
