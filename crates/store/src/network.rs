//! Raft transport over gRPC (`flotilla.raft.v1.Raft`). Payloads are openraft's own request
//! types and the `Result` the remote `Raft` returned, in the store's binary encoding
//! ([`crate::codec`]), so a remote Raft error (e.g. a higher vote) travels back typed.

use crate::codec;
use crate::types::{Node, NodeId, Raft, TypeConfig};
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

/// Largest raft message accepted or sent. Entries are batches of up to 1024 whole objects;
/// openraft sends at most `max_payload_entries` per request and snapshot chunks
/// of `snapshot_max_chunk_size`. 256 MiB leaves room for pathological batches of large
/// objects instead of wedging replication on a size limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Creates one lazily connected channel per peer and reuses it for every replication stream
/// to that peer (HTTP/2 multiplexes them).
#[derive(Clone, Default)]
pub struct NetworkFactory {
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
}

impl NetworkFactory {
    pub fn new() -> Self {
        Self::default()
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
        let channel = endpoint.connect_lazy();
        map.insert((target, addr.to_string()), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        let client = match self.channel(target, &node.addr) {
            Ok(ch) => Ok(RaftClient::new(ch)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)),
            Err(e) => {
                tracing::error!(target, addr = %node.addr, error = %e, "bad peer address");
                Err(e.to_string())
            }
        };
        Connection { target, client }
    }
}

/// A client to one peer.
pub struct Connection {
    target: NodeId,
    client: std::result::Result<RaftClient<Channel>, String>,
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
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
        let resp = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        };
        let payload = resp
            .map_err(|status| {
                // Unavailable: connection refused / reset; openraft backs off on Unreachable
                // instead of retrying hot.
                let unreachable = status.code() == Code::Unavailable;
                let err = Error::Rpc(status);
                if unreachable {
                    RPCError::Unreachable(Unreachable::new(&err))
                } else {
                    RPCError::Network(NetworkError::new(&err))
                }
            })?
            .into_inner();
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

/// The gRPC server side: decodes the payload and hands it to the local Raft.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
        Self { raft }
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
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: Request<RaftPayload>,
    ) -> std::result::Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> std::result::Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
