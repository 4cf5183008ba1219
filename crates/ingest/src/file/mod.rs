//! The file source: a directory of Kubernetes YAML/JSON files, watched, turned into events.
//!
//! Start: scan everything, publish an upsert per object (naming its file as its origin), then
//! one resync with the full key set. Then: filesystem notifications (coalesced until
//! [`DEFAULT_QUIET_TIME`] passes without a new one) re-read the touched paths, and a periodic
//! rescan catches anything the watcher missed. A file that cannot be read (an IO error) is
//! retried on its own backoff, from [`RETRY_BACKOFF_START`] up to the rescan interval. What to
//! publish is decided by the synchronous [`index`] module; this module does the IO and the
//! publishing, one event at a time, in order.
//!
//! Resync and broken files: the resync makes the store delete every object of the cluster
//! that the agent does not see, e.g. a route whose file was deleted while the agent was down.
//! A file that is not fully accepted at that moment (malformed, unreadable) may have produced
//! objects in the agent's previous life that this instance cannot know about; the resync names
//! such files in `keep_origins`, and the store keeps the objects it last saw from them (better
//! stale than gone) while deleting everything else that is gone. When one of those files is
//! fully accepted again (or deleted), a new resync without it removes whatever it no longer
//! defines.

mod index;
mod scan;
#[cfg(test)]
mod tests;

pub use scan::MAX_FILE_BYTES;

