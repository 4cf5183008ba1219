use super::*;
use crate::types::EventBatch;
use bytes::Bytes;
use flotilla_model::{EventBody, ResourceEvent};
use openraft::{CommittedLeaderId, LogId as RaftLogId};

const BASE: &str = r#"
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
kind: Gateway
metadata: {name: gw2, namespace: infra}
spec:
  gatewayClassName: eg
  listeners:
  - {name: http, port: 8081, protocol: HTTP}
"#;

const EPOCH: &str = "stream@1";

fn log_id(index: u64) -> LogId {
    RaftLogId::new(CommittedLeaderId::new(1, 1), index)
}

fn mk_events(text: &str) -> Vec<ResourceEvent> {
    let (rs, errs) = flotilla_model::parse_documents("t.yaml", text, "c1");
    assert!(errs.is_empty(), "{errs:?}");
    rs.into_iter()
        .map(|r| ResourceEvent {
            cluster: "c1".into(),
            source: "t".into(),
            body: EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: Some("t.yaml".into()),
            },
        })
        .collect()
}

/// An event as its cluster's agent publishes it: on its own subject.
fn payload(ev: &ResourceEvent) -> StreamItem {
    payload_on(&flotilla_model::events_subject(&ev.cluster), ev)
}

fn payload_on(subject: &str, ev: &ResourceEvent) -> StreamItem {
    StreamItem::event(subject, serde_json::to_vec(ev).expect("encode"))
}

const C1: &str = "flotilla.events.c1";

fn mk_batch_in(epoch: &str, first_seq: u64, evs: &[ResourceEvent]) -> EventBatch {
    EventBatch::new(epoch, first_seq, evs.iter().map(payload).collect()).expect("batch")
}

fn mk_batch(first_seq: u64, evs: &[ResourceEvent]) -> EventBatch {
    mk_batch_in(EPOCH, first_seq, evs)
}

fn delete_gw2() -> ResourceEvent {
    ResourceEvent {
        cluster: "c1".into(),
        source: "t".into(),
        body: EventBody::Delete {
            key: flotilla_model::ResourceKey::new(
                "c1",
                flotilla_model::Kind::Gateway,
                "infra",
                "gw2",
            ),
        },
    }
}

#[test]
fn apply_folds_and_records_history() {
    let mut st = State::default();
    st.advance(log_id(1), None);
    assert_eq!(
        st.revision(),
        0,
        "a blank entry changes no state, so not the revision"
    );
    assert_eq!(
        st.apply_batch(log_id(2), &mk_batch(1, &mk_events(BASE))),
        None
    );
    assert_eq!((st.revision(), st.position().last_seq), (2, 3));
    assert_eq!(st.counters().events_applied, 3);
    assert_eq!(st.translator().resources().count(), 3);
    assert_eq!(st.history().len(), 1);
    let gws: Vec<_> = st.translator().gateways().keys().cloned().collect();
    assert_eq!(
        gws,
        vec!["c1/infra/gw".to_string(), "c1/infra/gw2".to_string()]
    );
}

#[test]
fn replayed_sequences_are_no_ops() {
    let mut st = State::default();
    st.apply_batch(log_id(1), &mk_batch(1, &mk_events(BASE)));
    let before: Vec<_> = st.translator().gateways().values().cloned().collect();
    // A new leader re-reads 2..=3: a pure replay.
    let replay = mk_batch(2, &mk_events(BASE)[1..]);
    assert_eq!(st.apply_batch(log_id(2), &replay), None);
    assert_eq!(
        st.revision(),
        1,
        "a pure replay changes nothing, not even the revision"
    );
    assert_eq!(st.position().last_seq, 3);
    assert_eq!(
        st.counters().events_applied,
        3,
        "replayed events are not applied twice"
    );
    let after: Vec<_> = st.translator().gateways().values().cloned().collect();
    assert_eq!(before, after);
    assert_eq!(st.history().len(), 1, "a replay changes nothing");
    // 2..=3 again plus a delete at 4: only 4 is new.
    let mut evs = mk_events(BASE)[1..].to_vec();
    evs.push(delete_gw2());
    st.apply_batch(log_id(3), &mk_batch(2, &evs));
    assert_eq!(st.position().last_seq, 4);
    assert_eq!(st.counters().events_applied, 4);
    assert_eq!(st.revision(), 3);
    assert!(!st.translator().gateways().contains_key("c1/infra/gw2"));
}

