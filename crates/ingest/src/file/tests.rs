use super::*;
use crate::memory::RecordingPublisher;
use flotilla_model::{Kind, ResourceKey};
use std::fs;

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

/// What an event says, without the object body: easy to compare.
#[derive(Debug, PartialEq)]
enum Ev {
    Up(ResourceKey, String),
    Del(ResourceKey),
    Resync(Vec<ResourceKey>),
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
        EventBody::Resync { keys, .. } => Ev::Resync(keys.clone()),
    }
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
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonicalize");
        let stats = Arc::new(IngestStats::default());
        let publisher = Arc::new(RecordingPublisher::new());
        Self {
            loader: Loader {
                root,
                cluster: CLUSTER.into(),
                index: FileIndex::default(),
                stamps: BTreeMap::new(),
                stats: stats.clone(),
            },
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
        let events = self.loader.process(targets);
        assert!(self.emitter.emit_all(events).await.is_ok());
        self.publisher
            .take()
            .iter()
            .map(|e| summarize(&e.body))
            .collect()
    }

    async fn scan(&mut self) -> Vec<Ev> {
        self.round(Targets::All {
            skip_unchanged: false,
        })
        .await
    }

    async fn touched(&mut self, rels: &[&str]) -> Vec<Ev> {
        let paths = rels.iter().map(|r| self.path(r)).collect();
        self.round(Targets::Paths(paths)).await
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
    // A pure rename publishes nothing: same objects, now owned by the new file.
    assert_eq!(h.touched(&["a.yaml", "moved/b.yaml"]).await, vec![]);
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

#[tokio::test]
async fn same_key_in_two_files() {
    let mut h = Harness::new();
    h.write("a.yaml", &route("r1", "/from-a"));
    h.write("b.yaml", &route("r1", "/from-b"));
    // Read in path order: b is read last and wins.
    assert_eq!(
        h.scan().await,
        vec![
            up(route_key("r1"), "/from-a"),
            up(route_key("r1"), "/from-b")
        ]
    );
    // Unchanged re-reads do not flip ownership back and forth.
    assert_eq!(h.scan().await, vec![]);
    // a edited: now a is the last one read, and wins.
    h.write("a.yaml", &route("r1", "/from-a2"));
    assert_eq!(
        h.touched(&["a.yaml"]).await,
        vec![up(route_key("r1"), "/from-a2")]
    );
    // a deleted: b still defines the key, its version comes back; no delete.
    fs::remove_file(h.path("a.yaml")).expect("rm");
    assert_eq!(
        h.touched(&["a.yaml"]).await,
        vec![up(route_key("r1"), "/from-b")]
    );
    // b deleted: now the key is gone.
    fs::remove_file(h.path("b.yaml")).expect("rm");
    assert_eq!(h.touched(&["b.yaml"]).await, vec![Ev::Del(route_key("r1"))]);
}

#[tokio::test]
async fn same_content_in_two_files_and_duplicates_within_one_file() {
    let mut h = Harness::new();
    h.write("a.yaml", &svc("s1"));
    h.write("b.yaml", &svc("s1"));
    assert_eq!(h.scan().await, vec![up(svc_key("s1"), "")]);
    // The owner (b, last read) goes; a has the same content: nothing to publish.
    fs::remove_file(h.path("b.yaml")).expect("rm");
    assert_eq!(h.touched(&["b.yaml"]).await, vec![]);
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
            Ev::Resync(vec![route_key("r1"), svc_key("s1")]),
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
async fn resync_waits_until_every_file_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), svc("s1")).expect("write");
    fs::write(dir.path().join("b.yaml"), "kind: [broken").expect("write");
    let publisher = Arc::new(RecordingPublisher::new());
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(FileSource::new(CLUSTER, dir.path()).run(publisher.clone(), shutdown.clone()));
    assert_eq!(
        wait_events(&publisher, 1).await,
        vec![up(svc_key("s1"), "")]
    );
    // Fixing the file publishes its objects and then the resync.
    fs::write(dir.path().join("b.yaml"), svc("s2")).expect("write");
    assert_eq!(
        wait_events(&publisher, 2).await,
        vec![
            up(svc_key("s2"), ""),
            Ev::Resync(vec![svc_key("s1"), svc_key("s2")])
        ]
    );
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