use crate::emit::{Emitter, Stopped};
use crate::{validate_cluster, DedupIds, Error, IngestStats, Publisher, Result};
use flotilla_model::EventBody;
use index::{FileIndex, FileRead};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use scan::{Listing, Stamp};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A burst of filesystem events (an editor's save, `git checkout`, `kubectl`-style writes)
/// is processed once no new event came for this long. Short, so one edit reaches proxies in
/// milliseconds; long enough that a save's write+rename+chmod are read together.
pub const DEFAULT_QUIET_TIME: Duration = Duration::from_millis(20);
/// A never-ending stream of events is still processed at least this often.
pub const MAX_COALESCE: Duration = Duration::from_millis(250);
/// Safety net for missed notifications (inotify queue overflow, network filesystems).
/// Unchanged files (same mtime and size) are not re-read, so a rescan costs one `stat` each.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Bound on distinct paths remembered between two processing rounds; past it the round
/// becomes a full rescan, which covers every path anyway.
pub const MAX_PENDING_PATHS: usize = 4096;

/// First retry of a file that could not be read. Read errors such as EMFILE (too many open
/// files) or EAGAIN pass in moments; the wait doubles per failure, up to the rescan interval
/// (the rescan would re-read the file anyway).
pub const RETRY_BACKOFF_START: Duration = Duration::from_millis(500);

/// Reads and parses one file: `(absolute path, relative path, cluster)`.
type ReadFn = dyn Fn(&Path, &str, &str) -> FileRead + Send + Sync;

/// How the loader reads files: [`scan::read_file`]. A seam for tests, which cannot make a file
/// unreadable otherwise (they run as root).
#[derive(Clone)]
struct Reader(Arc<ReadFn>);

impl Default for Reader {
    fn default() -> Self {
        Reader(Arc::new(scan::read_file))
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader")
    }
}

/// Watches `dir` (recursively) and publishes the objects of cluster `cluster`.
#[derive(Debug)]
pub struct FileSource {
    cluster: String,
    dir: PathBuf,
    quiet_time: Duration,
    rescan_interval: Duration,
    ids: Arc<DedupIds>,
    stats: Arc<IngestStats>,
    reader: Reader,
}

impl FileSource {
    pub fn new(cluster: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            cluster: cluster.into(),
            dir: dir.into(),
            quiet_time: DEFAULT_QUIET_TIME,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            ids: Arc::new(DedupIds::new()),
            stats: Arc::default(),
            reader: Reader::default(),
        }
    }

    pub fn with_quiet_time(mut self, quiet_time: Duration) -> Self {
        self.quiet_time = quiet_time;
        self
    }

    pub fn with_rescan_interval(mut self, interval: Duration) -> Self {
        // tokio's interval panics on zero.
        self.rescan_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Reads files with `read` instead of from the disk (tests inject failures with it).
    #[cfg(test)]
    fn with_reader(
        mut self,
        read: impl Fn(&Path, &str, &str) -> FileRead + Send + Sync + 'static,
    ) -> Self {
        self.reader = Reader(Arc::new(read));
        self
    }

    /// Uses these dedup ids (and their agent id as the events' `source`).
    pub fn with_dedup_ids(mut self, ids: DedupIds) -> Self {
        self.ids = Arc::new(ids);
        self
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of this agent: the `source` of its events and the prefix of its dedup ids.
    pub fn agent_id(&self) -> &str {
        self.ids.agent_id()
    }

    /// Counters, readable while `run` runs.
    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled. Returns an error only when it cannot work at all:
    /// an invalid cluster name, a directory that cannot be watched, a crashed loader, a
    /// publisher that refuses everything ([`Error::is_fatal`]: the NATS server does not let
    /// this agent publish for its cluster). Bad files and other publish failures are logged
    /// and retried, never returned.
    pub async fn run<P: Publisher>(self, publisher: P, shutdown: CancellationToken) -> Result<()> {
        let span =
            tracing::info_span!("file_source", cluster = %self.cluster, dir = %self.dir.display());
        self.run_inner(publisher, shutdown).instrument(span).await
    }

    async fn run_inner<P: Publisher>(
        self,
        publisher: P,
        shutdown: CancellationToken,
    ) -> Result<()> {
        validate_cluster(&self.cluster)?;
        let root = std::fs::canonicalize(&self.dir).map_err(|source| Error::Io {
            path: self.dir.clone(),
            source,
        })?;
        if !root.is_dir() {
            return Err(Error::Io {
                path: root,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        // Watch before the first scan, so nothing written during the scan is missed.
        let changes = Arc::new(Changes::default());
        let _watcher = watch(&root, changes.clone())?;

        let emitter = Emitter {
            publisher,
            ids: self.ids.clone(),
            cluster: self.cluster.clone(),
            stats: self.stats.clone(),
            shutdown: shutdown.clone(),
        };
        let mut loader = Loader::new(
            root,
            self.cluster.clone(),
            self.stats.clone(),
            self.reader.clone(),
            self.rescan_interval,
        );
        let mut resync = Resync::default();
        let mut targets = Targets::All {
            skip_unchanged: false,
        };
        let mut rescan =
            tokio::time::interval_at(Instant::now() + self.rescan_interval, self.rescan_interval);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let (next, events) = loader.process_blocking(targets).await?;
            loader = next;
            match emitter.emit_all(events).await {
                Ok(()) => {}
                Err(Stopped::Shutdown) => break,
                Err(Stopped::Fatal(e)) => return Err(e),
            }
            if let Some(body) = resync.due(&loader.index) {
                match emitter.emit(body).await {
                    Ok(()) => {}
                    Err(Stopped::Shutdown) => break,
                    Err(Stopped::Fatal(e)) => return Err(e),
                }
            }

            let retry_at = loader.retries.next_due();
            targets = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.notify.notified() => {
                    if !settle(&changes.notify, self.quiet_time, &shutdown).await {
                        break;
                    }
                    match changes.take() {
                        Some(t) => t,
                        None => continue_with_nothing(),
                    }
                }
                _ = rescan.tick() => Targets::All { skip_unchanged: true },
                _ = sleep_until_some(retry_at) => {
                    Targets::Paths(loader.retries.take_due(Instant::now()))
                }
            };
        }
        tracing::info!("file source stopped");
        Ok(())
    }
}

/// An empty round: no path to read (keeps the loop shape simple).
fn continue_with_nothing() -> Targets {
    Targets::Paths(BTreeSet::new())
}

/// When to publish a resync, and what it keeps.
#[derive(Debug, Default)]
struct Resync {
    /// `None` until the first resync (right after the initial scan). Then the files whose
    /// origins that resync kept and that are still not fully accepted: each one repaired (or
    /// deleted) calls for a new resync, which removes the stale objects it no longer defines.
    /// Files that break later need none: everything they produced was published by this
    /// instance and is in its key set.
    waiting_on: Option<BTreeSet<String>>,
}

impl Resync {
    /// The resync to publish after a round, if one is due.
    fn due(&mut self, index: &FileIndex) -> Option<EventBody> {
        let unhealthy: BTreeSet<String> = index.unhealthy_files().map(str::to_string).collect();
        let repaired: Vec<&String> = match &self.waiting_on {
            None => Vec::new(),
            Some(waiting) => waiting.difference(&unhealthy).collect(),
        };
        let first = self.waiting_on.is_none();
        if !first && repaired.is_empty() {
            return None;
        }
        let keys = index.keys();
        let shown: Vec<&String> = unhealthy.iter().take(10).collect();
        match (first, unhealthy.is_empty()) {
            (true, true) => {
                tracing::info!(objects = keys.len(), "initial scan done, publishing resync");
            }
            (true, false) => tracing::warn!(
                objects = keys.len(),
                unhealthy = unhealthy.len(),
                files = ?shown,
                "initial scan done, publishing resync; the objects the store last saw from files not fully accepted are kept"
            ),
            (false, _) => tracing::info!(
                objects = keys.len(),
                repaired = ?repaired,
                still_unhealthy = ?shown,
                "files kept at the last resync are fully accepted now, publishing resync"
            ),
        }
        let still: BTreeSet<String> = match self.waiting_on.take() {
            None => unhealthy.clone(),
            Some(waiting) => waiting.intersection(&unhealthy).cloned().collect(),
        };
        self.waiting_on = Some(still);
        // Every file not fully accepted now is kept, not only the waited-on ones: keeping a
        // file whose objects this instance published is harmless (they are all in `keys`).
        Some(EventBody::Resync {
            keys,
            keep_origins: unhealthy.into_iter().collect(),
        })
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Files whose last read failed with an IO error, each retried on its own backoff. Without
/// this, such a file would wait for the rescan (and, being unstamped, be re-read by it).
#[derive(Debug)]
struct Retries {
    /// The longest wait: the rescan interval, which re-reads the file anyway.
    cap: Duration,
    files: BTreeMap<String, Retry>,
}

#[derive(Debug)]
struct Retry {
    abs: PathBuf,
    backoff: Duration,
    due: Instant,
}

impl Retries {
    fn new(cap: Duration) -> Self {
        Self {
            cap,
            files: BTreeMap::new(),
        }
    }

    /// `rel` failed to read (again): the next try waits twice as long as the last one.
    fn failed(&mut self, rel: &str, abs: &Path, now: Instant) {
        let backoff = match self.files.get(rel) {
            Some(r) => r.backoff.saturating_mul(2),
            None => RETRY_BACKOFF_START,
        }
        .min(self.cap);
        self.files.insert(
            rel.to_string(),
            Retry {
                abs: abs.to_path_buf(),
                backoff,
                due: now + backoff,
            },
        );
    }

    /// `rel` was read (or is gone): no retry.
    fn forget(&mut self, rel: &str) {
        self.files.remove(rel);
    }

    fn next_due(&self) -> Option<Instant> {
        self.files.values().map(|r| r.due).min()
    }

    /// The files due at `now`. They stay until a read settles them ([`Retries::failed`] or
    /// [`Retries::forget`]); meanwhile each is due again one backoff later, so a path that
    /// could not even be looked at never makes the driver spin.
    fn take_due(&mut self, now: Instant) -> BTreeSet<PathBuf> {
        let mut paths = BTreeSet::new();
        for r in self.files.values_mut().filter(|r| r.due <= now) {
            r.due = now + r.backoff;
            paths.insert(r.abs.clone());
        }
        paths
    }
}

/// Waits until `quiet` passes without a notification (or [`MAX_COALESCE`] in total).
/// Returns false on shutdown.
async fn settle(notify: &Notify, quiet: Duration, shutdown: &CancellationToken) -> bool {
    let deadline = Instant::now() + MAX_COALESCE;
    loop {
        let until = (Instant::now() + quiet).min(deadline);
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep_until(until) => return true,
            _ = notify.notified() => {
                if Instant::now() >= deadline {
                    return true;
                }
            }
        }
    }
}

/// Paths touched since the last round, filled by the watcher's thread.
#[derive(Default)]
struct Changes {
    pending: Mutex<Pending>,
    notify: Notify,
}

#[derive(Default)]
struct Pending {
    paths: BTreeSet<PathBuf>,
    full_rescan: bool,
}

impl Changes {
    fn record(&self, event: notify::Result<notify::Event>) {
        {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            match event {
                Ok(event) => {
                    // Opening and reading (our own reads included) change nothing.
                    if matches!(event.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write))
                    {
                        return;
                    }
                    if event.need_rescan() {
                        p.full_rescan = true;
                    }
                    for path in event.paths {
                        if p.full_rescan {
                            break;
                        }
                        if p.paths.len() >= MAX_PENDING_PATHS {
                            p.full_rescan = true;
                            p.paths.clear();
                            break;
                        }
                        p.paths.insert(path);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "file watcher error; rescanning");
                    p.full_rescan = true;
                }
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Option<Targets> {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let p = std::mem::take(&mut *p);
        if p.full_rescan {
            Some(Targets::All {
                skip_unchanged: true,
            })
        } else if p.paths.is_empty() {
            None
        } else {
            Some(Targets::Paths(p.paths))
        }
    }
}

fn watch(root: &Path, changes: Arc<Changes>) -> Result<RecommendedWatcher> {
    let watch_err = |source| Error::Watch {
        path: root.to_path_buf(),
        source,
    };
    let mut watcher =
        notify::recommended_watcher(move |event| changes.record(event)).map_err(watch_err)?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .map_err(watch_err)?;
    Ok(watcher)
}

#[derive(Debug)]
enum Targets {
    /// The whole directory; `skip_unchanged` skips files whose mtime and size are as before.
    All { skip_unchanged: bool },
    /// These absolute paths (files or directories, existing or not).
    Paths(BTreeSet<PathBuf>),
}

/// Owns the index and does the blocking IO; moved into `spawn_blocking` and back each round.
struct Loader {
    root: PathBuf,
    cluster: String,
    index: FileIndex,
    /// What each file looked like when last read; only files whose read settled (parsed or
    /// refused) have one, so the rescan re-reads a file that could not be read.
    stamps: BTreeMap<String, Stamp>,
    retries: Retries,
    reader: Reader,
    stats: Arc<IngestStats>,
}

impl Loader {
    fn new(
        root: PathBuf,
        cluster: String,
        stats: Arc<IngestStats>,
        reader: Reader,
        retry_cap: Duration,
    ) -> Self {
        Self {
            root,
            cluster,
            index: FileIndex::default(),
            stamps: BTreeMap::new(),
            retries: Retries::new(retry_cap),
            reader,
            stats,
        }
    }

    async fn process_blocking(mut self, targets: Targets) -> Result<(Self, Vec<EventBody>)> {
        if matches!(&targets, Targets::Paths(p) if p.is_empty()) {
            return Ok((self, Vec::new()));
        }
        let span = tracing::Span::current();
        let done = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let events = self.process(targets);
            (self, events)
        })
        .await?;
        Ok(done)
    }

    /// Reads what `targets` names and returns the events to publish: files that exist are
    /// read first, then vanished ones are removed, so an object moved between files (a
    /// rename) is never deleted in between.
    fn process(&mut self, targets: Targets) -> Vec<EventBody> {
        let mut listing = Listing::default();
        let mut candidates = BTreeSet::new();
        let mut skip_unchanged = false;
        match targets {
            Targets::All {
                skip_unchanged: skip,
            } => {
                skip_unchanged = skip;
                listing.walk(&self.root, "");
                candidates.extend(self.index.paths_under(""));
            }
            Targets::Paths(paths) => {
                for abs in paths {
                    let Some(rel) = scan::relative(&self.root, &abs) else {
                        continue;
                    };
                    if rel.is_empty() {
                        return self.process(Targets::All {
                            skip_unchanged: true,
                        });
                    }
                    if rel.split('/').any(|c| c.starts_with("..")) {
                        // Kubernetes ConfigMap volumes swap a hidden `..data` symlink: the
                        // visible files changed without an event of their own.
                        return self.process(Targets::All {
                            skip_unchanged: true,
                        });
                    }
                    if rel.split('/').any(scan::is_hidden) {
                        continue;
                    }
                    match std::fs::metadata(&abs) {
                        Ok(meta) if meta.is_dir() => listing.walk(&abs, &rel),
                        Ok(meta) => listing.add_file(rel.clone(), abs.clone(), &meta),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::error!(file = %rel, error = %e, "cannot stat; keeping what it produced before");
                            listing.failed_dirs.push(rel.clone());
                            self.retries.failed(&rel, &abs, Instant::now());
                        }
                    }
                    candidates.extend(self.index.paths_under(&rel));
                }
            }
        }

        let mut out = Vec::new();
        for (rel, (abs, stamp)) in &listing.files {
            if skip_unchanged && self.stamps.get(rel) == Some(stamp) {
                continue;
            }
            let read = (self.reader.0)(abs, rel, &self.cluster);
            match &read {
                FileRead::Parsed { errors, .. } => {
                    for e in errors {
                        tracing::error!("{e}");
                    }
                    self.stats.add_parse_errors(errors.len() as u64);
                    if !errors.is_empty() {
                        tracing::warn!(file = %rel, "file not fully accepted: the objects it produced before stay published");
                    }
                    self.stamps.insert(rel.clone(), *stamp);
                    self.retries.forget(rel);
                }
                FileRead::Refused(why) => {
                    tracing::error!(file = %rel, "{why}; keeping what it produced before");
                    self.stats.read_error();
                    // Reading it again cannot help until it changes, which changes its stamp.
                    self.stamps.insert(rel.clone(), *stamp);
                    self.retries.forget(rel);
                }
                FileRead::Unreadable(why) => {
                    // No stamp: the next rescan reads it again whatever it looks like, and
                    // its own retry comes sooner.
                    self.stamps.remove(rel);
                    self.retries.failed(rel, abs, Instant::now());
                    let retry_in = self.retries.files.get(rel).map(|r| r.backoff);
                    tracing::error!(file = %rel, error = %why, ?retry_in, "cannot read; keeping what it produced before");
                    self.stats.read_error();
                }
                FileRead::Missing => {
                    self.stamps.remove(rel);
                    self.retries.forget(rel);
                }
            }
            self.index.apply(rel, read, &mut out);
        }
        for rel in candidates {
            if listing.files.contains_key(&rel) || listing.covers_failed(&rel) {
                continue;
            }
            tracing::debug!(file = %rel, "file gone");
            self.stamps.remove(&rel);
            self.retries.forget(&rel);
            self.index.apply(&rel, FileRead::Missing, &mut out);
        }
        self.stats.set_sizes(
            self.index.file_count(),
            self.index.object_count(),
            self.index.conflict_count(),
        );
        out
    }
}
