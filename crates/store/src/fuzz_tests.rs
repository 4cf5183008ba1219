//! The bounded fuzz pass over what the store reads from disk, peers and the event stream (run
//! alone with `cargo test fuzz_`, longer with `PROPTEST_CASES=100000`):
//!
//! - the log codec (postcard): arbitrary bytes and mutated valid encodings of log entries and
//!   Raft messages never panic, and what decodes re-encodes to a fixed point;
//! - the fold: batches of arbitrary payloads (garbage, valid events, mutated events) and of
//!   arbitrary shape (any first sequence, runs of missing sequences up to `u64::MAX`) never
//!   panic, consume each sequence exactly once, record every payload they cannot fold, and
//!   leave two fresh states fed the same batches identical.

use crate::codec;
use crate::state::State;
use crate::types::{Entry, EventBatch, LogId, NodeId, StreamItem, TypeConfig};
use bytes::Bytes;
use flotilla_model::{EventBody, ResourceEvent, ResourceKey};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// `cases` unless `PROPTEST_CASES` asks for another number. The defaults keep the whole fuzz
/// pass of the workspace under a minute in a debug build on 2 cores.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

// ---- codec ----

/// Decodes `bytes` as a `T`; what decodes must encode to bytes that decode to the same value
/// (compared by its debug form: openraft's types have no `PartialEq`) and encode identically
/// again.
fn check_decode<T: Serialize + DeserializeOwned + Debug>(bytes: &[u8]) -> Option<T> {
    let value: T = codec::decode("fuzz", bytes).ok()?;
    let encoded = codec::encode("fuzz", &value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    let again: T =
        codec::decode("fuzz", &encoded).unwrap_or_else(|e| panic!("{value:?} re-encoded: {e}"));
    assert_eq!(format!("{again:?}"), format!("{value:?}"));
    assert_eq!(codec::encode("fuzz", &again).ok(), Some(encoded));
    Some(value)
}

fn check_all_decoders(bytes: &[u8]) {
    check_decode::<Entry>(bytes);
    check_decode::<EventBatch>(bytes);
    check_decode::<AppendEntriesRequest<TypeConfig>>(bytes);
    check_decode::<VoteRequest<NodeId>>(bytes);
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn stream_item() -> impl Strategy<Value = StreamItem> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..48).prop_map(|b| StreamItem::event(SUBJECT, Bytes::from(b))),
        1 => prop_oneof![1u64..5, Just(u64::MAX)].prop_map(StreamItem::Missing),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        1 => Just(EntryPayload::Blank),
        4 => ("[a-z@0-9]{0,12}", any::<u64>(), prop::collection::vec(stream_item(), 1..5))
            .prop_map(|(epoch, first_seq, items)| EntryPayload::Normal(EventBatch { epoch, first_seq, items })),
    ];
    (any::<u64>(), any::<u64>(), payload).prop_map(|(term, index, payload)| Entry {
        log_id: log_id(term, index),
        payload,
    })
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn fuzz_codec_decode_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        check_all_decoders(&bytes);
    }

    #[test]
    fn fuzz_codec_decode_mutated_entries(
        entries in prop::collection::vec(entry(), 1..4),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..3),
        cut in prop::option::of(any::<prop::sample::Index>()),
        extra in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 9)),
            entries: entries.clone(),
            leader_commit: None,
        };
        for mut bytes in [
            codec::encode("entry", &entries[0]).unwrap_or_default(),
            codec::encode("request", &request).unwrap_or_default(),
        ] {
            // Unmutated, it decodes and re-encodes to the very same bytes.
            prop_assert!(check_decode::<Entry>(&bytes).is_some() || check_decode::<AppendEntriesRequest<TypeConfig>>(&bytes).is_some());
            for (at, bit) in &flips {
                let at = at.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&extra);
            check_all_decoders(&bytes);
        }
    }
}

// ---- the fold ----

