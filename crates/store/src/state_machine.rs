//! The Raft state machine: folds committed entries into the shared [`StateView`], publishes the
//! revision, and builds / installs / loads snapshots.
//!
//! The state itself lives in memory; durability comes from the log plus snapshots. A snapshot
//! is one file, `snapshot.json`, in the data dir: a first line with the openraft
//! `SnapshotMeta` (JSON) and then one JSON document `{last_seq, resources: [{key, raw}]}`.
//! Keeping the meta on its own first line lets `get_current_snapshot` read the meta without
//! parsing the body, and keeps meta and body in one atomically renamed file (written to a
//! temp file, fsynced, renamed, directory fsynced). On start the state machine loads that file;
//! openraft then re-applies the log after it up to the saved committed index.

use crate::state::StateView;
use crate::types::{
    ApplyResponse, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use flotilla_model::ResourceKey;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageIOError,
};
use serde::{Deserialize, Serialize};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// Why the state machine could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading snapshot {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("decoding snapshot {path}: {message}")]
    Decode { path: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// State shared between the state machine (writer) and everything that reads it.
pub struct Shared {
    pub(crate) state: RwLock<StateView>,
    /// The revision, published after every applied batch of entries.
    pub(crate) revision_tx: watch::Sender<u64>,
}

impl Shared {
    fn new(state: StateView) -> Arc<Self> {
        let (revision_tx, _) = watch::channel(state.revision());
        Arc::new(Self {
            state: RwLock::new(state),
            revision_tx,
        })
    }

    /// Read access to the state. A poisoned lock only means a panic happened while applying;
    /// the data is still the last consistent fold, so readers keep going.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, StateView> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StateView> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    fn publish(&self, revision: u64) {
        self.revision_tx.send_if_modified(|r| {
            if *r != revision {
                *r = revision;
                true
            } else {
                false
            }
        });
    }
}

#[derive(Serialize)]
struct BodyRef<'a> {
    last_seq: u64,
    counters: crate::state::RestoredCounters,
    resources: Vec<ResourceRef<'a>>,
}

#[derive(Serialize)]
struct ResourceRef<'a> {
    key: &'a ResourceKey,
    raw: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct Body {
    last_seq: u64,
    #[serde(default)]
    counters: crate::state::RestoredCounters,
    resources: Vec<OwnedResource>,
}

#[derive(Deserialize)]
struct OwnedResource {
    key: ResourceKey,
    raw: serde_json::Value,
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

/// Splits snapshot bytes into meta and body.
fn decode_snapshot(bytes: &[u8]) -> std::result::Result<(SnapshotMeta, Body), String> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("snapshot has no meta line")?;
    let meta: SnapshotMeta =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("snapshot meta: {e}"))?;
    let body: Body =
        serde_json::from_slice(&bytes[nl + 1..]).map_err(|e| format!("snapshot body: {e}"))?;
    Ok((meta, body))
}

fn decode_meta(bytes: &[u8]) -> std::result::Result<SnapshotMeta, String> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("snapshot has no meta line")?;
    serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("snapshot meta: {e}"))
}

fn state_from(meta: &SnapshotMeta, body: Body) -> StateView {
    StateView::restore(
        meta.last_log_id,
        meta.last_membership.clone(),
        body.last_seq,
        body.counters,
        body.resources.into_iter().map(|r| (r.key, r.raw)).collect(),
    )
}

