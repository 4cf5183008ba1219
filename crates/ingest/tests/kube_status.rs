//! Status write-back against a real nats-server (the status bucket) and the fake Kubernetes
//! API server (`flotilla_testing::kube_api`): statuses land on the objects' `/status` with
//! server-side apply under Envoy Gateway's field manager, once per change; a gone object
//! does not stop the others; of two agents sharing a Lease only the holder writes, and the
//! other takes over when it dies; with the generated nats.conf an agent reads its own
//! cluster's keys and nothing of another cluster's.

use async_nats::jetstream::{self, consumer, stream};
use flotilla_ingest::kube::lease::{LeaseSettings, LeaseTiming};
use flotilla_ingest::kube::status::{self, FIELD_MANAGER};
use flotilla_ingest::natsconf::{self, ServerConfig};
use flotilla_model::status_kv::{status_stream, status_subject_prefix};
use flotilla_model::StatusValue;
use flotilla_testing::kube_api::FakeApiServer;
use futures::StreamExt;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const WAIT: Duration = Duration::from_secs(20);
const GW: &str = "gateway.networking.k8s.io/v1";

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct NatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// `conf`: a configuration file listening on `port`; `None`: open, JetStream in a temp dir.
    async fn start(conf: Option<(&Path, u16)>) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let (child, port) = match conf {
            Some((conf, port)) => (
                Command::new(NATS_SERVER)
                    .arg("-c")
                    .arg(conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
                port,
            ),
            None => {
                let port = flotilla_testing::free_port();
                let child = Command::new(NATS_SERVER)
                    .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                (child, port)
            }
        };
        let server = Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                return Err("nats-server did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bucket as the store creates it (`flotilla_store::status::bucket`).
async fn bucket(js: &jetstream::Context) -> TestResult<jetstream::kv::Store> {
    js.get_or_create_stream(stream::Config {
        name: status_stream(),
        subjects: vec![format!("{}>", status_subject_prefix())],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(flotilla_model::STATUS_BUCKET).await?)
}

fn cond(ty: &str, st: &str, generation: i64) -> Value {
    json!({"type": ty, "status": st, "reason": ty, "message": "", "observedGeneration": generation,
           "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

fn route_status(resolved: &str) -> Value {
    json!({"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": "gw"},
        "controllerName": "gateway.envoyproxy.io/gatewayclass-controller",
        "conditions": [cond("Accepted", "True", 1), cond("ResolvedRefs", resolved, 1)],
    }]})
}

fn gw_status(programmed: &str) -> Value {
    json!({"conditions": [cond("Accepted", "True", 1), cond("Programmed", programmed, 1)]})
}

fn value(kind: &str, ns: &str, name: &str, status: Value, revision: u64) -> StatusValue {
    StatusValue {
        api_version: GW.into(),
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
        generation: Some(1),
        status,
        revision,
    }
}

async fn put(kv: &jetstream::kv::Store, key: &str, v: &StatusValue) -> TestResult {
    kv.put(key, serde_json::to_vec(v)?.into()).await?;
    Ok(())
}

fn objects(api: &FakeApiServer) -> TestResult {
    api.install_gateway_api_crds();
    api.put_object(json!({"apiVersion": GW, "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "infra", "generation": 1},
        "spec": {"gatewayClassName": "eg", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}))?;
    api.put_object(json!({"apiVersion": GW, "kind": "HTTPRoute",
        "metadata": {"name": "r1", "namespace": "app", "generation": 1},
        "spec": {"parentRefs": [{"name": "gw", "namespace": "infra"}]}}))?;
    Ok(())
}

fn status_of(api: &FakeApiServer, kind: &str, ns: &str, name: &str) -> Value {
    api.get_object(GW, kind, ns, name)
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

/// PATCHes of `path_part` (e.g. "/httproutes/r1/status") so far.
fn patches(api: &FakeApiServer, path_part: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(path_part))
        .count()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) -> TestResult {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "default".into(),
        name: "flotilla-agent-east".into(),
        identity: identity.into(),
    }
}

/// Short enough for a test: the Lease is free 2 s after its holder died.
const FAST: LeaseTiming = LeaseTiming {
    duration: Duration::from_secs(2),
    renew_every: Duration::from_millis(300),
    renew_deadline: Duration::from_millis(1500),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_are_applied_once_per_change_and_a_gone_object_stops_nothing() -> TestResult {
    let nats = NatsServer::start(None).await?;
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    let kv = bucket(&js).await?;
    let api = FakeApiServer::start().await?;
    objects(&api)?;

    // Written before the agent starts: read as the watch's initial values.
    put(
        &kv,
        "east.HTTPRoute.app.gone",
        &value("HTTPRoute", "app", "gone", route_status("True"), 1),
    )
    .await?;
    put(
        &kv,
        "east.HTTPRoute.app.r1",
        &value("HTTPRoute", "app", "r1", route_status("True"), 1),
    )
    .await?;
    put(
        &kv,
        "east.Gateway.infra.gw",
        &value("Gateway", "infra", "gw", gw_status("True"), 1),
    )
    .await?;
    // Another cluster's key for an object of the same name: not east's agent's to write.
    put(
        &kv,
        "west.HTTPRoute.app.r1",
        &value("HTTPRoute", "app", "r1", route_status("Unknown"), 1),
    )
    .await?;

    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(status::run_with(
        api.client()?,
        async_nats::connect(&nats.url).await?,
        "east".into(),
        settings("agent-a"),
        FAST,
        shutdown.clone(),
    ));
    until("the route's and the gateway's status written", || {
        status_of(&api, "HTTPRoute", "app", "r1")["parents"][0]["conditions"][0]["status"] == "True"
            && status_of(&api, "Gateway", "infra", "gw")["conditions"][1]["type"] == "Programmed"
    })
    .await?;
    let route = status_of(&api, "HTTPRoute", "app", "r1");
    assert_eq!(route, route_status("True"), "east's value, not west's");
    assert_eq!(route["parents"][0]["conditions"][0]["type"], "Accepted");
    assert_eq!(
        route["parents"][0]["conditions"][1]["observedGeneration"],
        1
    );
    let obj = api
        .get_object(GW, "HTTPRoute", "app", "r1")
        .ok_or("route")?;
    let managers: Vec<(String, String, String)> = obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or("").to_string();
            (s("manager"), s("operation"), s("subresource"))
        })
        .collect();
    assert!(
        managers.contains(&(FIELD_MANAGER.into(), "Apply".into(), "status".into())),
        "{managers:?}"
    );
    let applies: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(
        applies
            .iter()
            .all(|r| r.field_manager.as_deref() == Some(FIELD_MANAGER)
                && r.content_type.as_deref() == Some("application/apply-patch+yaml")
                && r.path.ends_with("/status")),
        "{applies:?}"
    );
    // The gone object was tried (404) and did not stop the others.
    assert_eq!(patches(&api, "/httproutes/gone/status"), 1);
    assert_eq!(patches(&api, "/httproutes/r1/status"), 1);

    // The same value again (a new store revision): no second PATCH. Then a change of the
    // gateway, after two failing requests (retried with a backoff), as a barrier.
    put(
        &kv,
        "east.HTTPRoute.app.r1",
        &value("HTTPRoute", "app", "r1", route_status("True"), 2),
    )
    .await?;
    api.fail_next(2, 500);
    put(
        &kv,
        "east.Gateway.infra.gw",
        &value("Gateway", "infra", "gw", gw_status("False"), 3),
    )
    .await?;
    until("the gateway's new status written", || {
        status_of(&api, "Gateway", "infra", "gw")["conditions"][1]["status"] == "False"
    })
    .await?;
    assert_eq!(
        patches(&api, "/httproutes/r1/status"),
        1,
        "an identical value is not written again"
    );

    // A changed route status is written.
    put(
        &kv,
        "east.HTTPRoute.app.r1",
        &value("HTTPRoute", "app", "r1", route_status("False"), 4),
    )
    .await?;
    until("the route's new status written", || {
        status_of(&api, "HTTPRoute", "app", "r1")["parents"][0]["conditions"][1]["status"]
            == "False"
    })
    .await?;
    assert_eq!(patches(&api, "/httproutes/r1/status"), 2);

    shutdown.cancel();
    tokio::time::timeout(WAIT, agent).await???;
    Ok(())
}

fn lease_holder(api: &FakeApiServer) -> Option<String> {
    api.get_object(
        "coordination.k8s.io/v1",
        "Lease",
        "default",
        "flotilla-agent-east",
    )
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_agents_only_the_lease_holder_writes_and_the_other_takes_over() -> TestResult {
    let nats = NatsServer::start(None).await?;
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    let kv = bucket(&js).await?;
    let api = FakeApiServer::start().await?;
    objects(&api)?;
    put(
        &kv,
        "east.HTTPRoute.app.r1",
        &value("HTTPRoute", "app", "r1", route_status("True"), 1),
    )
    .await?;

    let mut agents = std::collections::BTreeMap::new();
    for id in ["agent-a", "agent-b"] {
        let handle = tokio::spawn(status::run_with(
            api.client()?,
            async_nats::connect(&nats.url).await?,
            "east".into(),
            settings(id),
            FAST,
            CancellationToken::new(),
        ));
        agents.insert(id.to_string(), handle);
    }
    until("the status written", || {
        status_of(&api, "HTTPRoute", "app", "r1")["parents"][0]["conditions"][1]["status"] == "True"
    })
    .await?;
    // Several renewals later, still one writer: both would have written the initial value.
    tokio::time::sleep(FAST.duration).await;
    assert_eq!(patches(&api, "/httproutes/r1/status"), 1);
    let holder = lease_holder(&api).ok_or("no lease holder")?;
    let other = if holder == "agent-a" {
        "agent-b"
    } else {
        "agent-a"
    };

    // The holder dies without a word (no release): the other takes over once the Lease
    // expires, resyncs, and writes the next change.
    agents.remove(&holder).ok_or("holder task")?.abort();
    put(
        &kv,
        "east.HTTPRoute.app.r1",
        &value("HTTPRoute", "app", "r1", route_status("False"), 2),
    )
    .await?;
    let t = tokio::time::Instant::now();
    until("the other agent writes the change", || {
        status_of(&api, "HTTPRoute", "app", "r1")["parents"][0]["conditions"][1]["status"]
            == "False"
    })
    .await?;
    assert_eq!(lease_holder(&api).as_deref(), Some(other));
    // Expiry (2 s after its last renewal was seen) plus a candidate's round or two.
    assert!(
        t.elapsed() < FAST.duration * 2,
        "took over in {:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() >= FAST.duration / 2,
        "it did wait for expiry: {:?}",
        t.elapsed()
    );
    let lease = api
        .get_object(
            "coordination.k8s.io/v1",
            "Lease",
            "default",
            "flotilla-agent-east",
        )
        .ok_or("lease")?;
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    for (_, h) in agents {
        h.abort();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reads_its_own_clusters_statuses_and_nothing_else() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = flotilla_testing::free_port();
    let written = natsconf::write(&ServerConfig {
        dir: dir.path().join("nats"),
        clusters: vec!["east".into(), "west".into()],
        listen: format!("127.0.0.1:{port}"),
        tls: None,
        stream: "FLOTILLA_EVENTS".into(),
    })?;
    let nats = NatsServer::start(Some((&written.conf, port))).await?;
    let connect = |user: &str| flotilla_ingest::NatsClientConfig {
        user: Some(user.to_string()),
        password_file: Some(
            dir.path()
                .join("nats")
                .join(natsconf::password_file_name(user)),
        ),
        ..flotilla_ingest::NatsClientConfig::new(&nats.url)
    };
    // The stores create the bucket and write both clusters' keys.
    let (store, _) = connect("store").connect_once().await?;
    let kv = bucket(&jetstream::new(store)).await?;
    put(
        &kv,
        "east.HTTPRoute.app.r1",
        &value("HTTPRoute", "app", "r1", route_status("True"), 1),
    )
    .await?;
    put(
        &kv,
        "west.HTTPRoute.app.secret",
        &value("HTTPRoute", "app", "secret", route_status("True"), 1),
    )
    .await?;

    // East's agent watches its keys, through the calls status::run makes.
    let (east, _) = connect("agent-east").connect_once().await?;
    let mut js = jetstream::new(east);
    js.set_timeout(Duration::from_secs(2));
    let mut watch = status::watch_cluster(&js, "east").await?;
    let m = tokio::time::timeout(WAIT, watch.next())
        .await?
        .ok_or("watch ended")??;
    assert_eq!(
        m.subject.as_str(),
        "$KV.flotilla-status.east.HTTPRoute.app.r1"
    );

    // Lying about who it is: the same calls for west are refused.
    assert!(
        status::watch_cluster(&js, "west").await.is_err(),
        "east may not watch west"
    );
    let stream = js.get_stream(status_stream()).await?;
    let lies: Vec<(&str, consumer::push::OrderedConfig)> = vec![
        // No name: the filter-less create subject.
        (
            "filter-less create",
            consumer::push::OrderedConfig {
                deliver_subject: "_INBOX.agent-east.x".into(),
                filter_subject: format!("{}west.>", status_subject_prefix()),
                ..Default::default()
            },
        ),
        // Everything.
        (
            "whole bucket",
            consumer::push::OrderedConfig {
                name: Some("all".into()),
                deliver_subject: "_INBOX.agent-east.y".into(),
                filter_subject: format!("{}>", status_subject_prefix()),
                ..Default::default()
            },
        ),
    ];
    for (what, cfg) in lies {
        assert!(
            stream.create_consumer(cfg).await.is_err(),
            "{what} must be refused"
        );
    }
    // A subject that names east's filter with a body that filters on west's: the server
    // checks they agree.
    let resp: jetstream::response::Response<Value> = js
        .request(
            format!(
                "CONSUMER.CREATE.{}.sneak.{}east.>",
                status_stream(),
                status_subject_prefix()
            ),
            &json!({"stream_name": status_stream(), "config": {
                "name": "sneak", "deliver_subject": "_INBOX.agent-east.z",
                "filter_subject": format!("{}west.>", status_subject_prefix()),
                "ack_policy": "none", "deliver_policy": "last_per_subject"}}),
        )
        .await?;
    assert!(
        matches!(resp, jetstream::response::Response::Err { .. }),
        "a filter other than the subject's is refused: {resp:?}"
    );
    // Direct and message gets would read any key.
    let direct = js
        .request::<_, _, Value>(
            format!("DIRECT.GET.{}", status_stream()),
            &json!({"last_by_subj": "$KV.flotilla-status.west.HTTPRoute.app.secret"}),
        )
        .await;
    assert!(direct.is_err(), "direct get refused: {direct:?}");
    Ok(())
}
