//! The Raft state machine: folds committed entries into the [`State`] it owns, publishes a
//! [`ReadState`] after every applied run of entries, and builds / installs / loads snapshots.
//!
//! The fold runs on the blocking pool (translation is CPU work measured in milliseconds to
//! seconds; it must not hold a runtime worker) and touches no lock: the state machine owns the
//! state, and readers only ever see published, immutable [`ReadState`]s. If the fold panics the
//! state is gone with it: `apply` reports a storage error, openraft stops the core, and the
//! node stops (a half-applied fold is never served).
//!
//! Snapshots: one file, `snapshot.bin`, in the data dir:
//! `MAGIC | meta length (u32 LE) | meta | body`, meta and body in the store's binary encoding
//! ([`crate::codec`]). The body holds the stream position, counters, rejections and every
//! resource as `(cluster, kind, namespace, name, JSON text of the object)`: the object travels
//! as opaque text, so the snapshot decodes whatever the object's shape. The meta comes first
//! so `get_current_snapshot` reads it without decoding the body; the file is written to a
//! temp file, fsynced, renamed, and the directory fsynced. On start the state machine loads it;
//! openraft then re-applies the log after it up to the saved committed index.

use crate::codec;
use crate::state::{ReadState, Saved, State};
use crate::types::{
    ApplyResponse, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use flotilla_model::{Kind, ResourceKey};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageIOError,
};
use serde::{Deserialize, Serialize};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const SNAPSHOT_FILE: &str = "snapshot.bin";
/// File magic and format version of the snapshot.
const MAGIC: &[u8; 8] = b"FLOSNAP1";

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

/// The published state, shared between the state machine (the only publisher) and everything
/// that reads (API, watch streams, the leader loop, snapshot builds).
pub struct Shared {
    current: watch::Sender<Arc<ReadState>>,
}

impl Shared {
    fn new(state: ReadState) -> Arc<Self> {
        let (current, _) = watch::channel(Arc::new(state));
        Arc::new(Self { current })
    }

    /// The latest published state. Never blocks on the fold.
    pub fn load(&self) -> Arc<ReadState> {
        self.current.borrow().clone()
    }

    /// A receiver woken whenever the revision moves (not on entries that change nothing).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ReadState>> {
        self.current.subscribe()
    }

    fn publish(&self, state: ReadState) {
        let state = Arc::new(state);
        self.current.send_if_modified(|cur| {
            let moved = cur.revision() != state.revision();
            *cur = state;
            moved
        });
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    saved: Saved,
    resources: Vec<SnapResource>,
}

#[derive(Serialize, Deserialize)]
struct SnapResource {
    cluster: String,
    kind: String,
    namespace: String,
    name: String,
    /// The object as JSON text.
    json: Vec<u8>,
    /// Where the object came from (an agent's file), kept so that a resync after a restore
    /// still honours `keep_origins`.
    origin: Option<String>,
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn encode_snapshot(meta: &SnapshotMeta, state: &ReadState) -> std::result::Result<Vec<u8>, String> {
    let meta_bytes = codec::encode("snapshot meta", meta).map_err(|e| e.to_string())?;
    let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| "snapshot meta too large")?;
    let mut resources = Vec::with_capacity(state.view().resource_count());
    for r in state.view().resources() {
        resources.push(SnapResource {
            cluster: r.key.cluster.clone(),
            kind: r.key.kind.as_str().to_string(),
            namespace: r.key.namespace.clone(),
            name: r.key.name.clone(),
            json: serde_json::to_vec(&r.raw).map_err(|e| format!("{}: {e}", r.key))?,
            origin: state.view().origin(&r.key).map(str::to_string),
        });
    }
    let body = codec::encode(
        "snapshot body",
        &Body {
            saved: state.saved(),
            resources,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + meta_bytes.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Splits snapshot bytes into meta and the body's bytes.
fn split_snapshot(bytes: &[u8]) -> std::result::Result<(SnapshotMeta, &[u8]), String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a Flotilla snapshot (bad magic)")?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or("snapshot truncated in its header")?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err("snapshot truncated in its meta".into());
    }
    let (meta, body) = rest.split_at(len);
    let meta = codec::decode("snapshot meta", meta).map_err(|e| e.to_string())?;
    Ok((meta, body))
}

/// Decodes a snapshot into the state it describes (translating everything once).
fn decode_snapshot(
    bytes: &[u8],
    options: &flotilla_translate::TranslateOptions,
) -> std::result::Result<(SnapshotMeta, State), String> {
    let (meta, body) = split_snapshot(bytes)?;
    let body: Body = codec::decode("snapshot body", body).map_err(|e| e.to_string())?;
    let mut resources = Vec::with_capacity(body.resources.len());
    for r in body.resources {
        let Some(kind) = Kind::parse(&r.kind) else {
            tracing::error!(kind = %r.kind, name = %r.name, "snapshot resource of an unknown kind left out");
            continue;
        };
        let key = ResourceKey::new(r.cluster, kind, r.namespace, r.name);
        match serde_json::from_slice(&r.json) {
            Ok(raw) => resources.push((key, raw, r.origin)),
            Err(e) => {
                tracing::error!(%key, error = %e, "snapshot resource that is not JSON left out")
            }
        }
    }
    let state = State::restore(
        meta.last_log_id,
        meta.last_membership.clone(),
        body.saved,
        resources,
        options.clone(),
    );
    Ok((meta, state))
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
        let mut f = crate::fsutil::create_private(&tmp)?;
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

/// The openraft state machine: the state it owns, the publication, the snapshot directory.
pub struct StateMachine {
    /// `None` only while a fold runs on the blocking pool (or after it panicked).
    state: Option<State>,
    shared: Arc<Shared>,
    dir: PathBuf,
    /// Last log id of the snapshot file on disk.
    snapshot_log_id: Arc<Mutex<Option<LogId>>>,
    /// The translator's options, for the states built from snapshots.
    options: flotilla_translate::TranslateOptions,
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the latest snapshot if there is one.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, flotilla_translate::TranslateOptions::default())
    }

