//! A data dir's identity: the node id it belongs to and its *incarnation*, a random number
//! drawn when the dir is first used.
//!
//! Raft assumes a node never forgets what it persisted. A node whose disk died and that comes
//! back empty under the same id breaks that assumption (the leader saw it hold entries it no
//! longer has; openraft asserts on it). The incarnation makes that visible: every Raft response
//! carries the responder's incarnation, and a leader's connection to a peer refuses a peer
//! whose incarnation changed (see [`crate::network`]). Such a node is replaced through a
//! membership change (remove it, add it back as a learner, promote it), which gives it a
//! fresh replication stream that starts from nothing (a snapshot install).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

const FILE: &str = "identity.json";

/// Why the identity could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid identity file: {message}")]
    Invalid { path: String, message: String },
    #[error("data dir {dir} belongs to node {found}, not to node {wanted}: give each node its own data dir")]
    WrongNode {
        dir: String,
        found: u64,
        wanted: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: u64,
    pub incarnation: u64,
}

/// Reads the identity of `dir`, or makes one for `node_id` if the dir has none.
pub fn load_or_create(dir: &Path, node_id: u64) -> Result<Identity, Error> {
    let path = dir.join(FILE);
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let id: Identity = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            if id.node_id != node_id {
                return Err(Error::WrongNode {
                    dir: dir.display().to_string(),
                    found: id.node_id,
                    wanted: node_id,
                });
            }
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
            let id = Identity {
                node_id,
                incarnation: hi ^ lo,
            };
            let tmp = dir.join(format!("{FILE}.tmp"));
            {
                let mut f = crate::fsutil::create_private(&tmp).map_err(io)?;
                f.write_all(&serde_json::to_vec(&id).unwrap_or_default())
                    .map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            tracing::info!(
                node_id,
                incarnation = id.incarnation,
                "new data dir identity"
            );
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_and_bound_to_its_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path(), 3).expect("create");
        assert_eq!(load_or_create(dir.path(), 3).expect("load"), a);
        match load_or_create(dir.path(), 4) {
            Err(Error::WrongNode {
                found: 3,
                wanted: 4,
                ..
            }) => {}
            other => panic!("expected WrongNode, got {other:?}"),
        }
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(
            load_or_create(other.path(), 3).expect("create").incarnation,
            a.incarnation,
            "a wiped or new dir is a new incarnation"
        );
        std::fs::write(dir.path().join(FILE), b"{").expect("write");
        assert!(matches!(
            load_or_create(dir.path(), 3),
            Err(Error::Invalid { .. })
        ));
    }
}