/// Objects the events of the fuzzed batches are made of: enough for gateways, routes and
/// backends to be translated and re-translated.
const OBJECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: eg}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: apps}
spec:
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-1, namespace: apps, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{port: 8080}]
"#;

/// The subject the pool's events (cluster `c1`) are published on.
const SUBJECT: &str = "flotilla.events.c1";

/// Valid events over [`OBJECTS`]: upserts (three times as likely), deletes, and a resync.
fn event_pool() -> Vec<Vec<u8>> {
    let (resources, errors) = flotilla_model::parse_documents("pool.yaml", OBJECTS, "c1");
    assert!(errors.is_empty(), "{errors:?}");
    let event = |body| ResourceEvent {
        cluster: "c1".into(),
        source: "fuzz".into(),
        body,
    };
    let mut pool = Vec::new();
    let keys: Vec<ResourceKey> = resources.iter().map(|r| r.key.clone()).collect();
    for r in resources {
        pool.push(event(EventBody::Delete { key: r.key.clone() }));
        let upsert = event(EventBody::Upsert {
            key: r.key,
            object: r.raw,
            origin: Some("pool.yaml".into()),
        });
        pool.extend([upsert.clone(), upsert.clone(), upsert]);
    }
    pool.push(event(EventBody::Resync {
        keys: keys[..2].to_vec(),
        keep_origins: vec![],
    }));
    pool.iter()
        .map(|e| serde_json::to_vec(e).unwrap_or_default())
        .collect()
}

/// One stream position of a fuzzed batch.
#[derive(Clone, Debug)]
enum Item {
    /// An event of the pool.
    Valid(prop::sample::Index),
    /// An event of the pool, one bit flipped and cut.
    Mutated(
        prop::sample::Index,
        prop::sample::Index,
        u8,
        prop::sample::Index,
    ),
    Garbage(Vec<u8>),
    Missing(u64),
}

/// Where a batch starts, relative to the state's position in its epoch.
#[derive(Clone, Debug)]
enum Start {
    /// Right after it (the leader's normal case).
    Next,
    /// Overlapping it (a redelivery).
    Back(u64),
    /// Past it (a gap: refused).
    Gap(u64),
    /// Anywhere, up to `u64::MAX` (a log from a broken disk or peer).
    At(u64),
}

#[derive(Clone, Debug)]
struct Plan {
    epoch: u8,
    start: Start,
    items: Vec<Item>,
}

fn plan() -> impl Strategy<Value = Plan> {
    let item = prop_oneof![
        6 => any::<prop::sample::Index>().prop_map(Item::Valid),
        3 => (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..8, any::<prop::sample::Index>())
            .prop_map(|(e, at, bit, cut)| Item::Mutated(e, at, bit, cut)),
        2 => prop::collection::vec(any::<u8>(), 0..32).prop_map(Item::Garbage),
        1 => prop_oneof![
            8 => 0u64..4,
            1 => Just(u64::MAX / 2),
            1 => (u64::MAX - 2)..=u64::MAX,
        ].prop_map(Item::Missing),
    ];
    let start = prop_oneof![
        8 => Just(Start::Next),
        2 => (1u64..4).prop_map(Start::Back),
        1 => (1u64..4).prop_map(Start::Gap),
        1 => prop_oneof![any::<u64>(), (u64::MAX - 4)..=u64::MAX].prop_map(Start::At),
    ];
    (
        prop_oneof![6 => Just(0u8), 1 => 1u8..3],
        start,
        prop::collection::vec(item, 0..10),
    )
        .prop_map(|(epoch, start, items)| Plan {
            epoch,
            start,
            items,
        })
}