/// The invariant the leader relies on: a batch that does not continue the sequence is
/// refused whole, never folded with a hole in front of it.
#[test]
fn a_gap_is_refused_not_skipped() {
    let mut st = State::default();
    st.apply_batch(log_id(1), &mk_batch(1, &mk_events(BASE)[..1]));
    let before = st.read_state();
    // Sequence 2 was taken by someone else; the batch starts at 3.
    let why = st
        .apply_batch(log_id(2), &mk_batch(3, &mk_events(BASE)[1..]))
        .expect("refused");
    assert!(why.contains("gap"), "{why}");
    assert_eq!(st.position().last_seq, 1, "nothing skipped");
    assert_eq!(st.counters().events_applied, 1, "nothing folded");
    assert_eq!(st.counters().batches_refused, 1);
    assert_eq!(st.revision(), before.revision());
    // The leader repositions and sends 2..=3: all applies.
    assert_eq!(
        st.apply_batch(log_id(3), &mk_batch(2, &mk_events(BASE)[1..])),
        None
    );
    assert_eq!(st.position().last_seq, 3);
    assert_eq!(st.counters().events_applied, 3);
}

/// A batch decoded from the log that `EventBatch::new` would refuse is refused by the fold.
#[test]
fn malformed_batches_are_refused() {
    let mut st = State::default();
    let empty = EventBatch {
        epoch: EPOCH.into(),
        first_seq: 1,
        items: vec![],
    };
    assert!(st.apply_batch(log_id(1), &empty).is_some());
    let zero = EventBatch {
        epoch: EPOCH.into(),
        first_seq: 0,
        items: vec![StreamItem::Missing(1)],
    };
    assert!(st.apply_batch(log_id(2), &zero).is_some());
    let empty_run = EventBatch {
        epoch: EPOCH.into(),
        first_seq: 1,
        items: vec![StreamItem::Missing(0)],
    };
    assert!(st.apply_batch(log_id(3), &empty_run).is_some());
    assert_eq!(st.counters().batches_refused, 3);
    assert_eq!(st.position().last_seq, 0);
}

