//! Raft transport over gRPC (`flotilla.raft.v1.Raft`). Payloads are openraft's own request
//! types and the `Result` the remote `Raft` returned, in the store's binary encoding
//! ([`crate::codec`]), so a remote Raft error (e.g. a higher vote) travels back typed.
//!
//! Identity on every call: a request names the node it is for (`x-flotilla-to`; a node
//! refuses requests meant for another id, e.g. after a peer list mix-up) and a response names
//! the responder's data dir incarnation (`x-flotilla-incarnation`). The [`NetworkFactory`]
//! remembers the first incarnation each peer answered with, for every connection it makes
//! (openraft makes new ones for every election and whenever membership changes, while the
//! leader's idea of what a follower holds lives on), and refuses the peer once its incarnation
//! changes: a node that lost its disk and came back empty under the same id must not be fed
//! into a replication stream that believes it holds entries (openraft panics on that), nor
//! have its vote counted, but be replaced through a membership change, which forgets the old
//! incarnation ([`NetworkFactory::forget`]; see [`crate::identity`]).

use crate::codec;
use crate::identity::Identity;
use crate::types::{Node, NodeId, Raft, TypeConfig};
use flotilla_net::{Caller, ClientSecurity, Denials, PeerAuth, Role};
use flotilla_proto::raft::raft_client::RaftClient;
use flotilla_proto::raft::raft_server;
use flotilla_proto::raft::RaftPayload;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// Largest raft message accepted or sent: what a peer can legitimately send, and no more. An
/// AppendEntries holds at most [`MAX_PAYLOAD_ENTRIES`] entries of at most
/// [`crate::leader::MAX_BATCH_BYTES`] each (or one event, if a single event is larger: at most
/// an object of `MAX_OBJECT_BYTES` and its envelope); snapshot chunks are 1 MiB. The decoder
/// refuses a longer message from its length prefix, before buffering it.
pub const MAX_MESSAGE_BYTES: usize =
    MAX_PAYLOAD_ENTRIES as usize * crate::leader::MAX_BATCH_BYTES + 4 * 1024 * 1024;
/// Entries replicated per AppendEntries. Each is at most [`crate::leader::MAX_BATCH_BYTES`];
/// 8 keeps a request at tens of MiB worst case (the message limit follows from it) while
/// still catching a lagging follower up quickly.
pub const MAX_PAYLOAD_ENTRIES: u64 = 8;
/// TCP connect timeout to a peer. Short: peers are in one region, and an unreachable peer
/// should turn into openraft's backoff quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a request could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid peer address {addr:?}: {message}")]
    Address { addr: String, message: String },
    #[error("encoding request: {0}")]
    Encode(#[source] codec::Error),
    #[error("decoding response: {0}")]
    Decode(#[source] codec::Error),
    #[error("rpc: {0}")]
    Rpc(#[source] Status),
    #[error(
        "node {target} answered without its incarnation (not a Flotilla store of this version?)"
    )]
    NoIncarnation { target: NodeId },
    #[error("node {target} has a new data dir (incarnation {now}, was {was}): it lost what it had persisted; remove it from the cluster and add it back (flotilla ctl remove / add-learner / promote)")]
    Reincarnated { target: NodeId, was: u64, now: u64 },
}

/// Request metadata: the node id the request is meant for.
pub const TO_HEADER: &str = "x-flotilla-to";
/// Response metadata: the responder's incarnation.
pub const INCARNATION_HEADER: &str = "x-flotilla-incarnation";

/// What [`RaftService`]'s `Status` call answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PeerStatus {
    pub node_id: NodeId,
    pub incarnation: u64,
    /// The node belongs to a cluster (has a membership config, or a log).
    pub initialized: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Creates one lazily connected channel per peer and reuses it for every replication stream
/// to that peer (HTTP/2 multiplexes them).
#[derive(Clone, Default)]
pub struct NetworkFactory {
    client: ClientSecurity,
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    /// The incarnation each peer first answered with (see the module doc).
    incarnations: Arc<Mutex<HashMap<NodeId, u64>>>,
}

impl NetworkFactory {
    pub fn new(client: ClientSecurity) -> Self {
        Self {
            client,
            ..Self::default()
        }
    }

    /// How this node authenticates to its peers.
    pub fn security(&self) -> &ClientSecurity {
        &self.client
    }