/// The batch a plan describes, for a state at `last_seq` in the plan's epoch.
fn batch(plan: &Plan, pool: &[Vec<u8>], last_seq: u64) -> EventBatch {
    let item = |i: &Item| match i {
        Item::Valid(e) => StreamItem::event(SUBJECT, Bytes::from(e.get(pool).clone())),
        Item::Mutated(e, at, bit, cut) => {
            let mut bytes = e.get(pool).clone();
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            bytes.truncate(cut.index(bytes.len() + 1).max(at));
            StreamItem::event(SUBJECT, Bytes::from(bytes))
        }
        Item::Garbage(bytes) => StreamItem::event(SUBJECT, Bytes::from(bytes.clone())),
        Item::Missing(n) => StreamItem::Missing(*n),
    };
    let first_seq = match plan.start {
        Start::Next => last_seq.saturating_add(1),
        Start::Back(n) => last_seq.saturating_add(1).saturating_sub(n).max(1),
        Start::Gap(n) => last_seq.saturating_add(1).saturating_add(n),
        Start::At(seq) => seq,
    };
    // Built as the log decodes it, not through `EventBatch::new`: the fold checks it again.
    EventBatch {
        epoch: format!("stream@{}", plan.epoch),
        first_seq,
        items: plan.items.iter().map(item).collect(),
    }
}

/// Everything a reader can see of a state.
fn observable(st: &State) -> String {
    let rs = st.read_state();
    let digest = flotilla_model::state_digest(rs.view().resources().map(|r| (&r.key, &r.raw)));
    format!(
        "{digest} {:?} {:?} {:?} {:?} {:?}",
        rs.counters(),
        rs.position(),
        rs.rejections().collect::<Vec<_>>(),
        rs.view().gateways(),
        rs.delta_since(1)
            .map(|d| (d.revision, d.full_state, d.removed)),
    )
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn fuzz_state_apply_arbitrary_batches(plans in prop::collection::vec(plan(), 1..8)) {
        let pool = event_pool();
        let (mut a, mut b) = (State::default(), State::default());
        for (i, plan) in plans.iter().enumerate() {
            let epoch = format!("stream@{}", plan.epoch);
            let before = a.read_state();
            let base = before.position().last_seq_of(&epoch);
            let batch = batch(plan, &pool, base);
            let id = log_id(1, i as u64 + 1);
            let refused = a.apply_batch(id, &batch);
            prop_assert_eq!(b.apply_batch(id, &batch), refused.clone());
            prop_assert_eq!(observable(&a), observable(&b));

            let after = a.read_state();
            let (c0, c1) = (before.counters(), after.counters());
            let consumed = |c: crate::Counters| u128::from(c.events_applied) + u128::from(c.sequences_missing);
            if refused.is_some() {
                prop_assert_eq!(consumed(c1), consumed(c0));
                prop_assert_eq!(c1.batches_refused, c0.batches_refused + 1);
                prop_assert_eq!(after.position(), before.position());
                continue;
            }
            // Exactly once: every sequence past the state's position is consumed, once.
            let last = batch
                .items
                .iter()
                .try_fold(batch.first_seq - 1, |seq, item| seq.checked_add(item.len()));
            prop_assert!(last.is_some(), "a batch past the largest sequence was folded");
            let last = last.unwrap_or_default();
            let now = after.position().last_seq_of(&epoch);
            prop_assert_eq!(now, base.max(last));
            // (Unless a damaged log's runs of 2^63 missing sequences saturated the counter.)
            if c1.sequences_missing < u64::MAX {
                prop_assert_eq!(consumed(c1) - consumed(c0), u128::from(now - base));
            }
            // Every payload it consumed that is not an event is recorded as rejected.
            let mut seq = batch.first_seq;
            let mut undecodable = 0;
            for item in &batch.items {
                if let StreamItem::Event { payload: bytes, .. } = item {
                    if seq > base && serde_json::from_slice::<ResourceEvent>(bytes).is_err() {
                        undecodable += 1;
                    }
                }
                seq = seq.saturating_add(item.len());
            }
            prop_assert!(c1.events_rejected - c0.events_rejected >= undecodable);
            // A translator panic caught by the fold is a bug the fuzz pass must not hide.
            for r in after.rejections() {
                prop_assert!(!r.reason.contains("failed on this event"), "{:?}", r);
                prop_assert!(!r.reason.contains("translating this event failed"), "{:?}", r);
            }
        }
    }
}
