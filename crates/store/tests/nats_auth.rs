//! NATS credentials and TLS, with the nats.conf that `flotilla nats-config` writes
//! (`flotilla_ingest::natsconf`), against a real nats-server and a real store node: each agent
//! publishes for its own cluster only, a client without credentials (or with wrong ones, or
//! without the CA under TLS) is refused, and an envelope that names another cluster than the
//! subject it was published on is refused by the store while the rest applies.

mod common;

use common::*;
use flotilla_ingest::client::Error as ClientError;
use flotilla_ingest::nats::ensure_stream_if_allowed;
use flotilla_ingest::natsconf::{self, ServerConfig, ServerTls};
use flotilla_ingest::{Error as IngestError, NatsClientConfig, NatsPublisher, Publisher};
use flotilla_model::{EventBody, ResourceEvent};
use flotilla_store::NatsSource;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const STREAM: &str = "FLOTILLA_EVENTS";
const T: Duration = Duration::from_secs(20);
/// Far below the 5 s a JetStream publish waits for its acknowledgement: a refusal must be
/// reported when the server sends it, not after a timeout.
const AT_ONCE: Duration = Duration::from_secs(3);

/// A nats-server running a generated configuration; the configuration directory (nats.conf,
/// password files, JetStream's files) lives as long as it does.
struct Secured {
    _nats: NatsServer,
    url: String,
    conf_dir: PathBuf,
    _dir: tempfile::TempDir,
}

async fn secured(clusters: &[&str], tls: Option<ServerTls>) -> TestResult<Secured> {
    let dir = tempfile::tempdir()?;
    let conf_dir = dir.path().join("nats");
    let port = free_port()?;
    let written = natsconf::write(&ServerConfig {
        dir: conf_dir.clone(),
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        listen: format!("127.0.0.1:{port}"),
        tls,
        stream: STREAM.to_string(),
    })?;
    let nats = NatsServer::start_with_config(&written.conf, port).await?;
    Ok(Secured {
        url: nats.url.clone(),
        _nats: nats,
        conf_dir,
        _dir: dir,
    })
}

impl Secured {
    /// Client options of `user`, with the password file `nats-config` wrote for it.
    fn user(&self, user: &str) -> NatsClientConfig {
        NatsClientConfig {
            user: Some(user.to_string()),
            password_file: Some(self.conf_dir.join(natsconf::password_file_name(user))),
            ..NatsClientConfig::new(&self.url)
        }
    }
}

/// A one-node store fed through NATS as `cfg`.
async fn store_node(cfg: &NatsClientConfig) -> TestResult<(tempfile::TempDir, TestNode)> {
    let (client, _refusals) = cfg.connect_once().await?;
    let source = NatsSource::new(client, STREAM).await?;
    let dir = tempfile::tempdir()?;
    let (mut ls, peers) = listeners(1).await?;
    let l = ls.pop().ok_or("no listener")?;
    let node = start_node(1, l, &peers, dir.path(), source).await?;
    eventually("the store leads", T, || node.node.leader() == Some(1)).await?;
    Ok((dir, node))
}

/// `eventually`, with the store's counters and rejections in the failure.
async fn applied(what: &str, node: &TestNode, resources: usize) -> TestResult {
    let r = eventually(what, T, || {
        node.node.state().view().resource_count() == resources
    })
    .await;
    if r.is_err() {
        let st = node.node.state();
        return Err(format!(
            "{what}: {} resources, counters {:?}, rejections {:?}",
            st.view().resource_count(),
            st.counters(),
            st.rejections().collect::<Vec<_>>()
        )
        .into());
    }
    Ok(())
}

