//! The watch service edges consume: "changes since revision R", then a live stream.
//!
//! Each stream has its own task and a small bounded channel. The task computes what to send
//! only when the channel has room (`reserve` first, then read the state): while an edge is
//! slow, revisions pile up in the state, not in its channel, and when it catches up it gets one
//! coalesced delta from the revision it last received (or the full state if it fell behind the
//! history window). So a slow edge costs nothing to the others (no shared lock is held across
//! a send) and its backlog is bounded by [`STREAM_BUFFER`] messages.

use crate::state::Delta;
use crate::state_machine::Shared;
use flotilla_net::{Caller, Denials, PeerAuth, Role};
use flotilla_proto::watch::watch_server::{Watch, WatchServer};
use flotilla_proto::watch::{GatewayResources, WatchRequest, WatchResponse, XdsResource};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Responses queued per stream. Small on purpose: anything more than a couple of messages
/// behind is better served as one coalesced delta computed when the edge catches up.
pub const STREAM_BUFFER: usize = 2;
/// How long a watcher that asks for a revision newer than this replica has (it talked to a
/// more advanced replica before) waits for this replica to catch up before getting the full
/// state at this replica's revision. Serving older state rolls edges back; waiting forever
/// would hang an edge whose store was rebuilt from scratch.
pub const AHEAD_WAIT: Duration = Duration::from_secs(30);

/// Largest watch request accepted: a revision and an edge name.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// Largest watch response sent: a full state of a large fleet.
pub const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;
/// Who may watch: edges, and stores (for tests and tooling run with a store's identity).
const WATCHERS: &[Role] = &[Role::Edge, Role::Store];

/// The gRPC watch service of one store node. Every gateway's resources, private keys
/// included, go through it: only authenticated edges and stores may call it.
#[derive(Clone)]
pub struct WatchService {
    shared: Arc<Shared>,
    ready: watch::Receiver<bool>,
    shutdown: CancellationToken,
    auth: PeerAuth,
    denials: Arc<Denials>,
}

impl WatchService {
    pub(crate) fn new(
        shared: Arc<Shared>,
        ready: watch::Receiver<bool>,
        shutdown: CancellationToken,
        auth: PeerAuth,
        denials: Arc<Denials>,
    ) -> Self {
        Self {
            shared,
            ready,
            shutdown,
            auth,
            denials,
        }
    }

    pub fn into_server(self) -> WatchServer<Self> {
        // Full states of large fleets are big (the edge raises its limit too); a request is a
        // revision and a name.
        WatchServer::new(self)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// Converts a delta to the wire message. Cheap: names and versions are short strings and the
/// bodies are reference-counted `Bytes`.
pub fn to_proto(d: &Delta) -> WatchResponse {
    WatchResponse {
        revision: d.revision,
        full_state: d.full_state,
        gateways: d
            .gateways
            .iter()
            .map(|g| GatewayResources {
                gateway: g.gateway.clone(),
                resources: g
                    .resources
                    .iter()
                    .map(|r| XdsResource {
                        type_url: r.type_url.clone(),
                        name: r.name.clone(),
                        version: r.version.clone(),
                        body: r.body.clone(),
                    })
                    .collect(),
            })
            .collect(),
        removed_gateways: d.removed.clone(),
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.auth
            .check(&Caller::of(&request), "watch", WATCHERS, &self.denials)?;
        let req = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!("watch", edge = %req.edge_id, since = req.since_revision);
        tokio::spawn(
            serve_stream(
                self.shared.clone(),
                self.ready.clone(),
                req.since_revision,
                tx,
                self.shutdown.clone(),
            )
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_stream(
    shared: Arc<Shared>,
    mut ready: watch::Receiver<bool>,
    since: u64,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    shutdown: CancellationToken,
) {
    // Serve nothing until the state is restored: an edge must never see a revision older
    // than what this node had before it restarted.
    tokio::select! {
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
        _ = shutdown.cancelled() => return,
        _ = tx.closed() => return,
    }
    let mut states = shared.subscribe();
    if since > states.borrow().revision() {
        let caught_up = tokio::time::timeout(AHEAD_WAIT, async {
            tokio::select! {
                r = states.wait_for(|s| s.revision() >= since) => r.is_ok(),
                _ = shutdown.cancelled() => false,
                _ = tx.closed() => false,
            }
        })
        .await;
        match caught_up {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                tracing::warn!("replica still behind the edge's revision; sending full state")
            }
        }
    }
    let mut sent = since;
    let mut first = true;
    loop {
        let permit = tokio::select! {
            p = tx.reserve() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
            _ = ready.wait_for(|r| !*r) => return not_serving(&tx),
        };
        // Mark the current state seen *before* reading it, so a change landing after the
        // read wakes us again. The state is an immutable snapshot: no lock is held while the
        // delta is computed or sent.
        let st = states.borrow_and_update().clone();
        let delta = if first && since > st.revision() {
            // Timed out waiting for this replica to catch up.
            Some(st.full_state())
        } else {
            st.delta_since(sent).or_else(|| {
                // The first answer always goes out, even when empty, so the edge knows it is
                // connected and at which revision.
                first.then(|| Delta {
                    revision: st.revision().max(sent),
                    ..Delta::default()
                })
            })
        };
        first = false;
        match delta {
            Some(d) => {
                tracing::debug!(
                    revision = d.revision,
                    full = d.full_state,
                    gateways = d.gateways.len(),
                    removed = d.removed.len(),
                    "send"
                );
                sent = d.revision;
                permit.send(Ok(to_proto(&d)));
            }
            None => drop(permit),
        }
        tokio::select! {
            r = states.changed() => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = ready.wait_for(|r| !*r) => return not_serving(&tx),
        }
    }
}

/// Ends a stream because this replica stopped being ready (no leader for a while, or its Raft
/// core stopped): the edge moves to another replica.
fn not_serving(tx: &mpsc::Sender<Result<WatchResponse, Status>>) {
    tracing::warn!("replica not ready; ending the watch so the edge moves on");
    // If the edge is not even reading, ending the stream (dropping `tx`) says enough.
    let _ = tx.try_send(Err(Status::unavailable(
        "this store replica is not ready (no leader, or its Raft core stopped)",
    )));
}
