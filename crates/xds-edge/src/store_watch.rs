//! The store watch client: keeps the [`Cache`] up to date from one of the store replicas.
//!
//! It asks for "changes since the cache's revision" (0 = full state), applies every response,
//! and when the stream breaks or ends it moves on to the next replica in the list, after a
//! short exponential backoff, resuming from the cache's revision. Responses not newer than the
//! cache are ignored by the cache itself, so a lagging replica never rolls the edge back.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::watch::{watch_client::WatchClient, WatchRequest};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::cache::{Applied, Cache};

/// First delay before reconnecting; doubles per consecutive failure.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Upper bound of the reconnect delay: a store outage must not delay recovery by more.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A store that does not accept a TCP connection within this is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings detect a replica that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A full-state response holds every gateway's resources; allow far more than gRPC's 4 MiB.
const MAX_WATCH_MESSAGE: usize = 512 * 1024 * 1024;

/// Why one watch session ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid store address {uri:?}: {source}")]
    InvalidUri {
        uri: String,
        source: tonic::transport::Error,
    },
    #[error("connect to {uri}: {source}")]
    Connect {
        uri: String,
        source: tonic::transport::Error,
    },
    #[error("watch on {uri}: {source}")]
    Rpc { uri: String, source: tonic::Status },
    #[error("watch stream from {uri} ended")]
    Ended { uri: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs until `shutdown`; never returns an error (a failing store is logged and skipped).
pub(crate) async fn run(
    cache: Arc<Cache>,
    stores: Vec<String>,
    edge_id: String,
    client: flotilla_net::ClientSecurity,
    shutdown: CancellationToken,
) {
    if stores.is_empty() {
        warn!("no store to watch");
        return;
    }
    let mut idx = 0usize;
    let mut backoff = BACKOFF_MIN;
    loop {
        let uri = &stores[idx % stores.len()];
        let mut got_data = false;
        let result = tokio::select! {
            r = session(&cache, uri, &edge_id, &client, &mut got_data) => r,
            () = shutdown.cancelled() => return,
        };
        if got_data {
            backoff = BACKOFF_MIN;
        }
        let next = &stores[(idx + 1) % stores.len()];
        match result {
            Err(e) => {
                warn!(error = %e, next = %next, revision = cache.revision(), "store watch failed, switching store")
            }
            Ok(()) => warn!(next = %next, "store watch ended, switching store"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        idx = (idx + 1) % stores.len();
    }
}

async fn session(
    cache: &Cache,
    uri: &str,
    edge_id: &str,
    client_security: &flotilla_net::ClientSecurity,
    got_data: &mut bool,
) -> Result<()> {
    let endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|source| Error::InvalidUri {
            uri: uri.to_owned(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let connector = client_security
        .connector
        .clone()
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| Error::Connect {
            uri: uri.to_owned(),
            source,
        })?;
    let mut client = WatchClient::new(channel).max_decoding_message_size(MAX_WATCH_MESSAGE);
    let since_revision = cache.revision();
    info!(store = %uri, since_revision, "watching store");
    let mut request = tonic::Request::new(WatchRequest {
        since_revision,
        edge_id: edge_id.to_owned(),
    });
    client_security.authorize(&mut request);
    let mut stream = client
        .watch(request)
        .await
        .map_err(|source| Error::Rpc {
            uri: uri.to_owned(),
            source,
        })?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                *got_data = true;
                let (rev, full, n) = (resp.revision, resp.full_state, resp.gateways.len());
                match cache.apply(resp) {
                    Applied::Applied => {
                        debug!(revision = rev, full_state = full, gateways = n, "applied")
                    }
                    Applied::Stale => {
                        debug!(
                            revision = rev,
                            current = cache.revision(),
                            "ignored stale response"
                        )
                    }
                }
            }
            Ok(None) => {
                return Err(Error::Ended {
                    uri: uri.to_owned(),
                })
            }
            Err(source) => {
                return Err(Error::Rpc {
                    uri: uri.to_owned(),
                    source,
                })
            }
        }
    }
}
