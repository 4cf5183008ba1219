//! Status publication: the computed status of every resource, as state, in the JetStream
//! key-value bucket [`BUCKET`], where each cluster's agent watches its own keys and writes
//! them to Kubernetes.
//!
//! Only the Raft leader writes. On becoming leader (and after any error) it reconciles the
//! whole bucket against the statuses of the current state: puts what differs, deletes what
//! has no status any more. Then, for every newly published state, it diffs the `statuses`
//! persistent maps of the last state it published and the new one (cheap: shared subtrees
//! are skipped) and writes only those keys. Every write is idempotent (a put of the whole
//! value, a delete of a key), so a leader change or a crash between computing and publishing
//! loses nothing: the next leader's reconcile covers it.
//!
//! The task reads published [`ReadState`]s; it never blocks apply. A burst of revisions is
//! coalesced (the watch channel keeps only the latest), and writes go out in batches of
//! [`BATCH`] concurrent publishes.
//!
//! Key and value: [`flotilla_model::status_kv`] (`<cluster>.<kind>.<namespace>.<name>`, a
//! JSON [`StatusValue`]).

use crate::leader::{leading_term, lost};
use crate::state::ReadState;
use crate::types::{NodeId, Raft};
use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use flotilla_model::ResourceKey;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The bucket (its stream is `KV_<bucket>`).
pub const BUCKET: &str = flotilla_model::STATUS_BUCKET;
/// Writes in flight at once: enough to fill a round trip with acks, few enough that a burst
/// of thousands of statuses does not flood the server's pending limits.
pub const BATCH: usize = 256;
/// Pause after an error before reconciling again.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// How long reading the bucket's current content may take before the reconcile fails.
const READ_WAIT: Duration = Duration::from_secs(10);

use flotilla_model::status_kv::{
    status_stream as stream_name, status_subject_prefix as subject_prefix,
};

/// Why publishing failed. The task logs it and reconciles again after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening bucket {BUCKET}: {0}")]
    Bucket(String),
    #[error("reading bucket {BUCKET}: {0}")]
    Read(String),
    #[error("writing key {key}: {message}")]
    Write { key: String, message: String },
    #[error("confirming leadership: {0}")]
    Linearizable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The bucket key of a resource's status (see [`flotilla_model::status_kv`]).
pub use flotilla_model::status_key as key_of;
pub use flotilla_model::StatusValue;