/// A poison payload (undecodable, too deep for any JSON decoder, an object the model refuses)
/// consumes its sequence, is recorded, and the rest of the batch applies.
#[test]
fn poison_payloads_are_recorded_and_the_rest_applies() {
    let mut st = State::default();
    let evs = mk_events(BASE);
    let deep = format!(
        "{{\"cluster\":\"c1\",\"source\":\"t\",\"body\":{{\"type\":\"upsert\",\"object\":{}{}}}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    // A well-formed event whose object the model refuses (an apiVersion outside its kind's
    // group).
    let mut refused = evs[1].clone();
    let EventBody::Upsert { key, object, .. } = &mut refused.body else {
        unreachable!("an upsert")
    };
    object["apiVersion"] = "example.com/v9".into();
    let refused_key = key.clone();
    let items = vec![
        payload(&evs[0]),
        StreamItem::event(C1, Bytes::from_static(b"\xff\xfegarbage")),
        StreamItem::event(C1, Bytes::from(deep)),
        payload(&refused),
        payload(&evs[1]),
    ];
    let batch = EventBatch::new(EPOCH, 1, items).expect("batch");
    assert_eq!(st.apply_batch(log_id(1), &batch), None);
    assert_eq!(st.position().last_seq, 5);
    assert_eq!(
        st.counters().events_applied,
        5,
        "every sequence consumed once"
    );
    assert_eq!(st.counters().events_rejected, 3);
    assert_eq!(st.translator().resources().count(), 2);
    let read = st.read_state();
    let rejected: Vec<_> = read.rejections().map(|r| (r.seq, r.what.clone())).collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert_eq!(rejected[0].0, 2);
    assert_eq!(rejected[1].0, 3);
    assert!(rejected[0].1.starts_with("payload of"), "{rejected:?}");
    // The refused object went into the translator, which took it; its record still names it.
    let r = read.rejections().nth(2).expect("third");
    assert_eq!(
        (r.seq, r.what.clone()),
        (4, format!("upsert {refused_key}"))
    );
    assert_eq!(r.cluster.as_deref(), Some(refused.cluster.as_str()));
    assert!(r.reason.contains("apiVersion"), "{r:?}");
}

/// Found by the fuzz pass: sequence arithmetic on a batch from a damaged log or a broken peer
/// overflowed (a panic in a debug build, wrapped-around counters in a release one). A batch
/// that runs past `u64::MAX` is refused; one that ends exactly there folds.
#[test]
fn batches_at_the_end_of_the_sequence_space() {
    let evs = mk_events(BASE);
    let past = EventBatch {
        epoch: EPOCH.into(),
        first_seq: 1,
        items: vec![
            StreamItem::Missing(u64::MAX - 1),
            payload(&evs[0]),
            payload(&evs[1]),
        ],
    };
    // 1 + (u64::MAX - 1) + 2 - 1: one past the last.
    assert_eq!(past.checked_last_seq(), None);
    assert_eq!(
        EventBatch::new(EPOCH, 1, past.items.clone()),
        Err(crate::types::BatchError::Overflow)
    );
    let mut st = State::default();
    let why = st.apply_batch(log_id(1), &past).expect("refused");
    assert!(why.contains("largest stream sequence"), "{why}");
    assert_eq!(st.position().last_seq, 0);
    assert_eq!(st.counters().batches_refused, 1);

    // Sequences 1..=u64::MAX-1 lost, then one event at u64::MAX: both fold.
    let lost = EventBatch::new(EPOCH, 1, vec![StreamItem::Missing(u64::MAX - 1)]).expect("batch");
    assert_eq!(st.apply_batch(log_id(2), &lost), None);
    assert_eq!(st.counters().sequences_missing, u64::MAX - 1);
    let last = EventBatch::new(EPOCH, u64::MAX, vec![payload(&evs[0])]).expect("batch");
    assert_eq!(last.last_seq(), u64::MAX);
    assert_eq!(st.apply_batch(log_id(3), &last), None);
    assert_eq!(st.position().last_seq, u64::MAX);
    assert_eq!(st.counters().events_applied, 1);
    // Delivered again: nothing to do.
    assert_eq!(st.apply_batch(log_id(4), &last), None);
    assert_eq!(st.counters().events_applied, 1);

    // One run of every sequence of a new epoch, then another: the counter saturates.
    let all = |epoch| EventBatch::new(epoch, 1, vec![StreamItem::Missing(u64::MAX)]);
    assert_eq!(st.apply_batch(log_id(5), &all("e2").expect("batch")), None);
    assert_eq!(st.position().last_seq, u64::MAX);
    assert_eq!(st.apply_batch(log_id(6), &all("e3").expect("batch")), None);
    assert_eq!(st.counters().sequences_missing, u64::MAX);
    assert_eq!(st.revision(), 6);
}

#[test]
fn missing_sequences_are_counted_as_lost() {
    let mut st = State::default();
    let evs = mk_events(BASE);
    let batch = EventBatch::new(
        EPOCH,
        1,
        vec![payload(&evs[0]), StreamItem::Missing(5), payload(&evs[1])],
    )
    .expect("batch");
    st.apply_batch(log_id(1), &batch);
    assert_eq!(st.position().last_seq, 7);
    assert_eq!(st.counters().events_applied, 2);
    assert_eq!(st.counters().sequences_missing, 5);
    let read = st.read_state();
    let r = read.rejections().next().expect("recorded");
    assert_eq!(r.what, "sequences 2..=6");
}

/// A new sequence space (a standalone restart's fresh bus, a stream created again) is folded
/// from its start; coming back to an earlier epoch resumes where it was.
#[test]
fn a_new_epoch_starts_from_its_first_sequence() {
    let mut st = State::default();
    let evs = mk_events(BASE);
    st.apply_batch(log_id(1), &mk_batch_in("bus-a", 1, &evs));
    assert_eq!(st.position().last_seq, 3);
    // A restarted bus: sequence 1 again, in a new epoch. It must apply.
    st.apply_batch(log_id(2), &mk_batch_in("bus-b", 1, &[delete_gw2()]));
    assert_eq!(st.position().epoch, "bus-b");
    assert_eq!(st.position().last_seq, 1);
    assert_eq!(st.counters().events_applied, 4);
    assert!(!st.translator().gateways().contains_key("c1/infra/gw2"));
    // A new epoch must start at its beginning.
    assert!(st
        .apply_batch(log_id(3), &mk_batch_in("bus-c", 5, &evs[..1]))
        .is_some());
    // Back to bus-a: it resumes after 3, so 1..=3 again is a replay.
    assert_eq!(st.position().last_seq_of("bus-a"), 3);
    st.apply_batch(log_id(4), &mk_batch_in("bus-a", 1, &evs));
    assert_eq!(st.counters().events_applied, 4, "nothing applied twice");
}

#[test]
fn deltas_since_a_revision() {
    let mut st = State::default();
    st.apply_batch(log_id(1), &mk_batch(1, &mk_events(BASE)));
    st.advance(log_id(2), None);
    st.apply_batch(log_id(3), &mk_batch(4, &[delete_gw2()]));
    let st = st.read_state();

    let full = st.delta_since(0).expect("full");
    assert!(full.full_state);
    assert_eq!(full.revision, 3);
    assert_eq!(full.gateways.len(), 1);

    let d = st.delta_since(1).expect("delta");
    assert!(!d.full_state);
    assert!(d.gateways.is_empty());
    assert_eq!(d.removed, vec!["c1/infra/gw2".to_string()]);

    assert!(
        st.delta_since(3).is_none(),
        "nothing after the current revision"
    );
    assert!(st.delta_since(9).is_none());
}

/// A reader's snapshot never changes under it while the writer moves on.
#[test]
fn published_states_are_immutable() {
    let mut st = State::default();
    st.apply_batch(log_id(1), &mk_batch(1, &mk_events(BASE)));
    let old = st.read_state();
    st.apply_batch(log_id(2), &mk_batch(4, &[delete_gw2()]));
    assert_eq!(old.revision(), 1);
    assert_eq!(old.view().gateways().len(), 2);
    assert_eq!(old.view().resource_count(), 3);
    let new = st.read_state();
    assert_eq!(new.view().gateways().len(), 1);
    assert_eq!(new.view().resource_count(), 2);
}

#[test]
fn history_is_bounded_and_old_watchers_get_full_state() {
    let mut st = State::default();
    st.apply_batch(log_id(1), &mk_batch(1, &mk_events(BASE)));
    let evs = mk_events(BASE);
    let gw = evs[1].clone();
    let mut seq = 3;
    for i in 0..(HISTORY_LEN as u64 + 10) {
        // Alternate the listener port so every entry changes gw.
        let mut ev = gw.clone();
        if let EventBody::Upsert { object, .. } = &mut ev.body {
            object["spec"]["listeners"][0]["port"] = serde_json::json!(9000 + (i % 2));
        }
        seq += 1;
        st.apply_batch(log_id(2 + i), &mk_batch(seq, &[ev]));
    }
    assert_eq!(st.history().len(), HISTORY_LEN);
    let read = st.read_state();
    assert!(read.history_floor() > 1);
    assert!(read.delta_since(1).expect("full").full_state);
    let d = read.delta_since(read.revision() - 1).expect("delta");
    assert!(!d.full_state);
    assert_eq!(d.gateways.len(), 1);
}

#[test]
fn restore_rebuilds_the_same_output() {
    let mut st = State::default();
    let mut items: Vec<StreamItem> = mk_events(BASE).iter().map(payload).collect();
    items.push(StreamItem::event(C1, Bytes::from_static(b"junk")));
    st.apply_batch(log_id(1), &EventBatch::new(EPOCH, 1, items).expect("batch"));
    let read = st.read_state();
    let resources: Vec<_> = read
        .view()
        .resources()
        .map(|r| {
            let origin = read.view().origin(&r.key).map(str::to_string);
            (r.key.clone(), r.raw.clone(), origin)
        })
        .collect();
    let restored = State::restore(
        read.last_applied(),
        read.last_membership().clone(),
        read.saved(),
        resources,
        Default::default(),
    );
    let back = restored.read_state();
    assert_eq!(back.revision(), 1);
    assert_eq!(back.counters(), read.counters());
    assert_eq!(back.position(), read.position());
    assert_eq!(back.history_floor(), 1);
    assert_eq!(
        back.rejections().cloned().collect::<Vec<_>>(),
        read.rejections().cloned().collect::<Vec<_>>(),
        "rejections survive a snapshot, identically on every replica"
    );
    assert_eq!(back.view().gateways(), read.view().gateways());
    let gw = flotilla_model::ResourceKey::new("c1", flotilla_model::Kind::Gateway, "infra", "gw");
    assert_eq!(
        back.view().origin(&gw),
        Some("t.yaml"),
        "origins survive a snapshot (a later resync keeps what broken files produced)"
    );
}

fn annotated_gateway(name: &str, fault: &str) -> ResourceEvent {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: infra, annotations: {{flotilla.io/fault: {fault}}}}}\nspec:\n  gatewayClassName: eg\n  listeners:\n  - {{name: http, port: 9090, protocol: HTTP}}\n"
    );
    mk_events(&text).remove(0)
}