/// Writes `bytes` as the current snapshot: temp file, fsync, rename, fsync the directory.
/// `guard` serializes writers and refuses to replace a newer snapshot with an older one (two
/// builds can race).
fn persist_snapshot(
    dir: &Path,
    bytes: &[u8],
    last_log_id: Option<LogId>,
    guard: &Mutex<Option<LogId>>,
) -> std::io::Result<bool> {
    let tmp = dir.join(format!(
        "{SNAPSHOT_FILE}.{}.tmp",
        last_log_id.map(|l| l.index).unwrap_or(0)
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let mut current = guard.lock().unwrap_or_else(|p| p.into_inner());
    if *current > last_log_id {
        drop(current);
        let _ = std::fs::remove_file(&tmp);
        return Ok(false);
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    *current = last_log_id;
    Ok(true)
}

/// The openraft state machine. Holds the shared state and the snapshot directory.
pub struct StateMachine {
    shared: Arc<Shared>,
    dir: PathBuf,
    /// Last log id of the snapshot file on disk.
    snapshot_log_id: Arc<Mutex<Option<LogId>>>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let (state, snap_id) = match std::fs::read(&path) {
            Ok(bytes) => {
                let (meta, body) = decode_snapshot(&bytes).map_err(|message| Error::Decode {
                    path: path.display().to_string(),
                    message,
                })?;
                tracing::info!(
                    last_log_id = ?meta.last_log_id,
                    resources = body.resources.len(),
                    "loaded snapshot"
                );
                let id = meta.last_log_id;
                (state_from(&meta, body), id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (StateView::default(), None),
            Err(source) => {
                return Err(Error::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(Self {
            shared: Shared::new(state),
            dir: dir.to_path_buf(),
            snapshot_log_id: Arc::new(Mutex::new(snap_id)),
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

/// Builds a snapshot from a consistent view of the state.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    dir: PathBuf,
    snapshot_log_id: Arc<Mutex<Option<LogId>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        // Take a consistent view under the read lock: resources are `Arc`s, so this is cheap;
        // serialization happens after the lock is released.
        let (meta, last_seq, counters, resources) = {
            let st = self.shared.read();
            let last_applied = st.last_applied();
            let snapshot_id = match last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => "0-0-0".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: last_applied,
                last_membership: st.last_membership().clone(),
                snapshot_id,
            };
            let resources: Vec<_> = st.translator().resources().cloned().collect();
            let counters = crate::state::RestoredCounters {
                revision: st.revision(),
                events_applied: st.events_applied(),
            };
            (meta, st.last_seq(), counters, resources)
        };
        let mut bytes = serde_json::to_vec(&meta).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        bytes.push(b'\n');
        let body = BodyRef {
            last_seq,
            counters,
            resources: resources
                .iter()
                .map(|r| ResourceRef {
                    key: &r.key,
                    raw: &r.raw,
                })
                .collect(),
        };
        serde_json::to_writer(&mut bytes, &body).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        drop(body);

        let dir = self.dir.clone();
        let guard = self.snapshot_log_id.clone();
        let last_log_id = meta.last_log_id;
        let (bytes, written) = tokio::task::spawn_blocking(move || {
            let r = persist_snapshot(&dir, &bytes, last_log_id, &guard);
            (bytes, r)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let written = written.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, resources = resources.len(), written, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.shared.read();
        Ok((st.last_applied(), st.last_membership().clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<ApplyResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut revision = None;
        for entry in entries {
            // One write lock per entry, not per call: a long catch-up batch must not starve
            // readers for its whole duration.
            let mut st = self.shared.write();
            match &entry.payload {
                EntryPayload::Blank => st.advance(entry.log_id, None),
                EntryPayload::Membership(m) => st.advance(
                    entry.log_id,
                    Some(StoredMembership::new(Some(entry.log_id), m.clone())),
                ),
                EntryPayload::Normal(batch) => st.apply_batch(entry.log_id, batch),
            }
            out.push(ApplyResponse {
                revision: st.revision(),
                last_seq: st.last_seq(),
            });
            revision = Some(st.revision());
        }
        if let Some(r) = revision {
            self.shared.publish(r);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            dir: self.dir.clone(),
            snapshot_log_id: self.snapshot_log_id.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let (_, body) = decode_snapshot(&bytes).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        // Translate outside the lock; swap in one step.
        let new_state = state_from(meta, body);
        let revision = new_state.revision();
        let dir = self.dir.clone();
        let guard = self.snapshot_log_id.clone();
        let last_log_id = meta.last_log_id;
        tokio::task::spawn_blocking(move || persist_snapshot(&dir, &bytes, last_log_id, &guard))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        *self.shared.write() = new_state;
        self.shared.publish(revision);
        tracing::info!(last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
        };
        let meta = decode_meta(&bytes).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