/// The value published for `key`'s `status` in `state`.
pub fn value_of(state: &ReadState, key: &ResourceKey, status: &serde_json::Value) -> StatusValue {
    let resource = state.view().resource(key);
    let api_version = resource
        .and_then(|r| r.raw.get("apiVersion"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| match key.group() {
            "" => "v1".to_string(),
            g => format!("{g}/v1"),
        });
    StatusValue {
        api_version,
        kind: key.kind.to_string(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        generation: resource.and_then(|r| r.generation()),
        status: status.clone(),
        revision: state.revision(),
    }
}

/// What should be in the bucket for `state`: every status whose key fits.
pub fn desired(state: &ReadState) -> BTreeMap<String, StatusValue> {
    let mut out = BTreeMap::new();
    for (k, st) in state.view().statuses().iter() {
        match key_of(k) {
            Some(bk) => {
                out.insert(bk, value_of(state, k, st));
            }
            None => {
                tracing::warn!(resource = %k, "status not published: the name does not fit a NATS KV key")
            }
        }
    }
    out
}

/// Opens the bucket, creating it if missing (history 1, file storage): either the stores or
/// an operator may have created it first. The stream is created with the configuration
/// `async_nats`' `create_key_value` would give it, but directly: that call first asks for the
/// account's info, whose answer from nats-server 2.9 the client cannot parse (and which the
/// store's NATS user need not be allowed to read).
pub async fn bucket(js: &jetstream::Context) -> Result<kv::Store> {
    js.get_or_create_stream(stream::Config {
        name: stream_name(),
        description: Some("Flotilla: computed status per resource".to_string()),
        subjects: vec![format!("{}>", subject_prefix())],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Bucket(e.to_string()))?;
    js.get_key_value(BUCKET)
        .await
        .map_err(|e| Error::Bucket(e.to_string()))
}

/// The bucket's current values (keys without a value, deleted or purged, are absent). Values
/// that do not parse are kept as `None`, so the reconcile overwrites or deletes them.
pub async fn read_all(
    js: &jetstream::Context,
    name: &str,
) -> Result<BTreeMap<String, Option<StatusValue>>> {
    let err = |e: String| Error::Read(e);
    let stream = js
        .get_stream(stream_name())
        .await
        .map_err(|e| err(e.to_string()))?;
    let prefix = subject_prefix();
    let consumer: consumer::Consumer<consumer::push::OrderedConfig> = stream
        .create_consumer(consumer::push::OrderedConfig {
            name: Some(name.to_string()),
            deliver_subject: js.client().new_inbox(),
            filter_subject: format!("{prefix}>"),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut out = BTreeMap::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
    let read = async {
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| err(e.to_string()))?;
            let pending = m.info().map_err(|e| err(e.to_string()))?.pending;
            let Some(key) = m.subject.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let deleted = m
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if !deleted {
                out.insert(key.to_string(), serde_json::from_slice(&m.payload).ok());
            }
            if pending == 0 {
                break;
            }
        }
        Ok::<_, Error>(())
    };
    tokio::time::timeout(READ_WAIT, read)
        .await
        .map_err(|_| err(format!("no end after {READ_WAIT:?}")))??;
    Ok(out)
}

/// One write: a put of the value, or a delete.
#[derive(Debug)]
enum Write {
    Put(String, Bytes),
    Delete(String),
}

/// Performs `writes`, [`BATCH`] at a time. Every write is idempotent.
async fn write_all(store: &kv::Store, writes: Vec<Write>) -> Result<usize> {
    let n = writes.len();
    let mut results = futures::stream::iter(writes)
        .map(|w| async move {
            match w {
                Write::Put(key, value) => {
                    store
                        .put(&key, value)
                        .await
                        .map(|_| ())
                        .map_err(|e| Error::Write {
                            key,
                            message: e.to_string(),
                        })
                }
                Write::Delete(key) => store.delete(&key).await.map_err(|e| Error::Write {
                    key,
                    message: e.to_string(),
                }),
            }
        })
        .buffer_unordered(BATCH);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(n)
}

fn put(key: String, value: &StatusValue) -> Option<Write> {
    match serde_json::to_vec(value) {
        Ok(v) => Some(Write::Put(key, Bytes::from(v))),
        Err(e) => {
            tracing::warn!(key, error = %e, "status not published: encoding failed");
            None
        }
    }
}

/// Makes the bucket hold exactly `state`'s statuses: puts the ones that differ (ignoring the
/// revision), deletes the keys with no status. Returns how many writes it made.
pub async fn reconcile(
    js: &jetstream::Context,
    store: &kv::Store,
    reader: &str,
    state: &ReadState,
) -> Result<usize> {
    let current = read_all(js, reader).await?;
    let want = desired(state);
    let mut writes = Vec::new();
    for (k, v) in &want {
        let same = matches!(current.get(k), Some(Some(cur)) if cur.same_as(v));
        if !same {
            writes.extend(put(k.clone(), v));
        }
    }
    for k in current.keys().filter(|k| !want.contains_key(*k)) {
        writes.push(Write::Delete(k.clone()));
    }
    write_all(store, writes).await
}

/// Publishes what changed between `before` and `after`. Returns how many writes it made.
pub async fn publish_changes(
    store: &kv::Store,
    before: &ReadState,
    after: &ReadState,
) -> Result<usize> {
    use imbl::ordmap::DiffItem;
    let mut writes = Vec::new();
    for d in before.view().statuses().diff(after.view().statuses()) {
        let (key, status) = match d {
            DiffItem::Add(k, v) | DiffItem::Update { new: (k, v), .. } => (k, Some(v)),
            DiffItem::Remove(k, _) => (k, None),
        };
        let Some(bk) = key_of(key) else {
            tracing::warn!(resource = %key, "status not published: the name does not fit a NATS KV key");
            continue;
        };
        match status {
            Some(st) => writes.extend(put(bk, &value_of(after, key, st))),
            None => writes.push(Write::Delete(bk)),
        }
    }
    write_all(store, writes).await
}

/// Runs until `shutdown`: while this node leads, keeps the bucket equal to the statuses of
/// the published state.
pub async fn run(
    raft: Raft,
    states: watch::Receiver<Arc<ReadState>>,
    client: async_nats::Client,
    me: NodeId,
    shutdown: CancellationToken,
) {
    let js = jetstream::new(client);
    let mut metrics = raft.metrics();
    loop {
        let term = loop {
            if let Some(term) = leading_term(&metrics.borrow_and_update(), me) {
                break term;
            }
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        };
        let outcome = tokio::select! {
            r = lead(&raft, &js, states.clone(), me, term) => r,
            _ = lost(raft.metrics(), me, term) => Ok(()),
            _ = shutdown.cancelled() => return,
        };
        if let Err(e) = outcome {
            tracing::warn!(term, error = %e, "status publication failed; reconciling again");
            tokio::select! {
                _ = tokio::time::sleep(RETRY_BACKOFF) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

async fn lead(
    raft: &Raft,
    js: &jetstream::Context,
    mut states: watch::Receiver<Arc<ReadState>>,
    me: NodeId,
    term: u64,
) -> Result<()> {
    // Everything committed before this term is applied: the state reconciled below is at
    // least as new as anything an earlier leader published.
    raft.ensure_linearizable()
        .await
        .map_err(|e| Error::Linearizable(e.to_string()))?;
    let store = bucket(js).await?;
    // Unique per attempt: the ephemeral reader of a failed attempt may still exist.
    let reader = format!(
        "flotilla-status-reader-n{me}-t{term}-{}",
        uuid::Uuid::new_v4().simple()
    );
    let mut published = states.borrow_and_update().clone();
    let n = reconcile(js, &store, &reader, &published).await?;
    tracing::info!(
        term,
        revision = published.revision(),
        writes = n,
        "status bucket reconciled"
    );
    loop {
        if states.changed().await.is_err() {
            return Ok(());
        }
        let next = states.borrow_and_update().clone();
        let n = publish_changes(&store, &published, &next).await?;
        if n > 0 {
            tracing::debug!(revision = next.revision(), writes = n, "statuses published");
        }
        published = next;
    }
}
