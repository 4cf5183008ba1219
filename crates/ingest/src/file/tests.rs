use super::*;
use crate::memory::RecordingPublisher;
use flotilla_model::{Kind, ResourceEvent, ResourceKey};
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};

const CLUSTER: &str = "east";

fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n"
    )
}

fn svc(name: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  ports: [{{port: 80}}]\n")
}

fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

fn route_key(name: &str) -> ResourceKey {
    ResourceKey::new(CLUSTER, Kind::HTTPRoute, "apps", name)
}

fn svc_key(name: &str) -> ResourceKey {
    ResourceKey::new(CLUSTER, Kind::Service, "apps", name)
}

/// What an event says, without the object body (or the origin): easy to compare.
#[derive(Debug, PartialEq)]
enum Ev {
    Up(ResourceKey, String),
    Del(ResourceKey),
    /// Keys, then the origins kept.
    Resync(Vec<ResourceKey>, Vec<String>),
}

fn resync(keys: Vec<ResourceKey>, keep: &[&str]) -> Ev {
    Ev::Resync(keys, keep.iter().map(|k| k.to_string()).collect())
}

fn up(key: ResourceKey, path: &str) -> Ev {
    Ev::Up(key, path.to_string())
}

fn summarize(body: &EventBody) -> Ev {
    match body {
        EventBody::Upsert { key, object, .. } => {
            // The route's path prefix (or "" for other kinds) tells versions apart.
            let path = object
                .pointer("/spec/rules/0/matches/0/path/value")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            Ev::Up(key.clone(), path)
        }
        EventBody::Delete { key } => Ev::Del(key.clone()),
        EventBody::Resync { keys, keep_origins } => Ev::Resync(keys.clone(), keep_origins.clone()),
    }
}

/// `(key, origin)` of each upsert.
fn origins(bodies: &[EventBody]) -> Vec<(ResourceKey, Option<String>)> {
    bodies
        .iter()
        .filter_map(|b| match b {
            EventBody::Upsert { key, origin, .. } => Some((key.clone(), origin.clone())),
            _ => None,
        })
        .collect()
}

fn from(key: ResourceKey, file: &str) -> (ResourceKey, Option<String>) {
    (key, Some(file.to_string()))
}

/// Runs `f` and returns what it logged (warnings and up), as text.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text =
        String::from_utf8_lossy(&buf.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned();
    (out, text)
}

/// A directory, a loader over it and an emitter into a recording publisher: drives the diff
/// logic round by round, without a watcher.
struct Harness {
    _dir: tempfile::TempDir,
    loader: Loader,
    emitter: Emitter<Arc<RecordingPublisher>>,
    publisher: Arc<RecordingPublisher>,
}

impl Harness {
    fn new() -> Self {
        Self::with_reader(Reader::default())
    }

    fn with_reader(reader: Reader) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonicalize");
        let stats = Arc::new(IngestStats::default());
        let publisher = Arc::new(RecordingPublisher::new());
        Self {
            loader: Loader::new(
                root,
                CLUSTER.into(),
                stats.clone(),
                reader,
                DEFAULT_RESCAN_INTERVAL,
            ),
            emitter: Emitter {
                publisher: publisher.clone(),
                ids: Arc::new(DedupIds::with_agent_id("agent")),
                cluster: CLUSTER.into(),
                stats,
                shutdown: CancellationToken::new(),
            },
            publisher,
            _dir: dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.loader.root.join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(p, text).expect("write");
    }

    /// Processes `targets` and publishes; returns what was published.
    async fn round(&mut self, targets: Targets) -> Vec<Ev> {
        self.round_bodies(targets)
            .await
            .iter()
            .map(summarize)
            .collect()
    }

    async fn round_bodies(&mut self, targets: Targets) -> Vec<EventBody> {
        let events = self.loader.process(targets);
        assert!(self.emitter.emit_all(events).await.is_ok());
        self.publisher.take().into_iter().map(|e| e.body).collect()
    }

    fn abs_paths(&self, rels: &[&str]) -> BTreeSet<PathBuf> {
        rels.iter().map(|r| self.path(r)).collect()
    }