fn route(name: &str) -> ResourceEvent {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]}}]\n"
    );
    mk_events(&text).remove(0)
}

/// A translator bug some input reaches (a panic while folding the event, or while translating
/// what it changed) costs that event, not the store: it is rejected on every replica alike and
/// everything else in the batch applies. (Before, the fold's panic stopped the node, and every
/// replica replaying the log stopped on it again.)
#[test]
fn a_translator_panic_rejects_the_event_not_the_store() {
    let base = mk_events(BASE);
    for fault in ["panic-on-apply", "panic-on-translate"] {
        let mut evs = base.clone();
        evs.push(route("r1"));
        evs.push(annotated_gateway("bad", fault));
        evs.push(route("r2"));
        let mut st = State::default();
        assert_eq!(
            st.apply_batch(log_id(1), &mk_batch(1, &evs)),
            None,
            "{fault}"
        );
        // The same input without the poison event, folded by a replica that never saw it.
        let mut clean = State::default();
        let good: Vec<_> = evs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 4)
            .map(|(_, e)| e.clone())
            .collect();
        clean.apply_batch(log_id(1), &mk_batch(1, &good));

        let got = st.read_state();
        assert_eq!(got.counters().events_applied, 6, "{fault}");
        assert_eq!(got.counters().events_rejected, 1, "{fault}");
        let r = got.rejections().next().expect("recorded");
        assert_eq!(r.seq, 5, "{fault}");
        assert!(r.reason.contains("injected fault"), "{fault}: {r:?}");
        // The event went into the translator; its record still names it.
        let EventBody::Upsert { key, .. } = &evs[4].body else {
            unreachable!("the poison is an upsert")
        };
        assert_eq!(r.what, format!("upsert {key}"), "{fault}");
        assert_eq!(
            r.cluster.as_deref(),
            Some(evs[4].cluster.as_str()),
            "{fault}"
        );
        assert_eq!(r.source.as_deref(), Some(evs[4].source.as_str()), "{fault}");
        assert_eq!(
            got.view().gateways(),
            clean.read_state().view().gateways(),
            "{fault}: the rest of the batch applied as if the poison was never there"
        );
        assert_eq!(got.view().resource_count(), 5, "{fault}");
        // It goes on taking changes, and a second replica folding the same log agrees.
        st.apply_batch(log_id(2), &mk_batch(7, &[delete_gw2()]));
        let mut replica = State::default();
        replica.apply_batch(log_id(1), &mk_batch(1, &evs));
        replica.apply_batch(log_id(2), &mk_batch(7, &[delete_gw2()]));
        assert_eq!(
            st.read_state().view().gateways(),
            replica.read_state().view().gateways()
        );
        assert_eq!(
            st.read_state().rejections().cloned().collect::<Vec<_>>(),
            replica
                .read_state()
                .rejections()
                .cloned()
                .collect::<Vec<_>>()
        );
        assert!(!st
            .read_state()
            .view()
            .gateways()
            .contains_key("c1/infra/gw2"));
    }
}

