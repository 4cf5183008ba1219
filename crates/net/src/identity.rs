//! Identities of Flotilla's parts and clients.
//!
//! Every certificate Flotilla issues carries one URI SAN `spiffe://flotilla/<role>/<name>`:
//! - `store/<node id>`: a store node (Raft peer, serves the watch);
//! - `edge/<name>`: an xDS edge (watches a store);
//! - `agent/<cluster>`: an ingest agent of one cluster;
//! - `proxy/<cluster>/<namespace>/<gateway>`: an Envoy serving one gateway;
//! - `admin/<name>` and `reader/<name>`: API clients with the admin and read-only roles;
//! - `nats/<name>`: a NATS server of the event bus (a server certificate for NATS TLS).

use std::fmt;

/// The trust domain of every identity.
pub const TRUST_DOMAIN: &str = "flotilla";

/// What a peer is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Store,
    Edge,
    Agent,
    Proxy,
    Admin,
    Reader,
    Nats,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Store,
        Role::Edge,
        Role::Agent,
        Role::Proxy,
        Role::Admin,
        Role::Reader,
        Role::Nats,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Store => "store",
            Role::Edge => "edge",
            Role::Agent => "agent",
            Role::Proxy => "proxy",
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::Nats => "nats",
        }
    }

    /// How many `/`-separated parts the name of this role has.
    fn name_parts(self) -> usize {
        match self {
            Role::Proxy => 3,
            _ => 1,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's identity: a role and a name within it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

/// Why a URI is not a Flotilla identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0:?} is not a spiffe://{TRUST_DOMAIN}/ URI")]
    NotOurs(String),
    #[error(
        "{0:?}: unknown role (expected one of store, edge, agent, proxy, admin, reader, nats)"
    )]
    Role(String),
    #[error(
        "{uri:?}: a {role} identity has {want} name part(s), each non-empty, of [A-Za-z0-9._-]"
    )]
    Name {
        uri: String,
        role: Role,
        want: usize,
    },
}

impl Identity {
    /// Checks the name has the shape of its role.
    pub fn new(role: Role, name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let parts: Vec<&str> = name.split('/').collect();
        let ok = parts.len() == role.name_parts()
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.len() <= 253
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            });
        if !ok {
            return Err(Error::Name {
                uri: format!("spiffe://{TRUST_DOMAIN}/{role}/{name}"),
                role,
                want: role.name_parts(),
            });
        }
        Ok(Self { role, name })
    }

    /// `spiffe://flotilla/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}/{}", self.role, self.name)
    }

    /// Parses [`Identity::uri`]'s form.
    pub fn from_uri(uri: &str) -> Result<Self, Error> {
        let rest = uri
            .strip_prefix("spiffe://")
            .and_then(|r| r.strip_prefix(TRUST_DOMAIN))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| Error::NotOurs(uri.to_string()))?;
        let (role, name) = rest.split_once('/').unwrap_or((rest, ""));
        let role = Role::ALL
            .into_iter()
            .find(|r| r.as_str() == role)
            .ok_or_else(|| Error::Role(uri.to_string()))?;
        Self::new(role, name).map_err(|_| Error::Name {
            uri: uri.to_string(),
            role,
            want: role.name_parts(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for (role, name) in [
            (Role::Store, "1"),
            (Role::Proxy, "east/infra/public"),
            (Role::Reader, "ci"),
        ] {
            let id = Identity::new(role, name).expect("valid");
            assert_eq!(Identity::from_uri(&id.uri()), Ok(id));
        }
    }

    #[test]
    fn malformed_uris_are_refused() {
        for bad in [
            "",
            "spiffe://other/store/1",
            "spiffe://flotilla/root/1",
            "spiffe://flotilla/store/",
            "spiffe://flotilla/store/1/2",
            "spiffe://flotilla/proxy/east/infra",
            "spiffe://flotilla/proxy/east//gw",
            "spiffe://flotilla/admin/a b",
            "https://flotilla/admin/x",
        ] {
            assert!(Identity::from_uri(bad).is_err(), "{bad:?}");
        }
    }
}