    /// [`StateMachine::open`] with a translator of `options`.
    pub fn open_with(dir: &Path, options: flotilla_translate::TranslateOptions) -> Result<Self> {
        let path = dir.join(SNAPSHOT_FILE);
        let (state, snap_id) = match std::fs::read(&path) {
            Ok(bytes) => {
                let (meta, state) =
                    decode_snapshot(&bytes, &options).map_err(|message| Error::Decode {
                        path: path.display().to_string(),
                        message,
                    })?;
                tracing::info!(
                    last_log_id = ?meta.last_log_id,
                    revision = state.revision(),
                    "loaded snapshot"
                );
                (state, meta.last_log_id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (State::new(options.clone()), None)
            }
            Err(source) => {
                return Err(Error::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(Self {
            shared: Shared::new(state.read_state()),
            state: Some(state),
            dir: dir.to_path_buf(),
            snapshot_log_id: Arc::new(Mutex::new(snap_id)),
            options,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

/// Builds a snapshot from one published state.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    dir: PathBuf,
    snapshot_log_id: Arc<Mutex<Option<LogId>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        // A published state is consistent (its log id and its content belong together) and
        // immutable: encode it on the blocking pool while the fold goes on.
        let state = self.shared.load();
        let last_applied = state.last_applied();
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "0-0-0".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: state.last_membership().clone(),
            snapshot_id,
        };
        let dir = self.dir.clone();
        let guard = self.snapshot_log_id.clone();
        let m = meta.clone();
        let (bytes, written) = tokio::task::spawn_blocking(move || {
            let bytes = encode_snapshot(&m, &state)?;
            let written =
                persist_snapshot(&dir, &bytes, m.last_log_id, &guard).map_err(|e| e.to_string())?;
            Ok::<_, String>((bytes, written))
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = bytes.len(), written, "built snapshot");
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
        let st = self.shared.load();
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(mut state) = self.state.take() else {
            return Err(snap_err(
                ErrorVerb::Write,
                "the state was lost by an earlier failed fold",
            ));
        };
        let folded = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(entries.len());
            for entry in &entries {
                let refused = match &entry.payload {
                    EntryPayload::Blank => {
                        state.advance(entry.log_id, None);
                        None
                    }
                    EntryPayload::Membership(m) => {
                        state.advance(
                            entry.log_id,
                            Some(StoredMembership::new(Some(entry.log_id), m.clone())),
                        );
                        None
                    }
                    EntryPayload::Normal(batch) => state.apply_batch(entry.log_id, batch),
                };
                out.push(ApplyResponse {
                    revision: state.revision(),
                    epoch: state.position().epoch.clone(),
                    last_seq: state.position().last_seq,
                    refused,
                });
            }
            let published = state.read_state();
            (state, published, out)
        })
        .await;
        match folded {
            Ok((state, published, out)) => {
                self.state = Some(state);
                self.shared.publish(published);
                Ok(out)
            }
            Err(e) => {
                // The fold panicked: the state it held is gone, and whatever it had changed is
                // unknown. Stop rather than serve it (the node fails on the fatal error).
                tracing::error!(error = %e, "state machine fold failed; stopping");
                Err(StorageIOError::new(
                    ErrorSubject::StateMachine,
                    ErrorVerb::Write,
                    AnyError::error(format!("fold failed: {e}")),
                )
                .into())
            }
        }
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
        let dir = self.dir.clone();
        let guard = self.snapshot_log_id.clone();
        let last_log_id = meta.last_log_id;
        let options = self.options.clone();
        // Decode and translate off the runtime; swap in one step.
        let new_state = tokio::task::spawn_blocking(move || {
            let (_, state) = decode_snapshot(&bytes, &options)?;
            persist_snapshot(&dir, &bytes, last_log_id, &guard).map_err(|e| e.to_string())?;
            Ok::<_, String>(state)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Read, e))?
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        self.shared.publish(new_state.read_state());
        self.state = Some(new_state);
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
        let (meta, _) = split_snapshot(&bytes).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