    async fn scan(&mut self) -> Vec<Ev> {
        self.round(Targets::All {
            skip_unchanged: false,
        })
        .await
    }

    async fn touched(&mut self, rels: &[&str]) -> Vec<Ev> {
        let paths = self.abs_paths(rels);
        self.round(Targets::Paths(paths)).await
    }

    async fn rescan(&mut self) -> Vec<Ev> {
        self.round(Targets::All {
            skip_unchanged: true,
        })
        .await
    }
}

#[tokio::test]
async fn initial_scan_upserts_everything_and_ignores_other_files() {
    let mut h = Harness::new();
    h.write("a.yaml", &docs(&[route("r1", "/a"), svc("s1")]));
    h.write("sub/dir/b.yml", &route("r2", "/b"));
    h.write(
        "c.json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s2","namespace":"apps"}}"#,
    );
    // Not resource files: hidden, editor temp/backup, other extensions, hidden directory.
    h.write(".hidden.yaml", &route("x1", "/x"));
    h.write("a.yaml~", &route("x2", "/x"));
    h.write("#a.yaml#", &route("x3", "/x"));
    h.write(".a.yaml.swp", &route("x4", "/x"));
    h.write("notes.txt", &route("x5", "/x"));
    h.write(".git/objects/c.yaml", &route("x6", "/x"));
    let evs = h.scan().await;
    assert_eq!(
        evs,
        vec![
            up(route_key("r1"), "/a"),
            up(svc_key("s1"), ""),
            up(svc_key("s2"), ""),
            up(route_key("r2"), "/b"),
        ]
    );
    // The resync body is the full key set, in key order.
    assert_eq!(
        h.loader.index.keys(),
        vec![
            route_key("r1"),
            route_key("r2"),
            svc_key("s1"),
            svc_key("s2")
        ]
    );
    // Reading everything again publishes nothing.
    assert_eq!(h.scan().await, vec![]);
    let stats = h.loader.stats.snapshot();
    assert_eq!(
        (stats.files, stats.objects, stats.events_published),
        (3, 4, 4)
    );
}

#[tokio::test]
async fn edits_publish_only_what_changed() {
    let mut h = Harness::new();
    h.write(
        "a.yaml",
        &docs(&[route("r1", "/a"), route("r2", "/b"), svc("s1")]),
    );
    h.scan().await;
    // r1 changes, r2 disappears, s1 unchanged, r3 appears.
    h.write(
        "a.yaml",
        &docs(&[route("r1", "/a2"), svc("s1"), route("r3", "/c")]),
    );
    assert_eq!(
        h.touched(&["a.yaml"]).await,
        vec![
            up(route_key("r1"), "/a2"),
            up(route_key("r3"), "/c"),
            Ev::Del(route_key("r2")),
        ]
    );
    assert_eq!(h.touched(&["a.yaml"]).await, vec![]);
}

#[tokio::test]
async fn deleting_a_file_deletes_its_keys() {
    let mut h = Harness::new();
    h.write("a.yaml", &docs(&[route("r1", "/a"), svc("s1")]));
    h.write("b.yaml", &svc("s2"));
    h.scan().await;
    fs::remove_file(h.path("a.yaml")).expect("rm");
    assert_eq!(
        h.touched(&["a.yaml"]).await,
        vec![Ev::Del(route_key("r1")), Ev::Del(svc_key("s1"))]
    );
    // A whole directory removed: only its path is reported by the watcher.
    h.write("d/x.yaml", &svc("s3"));
    h.write("d/e/y.yaml", &svc("s4"));
    assert_eq!(
        h.touched(&["d"]).await,
        vec![up(svc_key("s4"), ""), up(svc_key("s3"), "")]
    );
    fs::remove_dir_all(h.path("d")).expect("rm -r");
    assert_eq!(
        h.touched(&["d"]).await,
        vec![Ev::Del(svc_key("s4")), Ev::Del(svc_key("s3"))]
    );
    assert_eq!(h.loader.index.keys(), vec![svc_key("s2")]);
}

