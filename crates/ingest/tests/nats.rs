//! Against a real nats-server with JetStream: ordering and dedup of `NatsPublisher`, a
//! `FileSource` end to end (files written, edited, deleted -> events on the stream), and a
//! `FileSource` whose NATS user may not publish for its cluster (the generated nats.conf).

use async_nats::jetstream::{self, stream::Stream};
use flotilla_ingest::nats::{ensure_stream, STREAM, SUBJECT_PREFIX};
use flotilla_ingest::{Error, FileSource, NatsPublisher, Publisher};
use flotilla_model::{EventBody, Kind, ResourceEvent, ResourceKey};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A nats-server on a free port with its own store dir; killed on drop.
struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start() -> (Self, async_nats::Client) {
        assert!(
            Path::new(NATS_SERVER).exists(),
            "{NATS_SERVER} is missing: install it with `apt-get install -y nats-server`"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let server = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match async_nats::connect(&server.url).await {
                Ok(client) => return (server, client),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("nats-server at {} did not come up: {e}", server.url)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl NatsServer {
    /// Runs `conf` (which listens on 127.0.0.1:`port`).
    async fn start_with_config(conf: &Path, port: u16) -> Self {
        let child = Command::new(NATS_SERVER)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let server = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server with {} did not come up",
                conf.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every message of the stream, in stream order: (subject, dedup id, event).
async fn read_all(stream: &Stream) -> Vec<(String, String, ResourceEvent)> {
    let info = stream.get_info().await.expect("stream info");
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let msg = stream.get_raw_message(seq).await.expect("get message");
        let id = msg
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let event: ResourceEvent = serde_json::from_slice(&msg.payload).expect("decode event");
        out.push((msg.subject.to_string(), id, event));
    }
    out
}

async fn wait_messages(stream: &Stream, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = stream.get_info().await.expect("stream info").state.messages;
        if got >= n {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<_> = read_all(stream)
                .await
                .into_iter()
                .map(|(_, _, e)| e.body)
                .collect();
            panic!("expected {n} messages on the stream, got {got}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(kind: Kind, name: &str) -> ResourceKey {
    ResourceKey::new("east", kind, "apps", name)
}

fn event(body: EventBody) -> ResourceEvent {
    ResourceEvent {
        cluster: "east".into(),
        source: "test".into(),
        body,
    }
}

#[tokio::test]
async fn publishes_in_order_with_dedup() {
    let (_server, client) = NatsServer::start().await;
    let js = jetstream::new(client);
    let stream = ensure_stream(&js).await.expect("create stream");
    // Idempotent: a second agent (or the store) may create it too.
    ensure_stream(&js).await.expect("stream exists");
    let cfg = stream.get_info().await.expect("info").config;
    assert_eq!(cfg.name, STREAM);
    assert_eq!(cfg.subjects, vec![format!("{SUBJECT_PREFIX}.>")]);
    assert_eq!(cfg.duplicate_window, Duration::from_secs(120));

    let publisher = NatsPublisher::new(js);
    let events: Vec<ResourceEvent> = (0..5)
        .map(|i| {
            event(EventBody::Delete {
                key: key(Kind::Service, &format!("s{i}")),
            })
        })
        .collect();
    for (i, ev) in events.iter().enumerate() {
        publisher
            .publish(ev.clone(), format!("agent-{i}"))
            .await
            .expect("publish");
    }
    // A retry of event 3 (same dedup id, e.g. after a lost PubAck) is stored once.
    publisher
        .publish(events[3].clone(), "agent-3".into())
        .await
        .expect("publish duplicate");
    let stored = read_all(&stream).await;
    assert_eq!(stored.len(), 5, "{stored:?}");
    for (i, (subject, id, ev)) in stored.iter().enumerate() {
        assert_eq!(subject, "flotilla.events.east");
        assert_eq!(id, &format!("agent-{i}"));
        assert_eq!(ev, &events[i]);
    }

    // A cluster that is not one subject token is refused with a clear error.
    let bad = ResourceEvent {
        cluster: "east.x".into(),
        source: "test".into(),
        body: EventBody::Resync {
            keys: vec![],
            keep_origins: vec![],
        },
    };
    let err = publisher
        .publish(bad, "agent-9".into())
        .await
        .expect_err("bad cluster");
    assert!(matches!(err, Error::InvalidCluster { .. }), "{err}");
    assert!(err.to_string().contains("\"east.x\""), "{err}");
}

fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n"
    )
}

fn svc(name: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  ports: [{{port: 80}}]\n")
}

#[derive(Debug, PartialEq)]
enum Ev {
    Up(ResourceKey, String),
    Del(ResourceKey),
    Resync(Vec<ResourceKey>),
}

fn summarize(body: &EventBody) -> Ev {
    match body {
        EventBody::Upsert { key, object, .. } => Ev::Up(
            key.clone(),
            object
                .pointer("/spec/rules/0/matches/0/path/value")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        ),
        EventBody::Delete { key } => Ev::Del(key.clone()),
        EventBody::Resync { keys, .. } => Ev::Resync(keys.clone()),
    }
}

#[tokio::test]
async fn file_source_to_stream() {
    let (_server, client) = NatsServer::start().await;
    let js = jetstream::new(client);
    let stream = ensure_stream(&js).await.expect("create stream");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |rel: &str, text: &str| std::fs::write(dir.path().join(rel), text).expect("write");
    write(
        "a.yaml",
        &format!("{}---\n{}", route("r1", "/a"), svc("s1")),
    );
    write("b.yaml", &svc("s2"));

    let shutdown = CancellationToken::new();
    let source = FileSource::new("east", dir.path());
    let agent = source.agent_id().to_string();
    let stats = source.stats();
    let task = tokio::spawn(source.run(NatsPublisher::new(js), shutdown.clone()));

    wait_messages(&stream, 4).await;
    // An edit of one object, an added file, a deleted file.
    write(
        "a.yaml",
        &format!("{}---\n{}", route("r1", "/a2"), svc("s1")),
    );
    wait_messages(&stream, 5).await;
    write("c.yml", &route("r2", "/c"));
    wait_messages(&stream, 6).await;
    std::fs::remove_file(dir.path().join("b.yaml")).expect("rm");
    wait_messages(&stream, 7).await;
    // A malformed edit publishes nothing and deletes nothing.
    write("c.yml", "kind: [broken");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.snapshot().parse_errors == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "malformed edit was never read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    shutdown.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");

    let stored = read_all(&stream).await;
    let bodies: Vec<Ev> = stored.iter().map(|(_, _, e)| summarize(&e.body)).collect();
    let r = |n: &str| key(Kind::HTTPRoute, n);
    let s = |n: &str| key(Kind::Service, n);
    assert_eq!(
        bodies,
        vec![
            Ev::Up(r("r1"), "/a".into()),
            Ev::Up(s("s1"), String::new()),
            Ev::Up(s("s2"), String::new()),
            Ev::Resync(vec![r("r1"), s("s1"), s("s2")]),
            Ev::Up(r("r1"), "/a2".into()),
            Ev::Up(r("r2"), "/c".into()),
            Ev::Del(s("s2")),
        ]
    );
    for (i, (subject, id, ev)) in stored.iter().enumerate() {
        assert_eq!(subject, "flotilla.events.east");
        assert_eq!(id, &format!("{agent}-{i}"));
        assert_eq!(ev.source, agent);
        assert_eq!(ev.cluster, "east");
    }
    // Upserts name their file; the origin travels through the stream.
    let origins: Vec<Option<&str>> = stored
        .iter()
        .filter_map(|(_, _, e)| match &e.body {
            EventBody::Upsert { origin, .. } => Some(origin.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(
        origins,
        vec![
            Some("a.yaml"),
            Some("a.yaml"),
            Some("b.yaml"),
            Some("a.yaml"),
            Some("c.yml")
        ]
    );
    let st = stats.snapshot();
    assert_eq!((st.events_published, st.parse_errors), (7, 1));
}

/// An agent started with another cluster's credentials (`--cluster west`, user `agent-east`)
/// cannot publish anything: the source stops at once with the server's refusal, naming the
/// subject, instead of retrying or dropping events one by one.
#[tokio::test]
async fn a_file_agent_refused_by_the_server_stops_and_says_why() {
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let written = flotilla_ingest::natsconf::write(&flotilla_ingest::natsconf::ServerConfig {
        dir: conf_dir.path().to_path_buf(),
        clusters: vec!["east".into(), "west".into()],
        listen: format!("127.0.0.1:{port}"),
        tls: None,
        stream: STREAM.to_string(),
    })
    .expect("nats.conf");
    let server = NatsServer::start_with_config(&written.conf, port).await;
    let user = |name: &str| flotilla_ingest::NatsClientConfig {
        user: Some(name.to_string()),
        password_file: Some(
            conf_dir
                .path()
                .join(flotilla_ingest::natsconf::password_file_name(name)),
        ),
        ..flotilla_ingest::NatsClientConfig::new(&server.url)
    };
    // The stream exists (a store made it); the agent may not even look at it.
    let (store, _) = user("store").connect().await.expect("store connects");
    ensure_stream(&jetstream::new(store)).await.expect("stream");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("s.yaml"), svc("s1")).expect("write");
    let (client, refusals) = user("agent-east").connect().await.expect("agent connects");
    let js = jetstream::new(client);
    assert!(
        flotilla_ingest::nats::ensure_stream_if_allowed(&js, &refusals)
            .await
            .expect("a refusal is not an error")
            .is_none()
    );
    let source = FileSource::new("west", dir.path());
    let stats = source.stats();
    let run = source.run(
        NatsPublisher::new(js).with_refusals(refusals),
        CancellationToken::new(),
    );
    let err = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("stops at once, no timeouts and retries")
        .expect_err("the source stops with the refusal");
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("flotilla.events.west") && text.contains("Permissions Violation"),
        "{text}"
    );
    let st = stats.snapshot();
    assert_eq!((st.events_published, st.publish_failures), (0, 1));
}
