//! NatsSource against a real nats-server: sessions, density, per-term consumers, epochs.

mod common;

use common::*;
use flotilla_store::{EventSource, NatsSource, SourceSession, Start, StreamItem};
use std::time::{Duration, Instant};

const STREAM: &str = "FLOTILLA_EVENTS";

fn start(term: u64, epoch: &str, after: u64) -> Start {
    Start {
        node: 1,
        term,
        epoch: epoch.to_string(),
        after,
    }
}

fn seqs(items: &[(u64, StreamItem)]) -> Vec<u64> {
    items.iter().map(|(s, _)| *s).collect()
}

/// Fetches until the item starting at `last` arrived (a fetch returns what is buffered, which
/// may be part of what was published).
async fn fetch_through<S: SourceSession>(
    session: &mut S,
    last: u64,
) -> TestResult<Vec<(u64, StreamItem)>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.last().map(|(s, _): &(u64, StreamItem)| *s) != Some(last) {
        if Instant::now() > deadline {
            return Err(format!("never reached {last}: {:?}", seqs(&got)).into());
        }
        got.extend(session.fetch(1024, Duration::from_secs(1)).await?);
    }
    Ok(got)
}

#[tokio::test]
async fn sessions_deliver_dense_runs_and_ack() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let source = NatsSource::connect(&nats.url, STREAM).await?;
    let epoch = source.epoch().await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);

    // Four events and one payload that is not an event: the source hands out bytes, the
    // state machine decides what they are.
    let evs = events(&format!("{BASE}---\n{}", route("r1", "/a")))?;
    let mut published = publish(&js, &evs).await?;
    let bad = js
        .publish("flotilla.events.c1", "not json".into())
        .await?
        .await?;
    published.push(bad.sequence);
    assert_eq!(published, vec![1, 2, 3, 4, 5]);

    let mut session = source.open(start(1, &epoch, 0)).await?;
    let got = fetch_through(&mut session, 5).await?;
    assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5]);
    match &got[4].1 {
        StreamItem::Event { subject, payload } => {
            assert_eq!(&payload[..], b"not json");
            assert_eq!(
                subject, "flotilla.events.c1",
                "the subject travels with the event"
            );
        }
        other => panic!("expected the raw payload, got {other:?}"),
    }
    session.ack(5).await?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await?
        .get_consumer(&flotilla_store::nats::consumer_name(1, 1))
        .await?;
    assert_eq!(consumer.info().await?.ack_floor.stream_sequence, 5);

    // Nothing new: an empty fetch after `wait`.
    let t = Instant::now();
    assert!(session
        .fetch(1024, Duration::from_millis(300))
        .await?
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250));

    // A new event is returned as soon as it arrives, long before `wait`.
    let js2 = js.clone();
    let late = events(&route("r2", "/b"))?;
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publish(&js2, &late).await.map_err(|e| e.to_string())
    });
    let t = Instant::now();
    let got = session.fetch(1024, Duration::from_secs(10)).await?;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "returned on first event"
    );
    assert_eq!(seqs(&got), vec![6]);
    publisher.await??;

    // `max` is honoured, and a session opened after 4 starts at 5.
    let mut other = source.open(start(2, &epoch, 4)).await?;
    let two = other.fetch(1, Duration::from_secs(5)).await?;
    assert_eq!(seqs(&two), vec![5]);
    Ok(())
}

/// The failure seen in production: a deposed leader's pull stream kept taking every other
/// message from the consumer the new leader had recreated under the same name, and the new
/// leader took the gaps for consumed. With one consumer per term, a later session removes the
/// earlier one: the old session receives nothing more and the new one gets every sequence.
#[tokio::test]
async fn an_old_terms_session_cannot_take_the_new_terms_messages() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let source = NatsSource::connect(&nats.url, STREAM).await?;
    let epoch = source.epoch().await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    publish(&js, &events(BASE)?).await?;

    let mut old = source.open(start(1, &epoch, 0)).await?;
    assert_eq!(seqs(&fetch_through(&mut old, 3).await?), vec![1, 2, 3]);

    // A new leader (another node, a later term) opens at the committed position 3 while the
    // old session is still alive and pulling.
    let mut new = source
        .open(Start {
            node: 2,
            term: 2,
            epoch: epoch.clone(),
            after: 3,
        })
        .await?;
    let mut evs = Vec::new();
    for i in 0..40 {
        evs.extend(events(&route(&format!("r{i}"), &format!("/p{i}")))?);
    }
    let published = publish(&js, &evs).await?;
    let last = *published.last().ok_or("nothing published")?;

    let old_pull = tokio::spawn(async move {
        let mut taken = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match old.fetch(1024, Duration::from_millis(200)).await {
                Ok(got) => taken.extend(seqs(&got)),
                Err(_) => break, // its consumer is gone: that is the point
            }
        }
        taken
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.last() != Some(&last) && Instant::now() < deadline {
        got.extend(seqs(&new.fetch(1024, Duration::from_millis(500)).await?));
    }
    let want: Vec<u64> = (4..=last).collect();
    assert_eq!(got, want, "the new session gets every sequence, densely");
    let taken = old_pull.await?;
    assert!(
        taken.is_empty(),
        "the old session took messages of the new term: {taken:?}"
    );
    Ok(())
}

/// Sequences the stream no longer holds are reported as missing (the state records the
/// loss), never silently skipped.
#[tokio::test]
async fn deleted_messages_are_reported_missing() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let source = NatsSource::connect(&nats.url, STREAM).await?;
    let epoch = source.epoch().await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    publish(&js, &events(&format!("{BASE}---\n{}", route("r1", "/a")))?).await?;
    let stream = js.get_stream(STREAM).await?;
    stream.delete_message(2).await?;
    stream.delete_message(3).await?;

    let mut session = source.open(start(1, &epoch, 0)).await?;
    let got = fetch_through(&mut session, 4).await?;
    assert_eq!(seqs(&got), vec![1, 2, 4]);
    assert_eq!(got[1].1, StreamItem::Missing(2));
    Ok(())
}

/// A stream deleted and created again restarts its sequences: it is a new epoch, and a
/// session opened for the old one is refused.
#[tokio::test]
async fn a_recreated_stream_is_a_new_epoch() -> TestResult {
    init_tracing();
    let nats = NatsServer::start().await?;
    let source = NatsSource::connect(&nats.url, STREAM).await?;
    let first = source.epoch().await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await?);
    js.delete_stream(STREAM).await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = source.epoch().await?;
    assert_ne!(first, second);
    match source.open(start(1, &first, 0)).await {
        Err(flotilla_store::source::Error::EpochChanged { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a session in a stale epoch"),
    }
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