#[tokio::test]
async fn rename_moves_objects_without_deleting_them() {
    let mut h = Harness::new();
    h.write("a.yaml", &docs(&[route("r1", "/a"), svc("s1")]));
    h.scan().await;
    fs::create_dir_all(h.path("moved")).expect("mkdir");
    fs::rename(h.path("a.yaml"), h.path("moved/b.yaml")).expect("mv");
    // A rename deletes nothing; the same objects are upserted once more, to name their new
    // origin (a later resync keeps objects by origin).
    let bodies = h
        .round_bodies(Targets::Paths(h.abs_paths(&["a.yaml", "moved/b.yaml"])))
        .await;
    assert_eq!(
        origins(&bodies),
        vec![
            from(route_key("r1"), "moved/b.yaml"),
            from(svc_key("s1"), "moved/b.yaml")
        ]
    );
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    // The new file owns them now: deleting it deletes them.
    fs::remove_file(h.path("moved/b.yaml")).expect("rm");
    assert_eq!(
        h.touched(&["moved/b.yaml"]).await,
        vec![Ev::Del(route_key("r1")), Ev::Del(svc_key("s1"))]
    );
    // Renamed to a non-resource name (e.g. disabled): like a delete.
    h.write("c.yaml", &svc("s2"));
    h.touched(&["c.yaml"]).await;
    fs::rename(h.path("c.yaml"), h.path("c.yaml.disabled")).expect("mv");
    assert_eq!(
        h.touched(&["c.yaml", "c.yaml.disabled"]).await,
        vec![Ev::Del(svc_key("s2"))]
    );
}

#[tokio::test]
async fn malformed_file_keeps_previous_keys() {
    let mut h = Harness::new();
    h.write(
        "a.yaml",
        &docs(&[route("r1", "/a"), route("r2", "/b"), svc("s1")]),
    );
    h.scan().await;
    // r1 edited fine, r2's document now has an unknown kind, s1 is gone from the file.
    h.write(
        "a.yaml",
        &docs(&[
            route("r1", "/a2"),
            "apiVersion: v1\nkind: Frobnicator\nmetadata: {name: r2}\n".to_string(),
        ]),
    );
    // The document that parsed is upserted; nothing is deleted.
    assert_eq!(
        h.touched(&["a.yaml"]).await,
        vec![up(route_key("r1"), "/a2")]
    );
    assert_eq!(h.loader.stats.snapshot().parse_errors, 1);
    assert_eq!(
        h.loader.index.unhealthy_files().collect::<Vec<_>>(),
        vec!["a.yaml"]
    );
    // Broken YAML syntax and a missing name: nothing accepted is lost.
    h.write("a.yaml", "kind: [unclosed\n  - : :");
    assert_eq!(h.touched(&["a.yaml"]).await, vec![]);
    h.write(
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: apps}\n",
    );
    assert_eq!(h.touched(&["a.yaml"]).await, vec![]);
    assert_eq!(
        h.loader.index.keys(),
        vec![route_key("r1"), route_key("r2"), svc_key("s1")]
    );
    // Once the file is fully accepted again, what it no longer defines goes.
    h.write("a.yaml", &docs(&[route("r1", "/a2"), svc("s1")]));
    assert_eq!(h.touched(&["a.yaml"]).await, vec![Ev::Del(route_key("r2"))]);
    assert!(h.loader.index.unhealthy_files().next().is_none());
}

#[tokio::test]
async fn unreadable_file_keeps_previous_keys() {
    let mut h = Harness::new();
    h.write("a.yaml", &svc("s1"));
    h.scan().await;
    fs::write(h.path("a.yaml"), b"kind: \xff\xfe not utf-8").expect("write");
    assert_eq!(h.touched(&["a.yaml"]).await, vec![]);
    // Too large.
    let big = format!("{}\n# {}\n", svc("s1"), "x".repeat(MAX_FILE_BYTES as usize));
    fs::write(h.path("a.yaml"), big).expect("write");
    assert_eq!(h.touched(&["a.yaml"]).await, vec![]);
    assert_eq!(h.loader.stats.snapshot().read_errors, 2);
    assert_eq!(h.loader.index.keys(), vec![svc_key("s1")]);
    // Deleting it still deletes what it defined.
    fs::remove_file(h.path("a.yaml")).expect("rm");
    assert_eq!(h.touched(&["a.yaml"]).await, vec![Ev::Del(svc_key("s1"))]);
}

