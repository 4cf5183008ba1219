//! Poison input against the multi-process setup: what the agent refuses, and what reaches the
//! stream anyway (published straight to NATS, past any agent), must leave every store alive,
//! restartable from its disk, agreeing with the others, and still taking changes.

use crate::spine::Spine;
use crate::support::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `{"a": [[[ ... ]]]}` nested `depth` levels deep in total.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_inputs_leave_every_store_alive_and_in_agreement() {
    let mut s = Spine::start("east");
    let served = s.serve_route("/before").await;
    let base = served.base.clone();

    // Through the agent: the ConfigMap that used to kill every store (nested 122 deep), and a
    // route whose later duplicate key would have wiped its rules.
    write_file(
        &s.yaml,
        "deep.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep, namespace: default}}\nextra: {}\n",
            nested(122)
        ),
    );
    write_file(
        &s.yaml,
        "dup.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: dup, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: v1, port: 80}]}]\n  rules: []\n",
    );
    // Past the agent, straight onto the stream: bytes that are no event, and an event whose
    // object nests deeper than any JSON decoder follows.
    let js = async_nats::jetstream::new(
        async_nats::connect(&s.nats_url)
            .await
            .expect("connect to NATS"),
    );
    let mut poisoned = Vec::new();
    for payload in [
        b"\x00\xffnot an event".to_vec(),
        format!(
            r#"{{"cluster":"east","source":"evil","body":{{"type":"upsert","key":{{"cluster":"east","kind":"ConfigMap","namespace":"default","name":"x"}},"object":{{"a":{}}}}}}}"#,
            nested(300)
        )
        .into_bytes(),
    ] {
        let ack = js
            .publish("flotilla.events.east", payload.into())
            .await
            .expect("publish")
            .await
            .expect("puback");
        poisoned.push(ack.sequence);
    }
    s.set_route("/after");
    s.expect(
        &format!("{base}/after"),
        "a change after the poison",
        |c, _| c == 200,
    )
    .await;

    let ingest_log = s.ingest.log_text();
    assert!(
        ingest_log.contains("deep.yaml") && ingest_log.contains("nested deeper"),
        "the agent names the deep file: {ingest_log}"
    );
    assert!(
        ingest_log.contains("dup.yaml") && ingest_log.contains("rules"),
        "the agent names the duplicate key: {ingest_log}"
    );

    // Every replica recorded the same rejections for the two poisoned sequences.
    let rejections = |v: &Value| -> Vec<(u64, String)> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["seq"].as_u64().unwrap_or(0),
                    r["what"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let (_, last) = s.stream_state().await.expect("stream");
    let mut seen = Vec::new();
    for i in 0..3 {
        let v = eventually("replica caught up", T, || async {
            let v = s.api(i, "/api/v1/revision").await?;
            if v["lastSeq"].as_u64() == Some(last) {
                Ok(v)
            } else {
                Err(format!("{v}"))
            }
        })
        .await;
        assert_eq!(v["eventsRejected"], 2, "node {i}: {v}");
        let r = rejections(&s.api(i, "/api/v1/rejections").await.expect("rejections"));
        let seqs: Vec<u64> = r.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, poisoned, "node {i}: {r:?}");
        seen.push((
            r,
            s.api(i, "/api/v1/digest").await.expect("digest")["digest"].clone(),
        ));
    }
    assert!(
        seen.iter().all(|x| *x == seen[0]),
        "replicas disagree: {seen:?}"
    );

    // kill -9 every store and start them again from disk: the log (with the poison in it) is
    // readable, the state comes back the same.
    for p in s.stores.iter_mut() {
        p.kill();
    }
    for i in 0..3 {
        s.stores[i] = s.spawn_store(i);
    }
    s.leader().await;
    for i in 0..3 {
        let d = eventually("replica back from disk", T, || async {
            let v = s.api(i, "/api/v1/revision").await?;
            if v["ready"] != true {
                return Err(format!("{v}"));
            }
            Ok(s.api(i, "/api/v1/digest").await?["digest"].clone())
        })
        .await;
        assert_eq!(d, seen[0].1, "node {i} restored another state");
    }
    s.set_route("/again");
    s.expect(
        &format!("{base}/again"),
        "a change after restarting from disk",
        |c, _| c == 200,
    )
    .await;
    let stats = s.edge_stats().await.expect("stats");
    assert_eq!(stats["nacks"], 0, "{stats}");
}