    /// Forgets what `target` was: it is being removed from, or added to, the cluster, and may
    /// come back with a new data dir.
    pub fn forget(&self, target: NodeId) {
        self.incarnations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&target);
    }

    /// A client to the peer at `addr` (its channel shared with every other client to it).
    pub fn client(&self, target: NodeId, addr: &str) -> Result<RaftClient<Channel>> {
        Ok(RaftClient::new(self.channel(target, addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&(target, addr.to_string())) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Address {
                addr: addr.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        // The connector dials (and does TLS with this node's certificate, checking the peer
        // is a store) for every (re)connection, so rotated certificates apply.
        let connector = self
            .client
            .connector
            .clone()
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = endpoint.connect_with_connector_lazy(connector);
        map.insert((target, addr.to_string()), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        let client = self.client(target, &node.addr).map_err(|e| {
            tracing::error!(target, addr = %node.addr, error = %e, "bad peer address");
            e.to_string()
        });
        Connection {
            target,
            client,
            security: self.client.clone(),
            incarnations: self.incarnations.clone(),
        }
    }
}

/// Asks the peer at `addr` who it is.
pub async fn peer_status(
    client: &mut RaftClient<Channel>,
    security: &ClientSecurity,
    target: NodeId,
    timeout: Duration,
) -> Result<PeerStatus> {
    let mut request = Request::new(RaftPayload::default());
    request.set_timeout(timeout);
    set_target(&mut request, target);
    security.authorize(&mut request);
    let resp = client.status(request).await.map_err(Error::Rpc)?;
    codec::decode("peer status", &resp.into_inner().body).map_err(Error::Decode)
}

fn set_target<T>(request: &mut Request<T>, target: NodeId) {
    if let Ok(v) = target.to_string().parse() {
        request.metadata_mut().insert(TO_HEADER, v);
    }
}

/// A client to one peer, for one replication stream (or one election).
pub struct Connection {
    target: NodeId,
    client: std::result::Result<RaftClient<Channel>, String>,
    security: ClientSecurity,
    incarnations: Arc<Mutex<HashMap<NodeId, u64>>>,
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Connection {
    /// Checks the responder is the node this connection has been talking to.
    fn check_incarnation(
        &self,
        meta: &tonic::metadata::MetadataMap,
    ) -> std::result::Result<(), Error> {
        let now = meta
            .get(INCARNATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(Error::NoIncarnation {
                target: self.target,
            })?;
        let mut known = self.incarnations.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(&self.target) {
            None => {
                known.insert(self.target, now);
                Ok(())
            }
            Some(&was) if was == now => Ok(()),
            Some(&was) => Err(Error::Reincarnated {
                target: self.target,
                was,
                now,
            }),
        }
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> std::result::Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                let e = std::io::Error::other(e.clone());
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
        };
        let body = codec::encode("raft request", req)
            .map_err(|e| RPCError::Network(NetworkError::new(&Error::Encode(e))))?;
        let mut request = Request::new(RaftPayload { body: body.into() });
        request.set_timeout(option.hard_ttl());
        set_target(&mut request, self.target);
        self.security.authorize(&mut request);
        let resp = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        };
        let resp = resp.map_err(|status| {
            // Unavailable: connection refused / reset; openraft backs off on Unreachable
            // instead of retrying hot.
            let unreachable = status.code() == Code::Unavailable;
            let err = Error::Rpc(status);
            if unreachable {
                RPCError::Unreachable(Unreachable::new(&err))
            } else {
                RPCError::Network(NetworkError::new(&err))
            }
        })?;
        if let Err(e) = self.check_incarnation(resp.metadata()) {
            // Loud, but not on every heartbeat: once per connection is enough to act on.
            tracing::error!(target = self.target, error = %e, "peer refused");
            // Unreachable: openraft backs off and keeps the stream's progress as it is.
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let payload = resp.into_inner();
        let res: std::result::Result<Resp, RaftError<NodeId, E>> =
            codec::decode("raft response", &payload.body)
                .map_err(|e| RPCError::Network(NetworkError::new(&Error::Decode(e))))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>>
    {
        self.call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

/// The gRPC server side: checks the request is for this node, decodes the payload and hands it
/// to the local Raft; answers with this node's incarnation.
pub struct RaftService {
    raft: Raft,
    identity: Identity,
    auth: PeerAuth,
    denials: Arc<Denials>,
}

/// Only store nodes speak Raft.
const RAFT_PEERS: &[Role] = &[Role::Store];

impl RaftService {
    pub fn new(raft: Raft, identity: Identity, auth: PeerAuth, denials: Arc<Denials>) -> Self {
        Self {
            raft,
            identity,
            auth,
            denials,
        }
    }

    /// Authenticates the caller (a store node) and checks the request is meant for this node;
    /// nothing of a request is decoded before both pass.
    fn check_target<T>(&self, req: &Request<T>) -> std::result::Result<(), Status> {
        self.auth
            .check(&Caller::of(req), "raft", RAFT_PEERS, &self.denials)?;
        let to = req
            .metadata()
            .get(TO_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match to {
            Some(id) if id == self.identity.node_id => Ok(()),
            Some(id) => Err(Status::failed_precondition(format!(
                "this is store node {}, not node {id}: check the peer addresses",
                self.identity.node_id
            ))),
            None => Err(Status::invalid_argument(format!(
                "a raft request must name its target node in {TO_HEADER}"
            ))),
        }
    }

    fn respond<T: Serialize>(&self, res: &T) -> std::result::Result<Response<RaftPayload>, Status> {
        let mut resp = encode(res)?;
        if let Ok(v) = self.identity.incarnation.to_string().parse() {
            resp.metadata_mut().insert(INCARNATION_HEADER, v);
        }
        Ok(resp)
    }

    /// The tonic service, with the message size limits raised to [`MAX_MESSAGE_BYTES`].
    pub fn into_server(self) -> raft_server::RaftServer<Self> {
        raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> std::result::Result<T, Status> {
    codec::decode("raft request", &req.into_inner().body)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn encode<T: Serialize>(res: &T) -> std::result::Result<Response<RaftPayload>, Status> {
    let body = codec::encode("raft response", res).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { body: body.into() }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> std::result::Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        self.respond(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: Request<RaftPayload>,
    ) -> std::result::Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc: VoteRequest<NodeId> = decode(request)?;
        self.respond(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> std::result::Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        self.respond(&self.raft.install_snapshot(rpc).await)
    }

    async fn status(
        &self,
        request: Request<RaftPayload>,
    ) -> std::result::Result<Response<RaftPayload>, Status> {
        self.check_target(&request)?;
        let m = self.raft.metrics().borrow().clone();
        let initialized = m.last_log_index.is_some()
            || m.membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some();
        self.respond(&PeerStatus {
            node_id: self.identity.node_id,
            incarnation: self.identity.incarnation,
            initialized,
        })
    }
}