/// An event whose envelope names another cluster than the subject it was published on (the
/// subject is what NATS authorized its publisher for) is rejected, counted as misattributed,
/// and everything else in the batch applies, identically on every replica.
#[test]
fn misattributed_events_are_rejected_and_the_rest_applies() {
    let evs = mk_events(BASE);
    // Agent c1's credentials, an envelope (and key) of cluster c2.
    let forged = ResourceEvent {
        cluster: "c2".into(),
        source: "evil".into(),
        body: EventBody::Delete {
            key: flotilla_model::ResourceKey::new(
                "c2",
                flotilla_model::Kind::Gateway,
                "infra",
                "gw",
            ),
        },
    };
    let items = vec![
        payload(&evs[0]),
        payload_on(C1, &forged),
        payload(&evs[1]),
        // Subjects that name no cluster vouch for none.
        payload_on("flotilla.events.c1.x", &evs[2]),
        payload_on("flotilla.events", &evs[2]),
        payload(&evs[2]),
    ];
    let batch = EventBatch::new(EPOCH, 1, items).expect("batch");
    let mut st = State::default();
    assert_eq!(st.apply_batch(log_id(1), &batch), None);
    let c = st.counters();
    assert_eq!(c.events_applied, 6, "every sequence consumed once");
    assert_eq!(c.events_rejected, 3);
    assert_eq!(c.events_misattributed, 3);
    assert_eq!(st.position().last_seq, 6);
    assert_eq!(
        st.translator().resources().count(),
        3,
        "the good events around the forged ones applied"
    );
    assert!(st.translator().gateways().contains_key("c1/infra/gw"));

    let read = st.read_state();
    let rejected: Vec<_> = read.rejections().cloned().collect();
    assert_eq!(
        rejected.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![2, 4, 5]
    );
    let r = &rejected[0];
    assert_eq!(r.cluster.as_deref(), Some("c2"));
    assert_eq!(r.source.as_deref(), Some("evil"));
    assert!(
        r.what.starts_with("delete c2/") && r.what.ends_with("/infra/gw"),
        "{}",
        r.what
    );
    assert!(
        r.reason.contains("flotilla.events.c1")
            && r.reason.contains("\"c1\"")
            && r.reason.contains("\"c2\""),
        "the reason names both clusters: {}",
        r.reason
    );
    assert!(
        rejected[1].reason.contains("names no cluster"),
        "{}",
        rejected[1].reason
    );

    // A replica folding the same entry decides the same.
    let mut replica = State::default();
    replica.apply_batch(log_id(1), &batch);
    assert_eq!(replica.counters(), c);
    assert_eq!(
        replica
            .read_state()
            .rejections()
            .cloned()
            .collect::<Vec<_>>(),
        rejected
    );

    // The counter survives a snapshot.
    let restored = State::restore(
        read.last_applied(),
        read.last_membership().clone(),
        read.saved(),
        Vec::new(),
        Default::default(),
    );
    assert_eq!(restored.counters().events_misattributed, 3);
}
