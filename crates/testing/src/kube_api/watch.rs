//! Watch streams: newline-delimited JSON events over a chunked HTTP/1.1 response, written by
//! a task per watch as changes are committed, with periodic BOOKMARKs, the server-side
//! `timeoutSeconds`, and an end on `close_watches` (what an apiserver restart or timeout does
//! to a client).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::status::ApiError;
use super::storage::{WatchFilter, WatchOpening};

/// Lines buffered per watch before its task waits for the client: a slow client holds back
/// only its own watch.
const WATCH_BUFFER: usize = 64;

/// The settings of one open watch.
pub struct WatchStream {
    pub filter: WatchFilter,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    pub timeout: Duration,
    pub closer: watch::Receiver<u64>,
}

fn line(v: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The body of a watch that starts from a compacted revision: the apiserver answers 200 and
/// a single ERROR event carrying the 410 Expired Status.
pub fn expired_body(err: &ApiError) -> Body {
    Body::from(line(
        &serde_json::json!({"type": "ERROR", "object": err.to_status()}),
    ))
}

impl WatchStream {
    /// Spawns the task that writes the watch and returns the response body it feeds.
    pub fn spawn(self, opening: WatchOpening) -> Body {
        let (tx, rx) = mpsc::channel::<Bytes>(WATCH_BUFFER);
        let span =
            tracing::debug_span!("fake_kube_watch", resource = %self.filter.info.qualified());
        tokio::spawn(tracing::Instrument::instrument(self.run(opening, tx), span));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        Body::from_stream(stream)
    }

    async fn run(mut self, opening: WatchOpening, tx: mpsc::Sender<Bytes>) {
        let WatchOpening {
            initial,
            mut changes,
            mut rv,
        } = opening;
        let epoch = *self.closer.borrow_and_update();
        for event in &initial {
            if tx.send(line(event)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.bookmark_interval,
            self.bookmark_interval,
        );
        loop {
            tokio::select! {
                biased;
                _ = self.closer.changed() => return,
                _ = &mut deadline => return,
                change = changes.recv() => match change {
                    Ok(change) => {
                        // closed before this change was processed: the client must not see it
                        if *self.closer.borrow() != epoch {
                            return;
                        }
                        rv = change.rv;
                        if let Some(event) = self.filter.event(&change) {
                            if tx.send(line(&event)).await.is_err() {
                                return;
                            }
                        }
                    }
                    // a watcher too slow for the history is dropped, as the watch cache does
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
                _ = ticks.tick(), if self.bookmarks => {
                    if tx.send(line(&self.filter.bookmark(rv, false))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
