//! NatsSource against a real nats-server.

mod common;

use common::*;
use flotilla_store::{EventSource, NatsSource};
use std::time::{Duration, Instant};

const STREAM: &str = "FLOTILLA_EVENTS";

#[tokio::test]
async fn fetch_ack_and_repositioning() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let source = NatsSource::connect(&nats.url, STREAM).await?;
    let client = async_nats::connect(&nats.url).await?;
    let js = async_nats::jetstream::new(client);

    // Four events and one undecodable payload.
    let evs = events(&format!("{BASE}---\n{}", route("r1", "/a")))?;
    assert_eq!(evs.len(), 4);
    let mut seqs = publish(&js, &evs).await?;
    let bad = js
        .publish("flotilla.events.c1", "not json".into())
        .await?
        .await?;
    seqs.push(bad.sequence);
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);

    source.begin(0).await?;
    let got = source.fetch(0, 1024, Duration::from_secs(5)).await?;
    let got_seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(
        got_seqs,
        vec![1, 2, 3, 4, 5],
        "all available events in one fetch"
    );
    assert_eq!(got[0].event.as_ref(), Some(&evs[0]));
    assert!(got[4].event.is_none(), "undecodable payload yields None");

    // `max` is honoured.
    let other = NatsSource::connect(&nats.url, STREAM).await?;
    let two = other.fetch(0, 2, Duration::from_secs(5)).await?;
    assert_eq!(two.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);

    // Back to the first source (the other one recreated the shared durable consumer: the
    // first must notice on its own when asked for a position it does not hold).
    source.begin(5).await?;
    source.ack(5).await?; // nothing pending after begin: a no-op
                          // Nothing new: an empty fetch after `wait`.
    let t = Instant::now();
    let none = source.fetch(5, 1024, Duration::from_millis(300)).await?;
    assert!(none.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250));

    // A new event is returned as soon as it arrives, long before `wait`.
    let js2 = js.clone();
    let late = events(&route("r2", "/b"))?;
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish(&js2, &late).await.map_err(|e| e.to_string())
    });
    let t = Instant::now();
    let got = source.fetch(5, 1024, Duration::from_secs(10)).await?;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "fetch returned on first event"
    );
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6]);
    publisher.await??;
    source.ack(6).await?;

    // The server saw the ack (AckPolicy::All: the floor moved to 6).
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await?
        .get_consumer("flotilla-store")
        .await?;
    let info = consumer.info().await?;
    assert_eq!(info.ack_floor.stream_sequence, 6);

    // A "new leader" that applied up to 4 repositions: it gets 5 and 6 again (unapplied by
    // it), and nothing at or below 4.
    let new_leader = NatsSource::connect(&nats.url, STREAM).await?;
    new_leader.begin(4).await?;
    let got = new_leader.fetch(4, 1024, Duration::from_secs(5)).await?;
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    new_leader.ack(6).await?;

    // One that applied everything gets nothing redelivered.
    let caught_up = NatsSource::connect(&nats.url, STREAM).await?;
    caught_up.begin(6).await?;
    let none = caught_up.fetch(6, 1024, Duration::from_millis(500)).await?;
    assert!(none.is_empty(), "no redelivery after recreation: {none:?}");

    // A fetch with a position the source does not hold repositions by itself.
    let got = caught_up.fetch(2, 1024, Duration::from_secs(5)).await?;
    assert_eq!(got.first().map(|e| e.seq), Some(3));
    assert_eq!(got.last().map(|e| e.seq), Some(6));
    Ok(())
}

#[tokio::test]
async fn stream_is_created_with_the_ingest_configuration() -> TestResult {
    let nats = NatsServer::start().await?;
    let _source = NatsSource::connect(&nats.url, STREAM).await?;
    let client = async_nats::connect(&nats.url).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(STREAM).await?;
    let info = stream.info().await?;
    assert_eq!(info.config.subjects, vec!["flotilla.events.>".to_string()]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    // Creating it again (another node, or ingest first) is fine.
    let _again = NatsSource::connect(&nats.url, STREAM).await?;
    Ok(())
}