/// A reader that fails the first `failures` reads of `file` with an IO error (as EMFILE
/// would), then reads from the disk.
fn failing_reader(file: &'static str, failures: usize) -> (Reader, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let counter = reads.clone();
    let reader = Reader(Arc::new(move |abs: &Path, rel: &str, cluster: &str| {
        if rel == file && counter.fetch_add(1, Ordering::SeqCst) < failures {
            return FileRead::Unreadable("cannot open: Too many open files (os error 24)".into());
        }
        scan::read_file(abs, rel, cluster)
    }));
    (reader, reads)
}

#[tokio::test(start_paused = true)]
async fn a_file_that_failed_to_read_is_read_again_by_the_rescan() {
    let (reader, reads) = failing_reader("a.yaml", 1);
    let mut h = Harness::with_reader(reader);
    h.write("a.yaml", &svc("s1"));
    h.write("b.yaml", &svc("s2"));
    assert_eq!(h.scan().await, vec![up(svc_key("s2"), "")]);
    assert_eq!(h.loader.stats.snapshot().read_errors, 1);
    assert_eq!(
        h.loader.index.unhealthy_files().collect::<Vec<_>>(),
        vec!["a.yaml"]
    );
    // The rescan skips files unchanged since their last read: a.yaml had no good read.
    assert_eq!(h.rescan().await, vec![up(svc_key("s1"), "")]);
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    assert!(h.loader.index.unhealthy_files().next().is_none());
    assert_eq!(h.loader.retries.next_due(), None);
    // Now stamped: the next rescan does not read it.
    assert_eq!(h.rescan().await, vec![]);
    assert_eq!(reads.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn unreadable_files_are_retried_with_a_doubling_backoff_capped_at_the_rescan() {
    let (reader, reads) = failing_reader("a.yaml", 4);
    let mut h = Harness::with_reader(reader);
    h.loader.retries.cap = Duration::from_millis(1500);
    h.write("a.yaml", &svc("s1"));
    let start = Instant::now();
    assert_eq!(h.scan().await, vec![]);
    let mut waits = Vec::new();
    while let Some(due) = h.loader.retries.next_due() {
        waits.push(due - Instant::now());
        tokio::time::sleep_until(due).await;
        let due_paths = h.loader.retries.take_due(Instant::now());
        assert_eq!(due_paths, h.abs_paths(&["a.yaml"]));
        // Taken but not settled yet: due again one backoff later, not at once.
        assert!(h.loader.retries.next_due() > Some(Instant::now()));
        h.round(Targets::Paths(due_paths)).await;
    }
    let ms = Duration::from_millis;
    assert_eq!(waits, vec![ms(500), ms(1000), ms(1500), ms(1500)]);
    assert_eq!(reads.load(Ordering::SeqCst), 5);
    assert_eq!(h.loader.index.keys(), vec![svc_key("s1")]);
    assert_eq!(Instant::now() - start, ms(4500));
    // Nothing due: the read succeeded.
    assert!(h.loader.retries.take_due(Instant::now()).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_retried_file_that_is_deleted_is_forgotten() {
    let (reader, _) = failing_reader("a.yaml", usize::MAX);
    let mut h = Harness::with_reader(reader);
    h.write("a.yaml", &svc("s1"));
    h.scan().await;
    assert!(h.loader.retries.next_due().is_some());
    fs::remove_file(h.path("a.yaml")).expect("rm");
    assert_eq!(h.touched(&["a.yaml"]).await, vec![]);
    assert_eq!(h.loader.retries.next_due(), None);
    assert_eq!(h.loader.index.file_count(), 0);
}

#[tokio::test]
async fn same_key_in_two_files_first_path_wins() {
    let mut h = Harness::new();
    h.write("b.yaml", &route("r1", "/from-b"));
    // Read alone, b is published.
    assert_eq!(
        h.touched(&["b.yaml"]).await,
        vec![up(route_key("r1"), "/from-b")]
    );
    // a comes later but is first in path order: it wins, and keeps winning.
    h.write("a.yaml", &route("r1", "/from-a"));
    let bodies = h
        .round_bodies(Targets::Paths(h.abs_paths(&["a.yaml"])))
        .await;
    assert_eq!(origins(&bodies), vec![from(route_key("r1"), "a.yaml")]);
    assert_eq!(summarize(&bodies[0]), up(route_key("r1"), "/from-a"));
    assert_eq!(h.loader.stats.snapshot().conflicting_keys, 1);
    // Edits and rescans of b change nothing while a defines the key.
    h.write("b.yaml", &route("r1", "/from-b2"));
    assert_eq!(h.touched(&["b.yaml"]).await, vec![]);
    assert_eq!(h.scan().await, vec![]);
    // a edited: its new version is published.
    h.write("a.yaml", &route("r1", "/from-a2"));
    assert_eq!(
        h.touched(&["a.yaml"]).await,
        vec![up(route_key("r1"), "/from-a2")]
    );
    // a deleted: b still defines the key, its version comes back; no delete.
    fs::remove_file(h.path("a.yaml")).expect("rm");
    let bodies = h
        .round_bodies(Targets::Paths(h.abs_paths(&["a.yaml"])))
        .await;
    assert_eq!(summarize(&bodies[0]), up(route_key("r1"), "/from-b2"));
    assert_eq!(origins(&bodies), vec![from(route_key("r1"), "b.yaml")]);
    assert_eq!(h.loader.stats.snapshot().conflicting_keys, 0);
    // b deleted: now the key is gone.
    fs::remove_file(h.path("b.yaml")).expect("rm");
    assert_eq!(h.touched(&["b.yaml"]).await, vec![Ev::Del(route_key("r1"))]);
}

#[tokio::test]
async fn the_winner_does_not_depend_on_the_read_order() {
    // Three agents over the same files, reading them in different orders (a restart scans,
    // a running agent sees edits one by one): each ends up serving dir/a.yaml's version.
    let files = [
        ("z.yaml", "/from-z"),
        ("dir/a.yaml", "/from-dir-a"),
        ("dir0.yaml", "/from-dir0"),
    ];
    // '/' sorts before '0': dir/a.yaml comes first.
    let orders: [&[usize]; 3] = [&[0, 1, 2], &[2, 1, 0], &[1, 0, 2]];
    for order in orders {
        let mut h = Harness::new();
        for (file, path) in files {
            h.write(file, &route("r1", path));
        }
        for &i in order {
            h.touched(&[files[i].0]).await;
        }
        let served = h.loader.index.published_owner(&route_key("r1"));
        assert_eq!(served, Some("dir/a.yaml"), "order {order:?}");
        // A restart (a full scan by a fresh agent) publishes the same.
        let mut fresh = Harness::new();
        for (file, path) in files {
            fresh.write(file, &route("r1", path));
        }
        assert_eq!(fresh.scan().await, vec![up(route_key("r1"), "/from-dir-a")]);
    }
}

#[tokio::test]
async fn a_conflict_is_warned_when_its_files_change_not_on_every_read() {
    let mut h = Harness::new();
    h.write("a.yaml", &svc("s1"));
    h.write("b.yaml", &svc("s1"));
    let (events, log) = logged(|| {
        h.loader.process(Targets::All {
            skip_unchanged: false,
        })
    });
    assert_eq!(events.len(), 1);
    assert_eq!(
        log.matches("defined in more than one file").count(),
        1,
        "{log}"
    );
    assert!(log.contains("key=east/Service/apps/s1"), "{log}");
    assert!(
        log.contains("file=a.yaml") && log.contains("ignored=[\"b.yaml\"]"),
        "{log}"
    );
    // Reading both again (unchanged or not): no new warning.
    let (_, log) = logged(|| {
        h.loader.process(Targets::All {
            skip_unchanged: false,
        })
    });
    assert!(!log.contains("more than one file"), "{log}");
    // A third file joins: warned again, naming all of them.
    h.write("c.yaml", &svc("s1"));
    let (_, log) = logged(|| h.loader.process(Targets::Paths(h.abs_paths(&["c.yaml"]))));
    assert!(log.contains("ignored=[\"b.yaml\", \"c.yaml\"]"), "{log}");
    let stats = h.loader.stats.snapshot();
    assert_eq!((stats.objects, stats.conflicting_keys), (1, 1));
}

#[tokio::test]
async fn same_content_in_two_files_and_duplicates_within_one_file() {
    let mut h = Harness::new();
    h.write("a.yaml", &svc("s1"));
    h.write("b.yaml", &svc("s1"));
    assert_eq!(h.scan().await, vec![up(svc_key("s1"), "")]);
    // b (not the owner) goes: nothing to publish.
    fs::remove_file(h.path("b.yaml")).expect("rm");
    assert_eq!(h.touched(&["b.yaml"]).await, vec![]);
    // Back, then the owner goes: same content, but the origin moves to b.
    h.write("b.yaml", &svc("s1"));
    assert_eq!(h.touched(&["b.yaml"]).await, vec![]);
    fs::remove_file(h.path("a.yaml")).expect("rm");
    let bodies = h
        .round_bodies(Targets::Paths(h.abs_paths(&["a.yaml"])))
        .await;
    assert_eq!(origins(&bodies), vec![from(svc_key("s1"), "b.yaml")]);
    // Twice in one file: the later document wins.
    h.write(
        "c.yaml",
        &docs(&[route("r1", "/first"), route("r1", "/second")]),
    );
    assert_eq!(
        h.touched(&["c.yaml"]).await,
        vec![up(route_key("r1"), "/second")]
    );
}

#[tokio::test]
async fn periodic_rescan_skips_unchanged_files_and_sees_deletions() {
    let mut h = Harness::new();
    h.write("a.yaml", &svc("s1"));
    h.write("b.yaml", &svc("s2"));
    h.scan().await;
    h.write("a.yaml", &docs(&[svc("s1"), svc("s3")]));
    fs::remove_file(h.path("b.yaml")).expect("rm");
    let evs = h
        .round(Targets::All {
            skip_unchanged: true,
        })
        .await;
    assert_eq!(evs, vec![up(svc_key("s3"), ""), Ev::Del(svc_key("s2"))]);
}

#[tokio::test(start_paused = true)]
async fn publish_retries_with_the_same_dedup_id() {
    let h = Harness::new();
    h.publisher.fail_next(3);
    let body = EventBody::Delete { key: svc_key("s1") };
    assert!(h.emitter.emit(body.clone()).await.is_ok());
    assert!(h.emitter.emit(body).await.is_ok());
    assert_eq!(h.publisher.attempts(), 5);
    let got = h.publisher.events_with_ids();
    let ids: Vec<_> = got.iter().map(|(_, id)| id.as_str()).collect();
    // Attempts 1-4 carried "agent-0"; the second event is "agent-1".
    assert_eq!(ids, vec!["agent-0", "agent-1"]);
    assert_eq!(got[0].0.source, "agent");
    let stats = h.loader.stats.snapshot();
    assert_eq!((stats.publish_retries, stats.events_published), (3, 2));
}

#[tokio::test(start_paused = true)]
async fn permanent_publish_failure_drops_the_event_and_goes_on() {
    struct Refuse;
    impl Publisher for Refuse {
        async fn publish(&self, _: ResourceEvent, _: String) -> Result<()> {
            Err(Error::publish("x", false, "too big"))
        }
    }
    let h = Harness::new();
    let emitter = Emitter {
        publisher: Refuse,
        ids: h.emitter.ids.clone(),
        cluster: CLUSTER.into(),
        stats: h.emitter.stats.clone(),
        shutdown: CancellationToken::new(),
    };
    assert!(emitter
        .emit(EventBody::Delete { key: svc_key("s1") })
        .await
        .is_ok());
    assert_eq!(h.emitter.stats.snapshot().publish_failures, 1);
}

// ---- the whole source, with a real watcher ----

async fn wait_events(p: &RecordingPublisher, n: usize) -> Vec<Ev> {
    if tokio::time::timeout(Duration::from_secs(10), p.wait_for(n))
        .await
        .is_err()
    {
        panic!(
            "timed out waiting for {n} events; got {:?}",
            p.events()
                .iter()
                .map(|e| summarize(&e.body))
                .collect::<Vec<_>>()
        );
    }
    p.take().iter().map(|e| summarize(&e.body)).collect()
}

#[tokio::test]
async fn file_source_scans_resyncs_and_follows_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("a.yaml"),
        docs(&[route("r1", "/a"), svc("s1")]),
    )
    .expect("write");
    let publisher = Arc::new(RecordingPublisher::new());
    let shutdown = CancellationToken::new();
    let source = FileSource::new(CLUSTER, dir.path());
    let stats = source.stats();
    let task = tokio::spawn(source.run(publisher.clone(), shutdown.clone()));

    assert_eq!(
        wait_events(&publisher, 3).await,
        vec![
            up(route_key("r1"), "/a"),
            up(svc_key("s1"), ""),
            resync(vec![route_key("r1"), svc_key("s1")], &[]),
        ]
    );
    fs::write(
        dir.path().join("a.yaml"),
        docs(&[route("r1", "/a2"), svc("s1")]),
    )
    .expect("write");
    assert_eq!(
        wait_events(&publisher, 1).await,
        vec![up(route_key("r1"), "/a2")]
    );
    fs::create_dir(dir.path().join("sub")).expect("mkdir");
    fs::write(dir.path().join("sub/b.yaml"), svc("s2")).expect("write");
    assert_eq!(
        wait_events(&publisher, 1).await,
        vec![up(svc_key("s2"), "")]
    );
    fs::remove_file(dir.path().join("a.yaml")).expect("rm");
    assert_eq!(
        wait_events(&publisher, 2).await,
        vec![Ev::Del(route_key("r1")), Ev::Del(svc_key("s1"))]
    );
    let s = stats.snapshot();
    assert_eq!(
        (s.events_published, s.resyncs_published, s.objects),
        (7, 1, 1)
    );

    shutdown.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}

#[tokio::test]
async fn resync_is_due_at_start_and_when_a_kept_file_is_repaired() {
    let mut h = Harness::new();
    let mut resyncs = Resync::default();
    h.write("a.yaml", &svc("s1"));
    h.write("b.yaml", "kind: [broken");
    h.write("c.yaml", &docs(&[svc("s3"), "kind: Frobnicator\n".into()]));
    h.scan().await;
    // At start, always; keeping the files not fully accepted.
    let first = resyncs.due(&h.loader.index).map(|b| summarize(&b));
    assert_eq!(
        first,
        Some(resync(
            vec![svc_key("s1"), svc_key("s3")],
            &["b.yaml", "c.yaml"]
        ))
    );
    assert_eq!(resyncs.due(&h.loader.index), None);
    // A file that breaks later is kept by the next resync but does not call for one.
    h.write("a.yaml", "kind: [broken");
    h.touched(&["a.yaml"]).await;
    assert_eq!(resyncs.due(&h.loader.index), None);
    // b repaired: a new resync; b is not kept any more, a and c still are.
    h.write("b.yaml", &svc("s2"));
    h.touched(&["b.yaml"]).await;
    let second = resyncs.due(&h.loader.index).map(|b| summarize(&b));
    assert_eq!(
        second,
        Some(resync(
            vec![svc_key("s1"), svc_key("s2"), svc_key("s3")],
            &["a.yaml", "c.yaml"]
        ))
    );
    // a repaired: it was not kept at start, nothing of it can be stale.
    h.write("a.yaml", &svc("s1"));
    h.touched(&["a.yaml"]).await;
    assert_eq!(resyncs.due(&h.loader.index), None);
    // c deleted: what it produced in an earlier life must go too.
    fs::remove_file(h.path("c.yaml")).expect("rm");
    h.touched(&["c.yaml"]).await;
    let third = resyncs.due(&h.loader.index).map(|b| summarize(&b));
    assert_eq!(third, Some(resync(vec![svc_key("s1"), svc_key("s2")], &[])));
    assert_eq!(resyncs.due(&h.loader.index), None);
}

#[tokio::test]
async fn file_source_resyncs_at_once_despite_a_malformed_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), svc("s1")).expect("write");
    fs::write(dir.path().join("b.yaml"), "kind: [broken").expect("write");
    let publisher = Arc::new(RecordingPublisher::new());
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(FileSource::new(CLUSTER, dir.path()).run(publisher.clone(), shutdown.clone()));
    // The resync does not wait for b.yaml: it keeps what b.yaml produced before.
    assert_eq!(
        wait_events(&publisher, 2).await,
        vec![
            up(svc_key("s1"), ""),
            resync(vec![svc_key("s1")], &["b.yaml"])
        ]
    );
    // Fixing the file publishes its objects and a resync that keeps nothing.
    fs::write(dir.path().join("b.yaml"), svc("s2")).expect("write");
    assert_eq!(
        wait_events(&publisher, 2).await,
        vec![
            up(svc_key("s2"), ""),
            resync(vec![svc_key("s1"), svc_key("s2")], &[])
        ]
    );
    // Breaking and fixing a file that was fine at start calls for no resync.
    fs::write(dir.path().join("a.yaml"), "kind: [broken").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    fs::write(dir.path().join("a.yaml"), docs(&[svc("s1"), svc("s4")])).expect("write");
    assert_eq!(
        wait_events(&publisher, 1).await,
        vec![up(svc_key("s4"), "")]
    );
    fs::write(dir.path().join("c.yaml"), svc("s5")).expect("write");
    assert_eq!(
        wait_events(&publisher, 1).await,
        vec![up(svc_key("s5"), "")]
    );
    shutdown.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}

