//! Cluster administration on a running store: who is a member, adding a learner, promoting it
//! to voter, removing a node, building a snapshot. This is how a node whose disk died is
//! replaced while the cluster serves: remove it, start it (or a new node) on an empty data
//! dir, add it as a learner (it catches up, by snapshot install when the log was purged),
//! promote it.
//!
//! Every change goes through the leader; on another node the call fails with
//! [`Error::NotLeader`] naming the leader, and clients ask the next node.

use crate::node::StoreNode;
use crate::types::{NodeId, RaftMetrics};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How far behind the leader's log a learner may be when it is promoted. A voter far behind
/// would slow every commit while it catches up (and with two such voters, stop them).
pub const PROMOTE_MAX_LAG: u64 = 64;
/// How long a snapshot request waits for the snapshot to be built.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// Why an administrative call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("raft: {0}")]
    Raft(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cluster's membership as this node sees it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Raft gRPC address of every member.
    pub addresses: BTreeMap<NodeId, String>,
    /// On the leader: the last log index each member is known to hold.
    pub matched: Option<BTreeMap<NodeId, Option<u64>>>,
    pub last_log_index: Option<u64>,
}

fn members_of(m: &RaftMetrics) -> Members {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    Members {
        node_id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        voters,
        learners,
        addresses: membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect(),
        matched: m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                .collect()
        }),
        last_log_index: m.last_log_index,
    }
}

fn write_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match e.forward_to_leader() {
        Some(f) => Error::NotLeader {
            leader: f.leader_id,
        },
        None => Error::Raft(e.to_string()),
    }
}

impl StoreNode {
    /// The membership as this node sees it.
    pub fn members(&self) -> Members {
        members_of(&self.raft_metrics())
    }

    fn require_leader(&self) -> Result<RaftMetrics> {
        let m = self.raft_metrics();
        if m.state != ServerState::Leader {
            return Err(Error::NotLeader {
                leader: m.current_leader,
            });
        }
        Ok(m)
    }

    /// Adds `id` at `addr` as a learner: it starts receiving the log (or a snapshot).
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<Members> {
        if id == 0 {
            return Err(Error::Invalid("node ids start at 1".into()));
        }
        let addr = addr.trim();
        if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(Error::Invalid(format!(
                "{addr:?} is not a HOST:PORT address"
            )));
        }
        let m = self.require_leader()?;
        let now = members_of(&m);
        if now.voters.contains(&id) {
            return Err(Error::Conflict(format!("node {id} is already a voter")));
        }
        if let Some(existing) = now.addresses.get(&id) {
            if existing != addr {
                return Err(Error::Conflict(format!(
                    "node {id} is already a member at {existing}: remove it first"
                )));
            }
        }
        if !now.addresses.contains_key(&id) {
            // A node joining anew may reuse the id of one that left with its disk.
            self.network().forget(id);
        }
        self.raft()
            .add_learner(
                id,
                BasicNode {
                    addr: addr.to_string(),
                },
                false,
            )
            .await
            .map_err(write_err)?;
        tracing::info!(id, addr, "learner added");
        Ok(self.members())
    }

    /// Makes learner `id` a voter, once it has caught up with the log.
    pub async fn promote(&self, id: NodeId) -> Result<Members> {
        let m = self.require_leader()?;
        let now = members_of(&m);
        if now.voters.contains(&id) {
            return Err(Error::Conflict(format!("node {id} is already a voter")));
        }
        if !now.learners.contains(&id) {
            return Err(Error::Invalid(format!(
                "node {id} is not a learner: add it first"
            )));
        }
        let matched = now
            .matched
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten());
        let last = now.last_log_index.unwrap_or(0);
        if matched.unwrap_or(0) + PROMOTE_MAX_LAG < last {
            return Err(Error::Conflict(format!(
                "learner {id} holds the log up to {} of {last}: wait until it has caught up",
                matched.map_or("nothing".to_string(), |i| i.to_string())
            )));
        }
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_err)?;
        tracing::info!(id, "learner promoted to voter");
        Ok(self.members())
    }

    /// Removes `id` (voter or learner) from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<Members> {
        let m = self.require_leader()?;
        let now = members_of(&m);
        let change = if now.voters.contains(&id) {
            if now.voters.len() == 1 {
                return Err(Error::Conflict(format!(
                    "node {id} is the last voter: the cluster cannot remove it"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if now.learners.contains(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(Error::Invalid(format!("node {id} is not a member")));
        };
        self.raft()
            .change_membership(change, false)
            .await
            .map_err(write_err)?;
        // Whatever comes back under this id later is a new node.
        self.network().forget(id);
        tracing::info!(id, "node removed from the cluster");
        Ok(self.members())
    }

    /// Builds a snapshot of the state now (and, with `purge`, drops the log it covers, so a
    /// node that needs those entries gets the snapshot instead). Returns its last log index.
    pub async fn snapshot(&self, purge: bool) -> Result<u64> {
        let applied = self
            .raft_metrics()
            .last_applied
            .map(|l| l.index)
            .ok_or_else(|| Error::Conflict("nothing applied yet".into()))?;
        self.raft()
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        let mut metrics = self.raft().metrics();
        let got = tokio::time::timeout(
            SNAPSHOT_WAIT,
            metrics.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= applied)),
        )
        .await
        .map_err(|_| Error::Raft("the snapshot was not built in time".into()))?
        .map_err(|e| Error::Raft(e.to_string()))?
        .snapshot;
        let Some(snap) = got else {
            return Err(Error::Raft("no snapshot".into()));
        };
        if purge {
            self.raft()
                .trigger()
                .purge_log(snap.index)
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        }
        Ok(snap.index)
    }
}
