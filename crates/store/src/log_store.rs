//! The Raft log on disk: entries, vote, committed and last-purged log ids in one redb file.
//!
//! Why redb: it is embedded (no extra process), pure Rust, crash-safe (copy-on-write B-tree
//! with a checksummed double commit slot, so a torn write rolls back to the last commit rather
//! than corrupting the file), actively maintained and stable on its 2.x file format. A write
//! transaction committed with the default `Durability::Immediate` is fsynced before `commit`
//! returns, so "commit returned" means "on disk": that is exactly what openraft needs from
//! `append` (callback only after persistence) and `save_vote`.
//!
//! Writes run on the blocking pool (`spawn_blocking`) so an fsync never stalls a runtime
//! worker; they are awaited, which keeps all write IO serialized as openraft requires (every
//! write method takes `&mut self`). Reads go through redb's MVCC read transactions, which never
//! wait for a writer; they are served inline because they hit redb's page cache and take
//! microseconds.

use crate::codec;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

/// Log index -> the entry, in the store's binary encoding ([`crate::codec`]).
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small records: `vote`, `committed`, `last_purged`, in the same encoding.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// Why the log file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening raft log {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("initializing raft log tables: {0}")]
    Init(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Raft log storage. Cheap to clone: every clone shares the one database handle.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::fmt::Display) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

// The helpers return openraft's `StorageError` (large) because that is what the trait methods
// they serve must return; boxing it here would only add a conversion at every call.
#[allow(clippy::result_large_err)]
impl LogStore {
    /// Opens (or creates) the log file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|source| Error::Open {
            path: path.display().to_string(),
            source,
        })?;
        // Create both tables up front so that readers never see "table does not exist".
        let txn = db.begin_write().map_err(|e| Error::Init(e.to_string()))?;
        {
            txn.open_table(LOGS)
                .map_err(|e| Error::Init(e.to_string()))?;
            txn.open_table(META)
                .map_err(|e| Error::Init(e.to_string()))?;
        }
        txn.commit().map_err(|e| Error::Init(e.to_string()))?;
        Ok(Self { db: Arc::new(db) })
    }

    /// A handle that tells whether the database is still open (some clone alive).
    pub fn open_handle(&self) -> std::sync::Weak<Database> {
        Arc::downgrade(&self.db)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> std::result::Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => codec::decode("raft log metadata", v.value())
                .map(Some)
                .map_err(read_err),
        }
    }

    /// Runs one write transaction on the blocking pool and commits it (fsync).
    async fn write<F>(&self, f: F) -> std::result::Result<(), StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> std::result::Result<(), String> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            f(&txn)?;
            txn.commit().map_err(|e| e.to_string())
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
    }

    async fn write_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
    ) -> std::result::Result<(), StorageError> {
        self.write(move |txn| {
            let mut t = txn.open_table(META).map_err(|e| e.to_string())?;
            t.insert(key, value.as_slice()).map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }

    fn last_entry_log_id(&self) -> std::result::Result<Option<LogId>, StorageError> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let last = table.last().map_err(read_err)?;
        let log_id = match last {
            None => None,
            Some((_, v)) => {
                let entry: Entry = codec::decode("raft log entry", v.value()).map_err(read_err)?;
                Some(entry.log_id)
            }
        };
        Ok(log_id)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => Bound::Included(*s),
            Bound::Excluded(s) => Bound::Excluded(*s),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(s) => Bound::Included(*s),
            Bound::Excluded(s) => Bound::Excluded(*s),
            Bound::Unbounded => Bound::Unbounded,
        };
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOGS).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(codec::decode("raft log entry", v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> std::result::Result<(), StorageError> {
        let bytes = codec::encode("vote", vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.write_meta(KEY_VOTE, bytes)
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    /// Persisting `committed` lets a restarted node re-apply its log up to the last committed
    /// index before it serves anything, so it comes back at the revision it had, not at the
    /// (older) snapshot.
    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> std::result::Result<(), StorageError> {
        let bytes = codec::encode("committed log id", &committed).map_err(write_err)?;
        self.write_meta(KEY_COMMITTED, bytes).await
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((
                e.log_id.index,
                codec::encode("raft log entry", &e).map_err(write_err)?,
            ));
        }
        let res = self
            .write(move |txn| {
                let mut t = txn.open_table(LOGS).map_err(|e| e.to_string())?;
                for (index, bytes) in &rows {
                    t.insert(*index, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await;
        // The commit above is durable (fsync) before it returns.
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        let from = log_id.index;
        self.write(move |txn| {
            let mut t = txn.open_table(LOGS).map_err(|e| e.to_string())?;
            t.retain_in(from.., |_, _| false)
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        let upto = log_id.index;
        let purged = codec::encode("last purged log id", &log_id).map_err(write_err)?;
        self.write(move |txn| {
            {
                let mut m = txn.open_table(META).map_err(|e| e.to_string())?;
                m.insert(KEY_LAST_PURGED, purged.as_slice())
                    .map_err(|e| e.to_string())?;
            }
            let mut t = txn.open_table(LOGS).map_err(|e| e.to_string())?;
            t.retain_in(..=upto, |_, _| false)
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
    }
}