#[tokio::test]
async fn each_agent_publishes_for_its_own_cluster_only() -> TestResult {
    init_tracing();
    let s = secured(&["east", "west"], None).await?;
    // The store creates the stream: the agents may not.
    let (_store_dir, store) = store_node(&s.user("store")).await?;

    let (client, refusals) = s.user("agent-east").connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    let t = Instant::now();
    let stream = ensure_stream_if_allowed(&js, &refusals).await?;
    assert!(stream.is_none(), "an agent may not use the JetStream API");
    assert!(t.elapsed() < AT_ONCE, "refused at once: {:?}", t.elapsed());

    // East's agent publishes east's events: the store applies them.
    let publisher = NatsPublisher::new(js.clone()).with_refusals(refusals.clone());
    for (i, ev) in events_in("east", BASE)?.into_iter().enumerate() {
        publisher.publish(ev, format!("east-{i}")).await?;
    }
    applied("east's events applied", &store, 3).await?;

    // The store's user may publish statuses into the bucket (the leader creates it), and
    // east's agent reads them back through the calls its write-back makes.
    let (store_client, _) = s.user("store").connect_once().await?;
    store
        .node
        .publish_statuses(store_client, store.shutdown.clone());
    let deadline = Instant::now() + T;
    let mut watch = loop {
        match flotilla_ingest::kube::status::watch_cluster(&js, "east").await {
            Ok(w) => break w,
            // The bucket does not exist until the leader created it.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    let m = tokio::time::timeout(T, futures::StreamExt::next(&mut watch))
        .await?
        .ok_or("the status watch ended")??;
    assert!(
        m.subject.starts_with("$KV.flotilla-status.east."),
        "{}",
        m.subject
    );

    // West's subject is not east's to publish on: the publish fails at once, saying why.
    let west = events_in("west", BASE)?.remove(0);
    let t = Instant::now();
    let err = publisher
        .publish(west, "east-3".into())
        .await
        .expect_err("the server refuses east's agent on west's subject");
    assert!(t.elapsed() < AT_ONCE, "refused at once: {:?}", t.elapsed());
    assert!(
        matches!(&err, IngestError::Denied { subject, .. } if subject == "flotilla.events.west"),
        "{err}"
    );
    assert!(err.is_fatal() && !err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Permissions Violation") && text.contains("flotilla.events.west"),
        "{text}"
    );

    // Nor may it read anything but its own replies: not the events, not the store's inbox
    // (where the store's consumer receives every cluster's events).
    let mut watch = refusals.watch();
    let _events = client.subscribe("flotilla.events.>").await?;
    let _inbox = client.subscribe("_INBOX.store.>").await?;
    let mut refused = Vec::new();
    for _ in 0..2 {
        refused.push(tokio::time::timeout(AT_ONCE, watch.next()).await?);
    }
    assert!(
        refused[0].contains("Subscription") && refused[0].contains("flotilla.events.>"),
        "{refused:?}"
    );
    assert!(refused[1].contains("_INBOX.store.>"), "{refused:?}");

    // East's agent on its own subject, with an envelope (and key) of west: the server lets it
    // through, the store refuses it, and the next good event applies.
    let mut forged: ResourceEvent = events_in("west", &route("stolen", "/x"))?.remove(0);
    forged.source = "agent-east".into();
    let ack = js
        .publish("flotilla.events.east", serde_json::to_vec(&forged)?.into())
        .await?
        .await?;
    assert_eq!(ack.sequence, 4);
    publisher
        .publish(
            events_in("east", &route("r1", "/a"))?.remove(0),
            "east-4".into(),
        )
        .await?;
    applied("the good event after the forged one applied", &store, 4).await?;
    let st = store.node.state();
    let c = st.counters();
    assert_eq!(
        (c.events_applied, c.events_rejected, c.events_misattributed),
        (5, 1, 1),
        "{c:?}"
    );
    assert!(
        st.view().resources().all(|r| r.key.cluster == "east"),
        "nothing of west's was applied"
    );
    let r = st.rejections().last().ok_or("no rejection recorded")?;
    assert_eq!(r.seq, 4);
    assert_eq!(r.cluster.as_deref(), Some("west"));
    assert!(
        r.reason.contains("flotilla.events.east")
            && r.reason.contains("\"east\"")
            && r.reason.contains("\"west\""),
        "{}",
        r.reason
    );
    if matches!(forged.body, EventBody::Upsert { .. }) {
        assert!(r.what.starts_with("upsert west/"), "{}", r.what);
    }
    store.stop().await?;
    Ok(())
}

#[tokio::test]
async fn clients_without_valid_credentials_are_refused() -> TestResult {
    init_tracing();
    let s = secured(&["east"], None).await?;
    let err = tokio::time::timeout(T, NatsClientConfig::new(&s.url).connect())
        .await?
        .err()
        .ok_or("an anonymous client connected")?;
    assert!(matches!(err, ClientError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&s.url) && text.contains("requires credentials"),
        "{text}"
    );

    let wrong = s.conf_dir.join("wrong.password");
    std::fs::write(&wrong, "x".repeat(40))?;
    let err = tokio::time::timeout(
        T,
        NatsClientConfig {
            password_file: Some(wrong),
            ..s.user("agent-east")
        }
        .connect(),
    )
    .await?
    .err()
    .ok_or("a wrong password was accepted")?;
    assert!(
        matches!(err, ClientError::Refused { .. }) && err.to_string().contains("agent-east"),
        "{err}"
    );
    // The password nats-config wrote is the right one.
    tokio::time::timeout(T, s.user("agent-east").connect()).await??;
    Ok(())
}

/// Test PKI: a CA, a server certificate for 127.0.0.1, a client certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> TestResult<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "flotilla test CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| -> TestResult<(String, String)> {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(names)?.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()])?;
    let (client_cert, client_key) = leaf(vec!["agent".into()])?;
    let write = |name: &str, text: &str| -> TestResult<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    Ok(Pki {
        ca: write("ca.pem", &ca_cert.pem())?,
        server_cert: write("server.pem", &server_cert)?,
        server_key: write("server.key", &server_key)?,
        client_cert: write("client.pem", &client_cert)?,
        client_key: write("client.key", &client_key)?,
    })
}

#[tokio::test]
async fn tls_needs_the_ca_and_a_client_certificate() -> TestResult {
    init_tracing();
    let tmp = tempfile::tempdir()?;
    let pki = pki(tmp.path())?;
    let s = secured(
        &["east"],
        Some(ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca.clone()),
        }),
    )
    .await?;

    // Without the CA, the server's certificate is not trusted: a clear error, at once.
    let err = tokio::time::timeout(T, s.user("agent-east").connect())
        .await?
        .err()
        .ok_or("connected without trusting the CA")?;
    let text = err.to_string();
    assert!(matches!(err, ClientError::Refused { .. }), "{text}");
    assert!(
        text.contains("TLS") && text.contains("no CA given") && text.contains("UnknownIssuer"),
        "{text}"
    );

    // With the CA but without a client certificate: this server verifies its clients.
    let with_ca = |c: NatsClientConfig| NatsClientConfig {
        ca: Some(pki.ca.clone()),
        ..c
    };
    let err = tokio::time::timeout(T, with_ca(s.user("agent-east")).connect())
        .await?
        .err()
        .ok_or("connected without a client certificate")?;
    assert!(
        matches!(err, ClientError::Refused { .. }),
        "refused, not retried: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no client certificate") && text.contains("ca.pem"),
        "{text}"
    );

    // With both: a store and an agent work end to end over TLS.
    let full = |c: NatsClientConfig| NatsClientConfig {
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
        ..with_ca(c)
    };
    let (_store_dir, store) = store_node(&full(s.user("store"))).await?;
    let (client, refusals) =
        tokio::time::timeout(T, full(s.user("agent-east")).connect()).await??;
    let publisher = NatsPublisher::new(async_nats::jetstream::new(client)).with_refusals(refusals);
    for (i, ev) in events_in("east", BASE)?.into_iter().enumerate() {
        publisher.publish(ev, format!("tls-{i}")).await?;
    }
    applied("east's events applied over TLS", &store, 3).await?;
    store.stop().await?;
    Ok(())
}