#[tokio::test(start_paused = true)]
async fn file_source_retries_an_unreadable_file_without_waiting_for_the_rescan() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), svc("s1")).expect("write");
    fs::write(dir.path().join("b.yaml"), svc("s2")).expect("write");
    let (reader, reads) = failing_reader("a.yaml", 1);
    let publisher = Arc::new(RecordingPublisher::new());
    let shutdown = CancellationToken::new();
    let source = FileSource::new(CLUSTER, dir.path())
        .with_rescan_interval(Duration::from_secs(3600))
        .with_reader(move |abs, rel, cluster| (reader.0)(abs, rel, cluster));
    let stats = source.stats();
    let start = Instant::now();
    let task = tokio::spawn(source.run(publisher.clone(), shutdown.clone()));
    assert_eq!(
        wait_events(&publisher, 2).await,
        vec![
            up(svc_key("s2"), ""),
            resync(vec![svc_key("s2")], &["a.yaml"])
        ]
    );
    // Retried after RETRY_BACKOFF_START, an hour before the rescan.
    assert_eq!(
        wait_events(&publisher, 2).await,
        vec![
            up(svc_key("s1"), ""),
            resync(vec![svc_key("s1"), svc_key("s2")], &[])
        ]
    );
    let waited = Instant::now() - start;
    assert!(
        waited >= RETRY_BACKOFF_START && waited < Duration::from_secs(60),
        "{waited:?}"
    );
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    assert_eq!(stats.snapshot().read_errors, 1);
    shutdown.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
}

#[tokio::test]
async fn bad_cluster_or_missing_dir_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = RecordingPublisher::new();
    let e = FileSource::new("a.b", dir.path())
        .run(p, CancellationToken::new())
        .await;
    assert!(matches!(e, Err(Error::InvalidCluster { .. })), "{e:?}");
    let e = FileSource::new(CLUSTER, dir.path().join("nope"))
        .run(RecordingPublisher::new(), CancellationToken::new())
        .await;
    assert!(matches!(e, Err(Error::Io { .. })), "{e:?}");
}

/// The binary spawns `run` on a multi-threaded runtime: its future must be `Send`.
#[allow(dead_code)]
fn run_future_is_send(p: crate::NatsPublisher) {
    fn assert_send<T: Send>(_: T) {}
    assert_send(FileSource::new(CLUSTER, ".").run(p, CancellationToken::new()));
}
