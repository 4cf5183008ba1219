use super::*;
use crate::types::EventBatch;
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
                origin: None,
            },
        })
        .collect()
}

fn mk_batch(first_seq: u64, evs: Vec<ResourceEvent>) -> EventBatch {
    let events: Vec<_> = evs
        .into_iter()
        .enumerate()
        .map(|(i, e)| (first_seq + i as u64, e))
        .collect();
    EventBatch {
        last_seq: events.last().map(|e| e.0).unwrap_or(first_seq),
        events,
    }
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
    let mut st = StateView::default();
    st.advance(log_id(1), None);
    assert_eq!(
        st.revision(),
        0,
        "a blank entry changes no state, so not the revision"
    );
    st.apply_batch(log_id(2), &mk_batch(1, mk_events(BASE)));
    assert_eq!((st.revision(), st.last_seq()), (2, 3));
    assert_eq!(st.events_applied(), 3);
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
    let mut st = StateView::default();
    st.apply_batch(log_id(1), &mk_batch(1, mk_events(BASE)));
    let before: Vec<_> = st.translator().gateways().values().cloned().collect();
    // A new leader re-reads 2..=3 and then a delete at 4.
    let mut again = mk_batch(2, mk_events(BASE).split_off(1));
    again.events.push((4, delete_gw2()));
    again.last_seq = 4;
    // Drop the delete to first check a pure replay.
    let replay = EventBatch {
        last_seq: 3,
        events: again.events[..2].to_vec(),
    };
    st.apply_batch(log_id(2), &replay);
    assert_eq!(
        st.revision(),
        1,
        "a pure replay changes nothing, not even the revision"
    );
    assert_eq!(st.last_seq(), 3);
    assert_eq!(
        st.events_applied(),
        3,
        "replayed events are not applied twice"
    );
    let after: Vec<_> = st.translator().gateways().values().cloned().collect();
    assert_eq!(before, after);
    assert_eq!(st.history().len(), 1, "a replay changes nothing");
    st.apply_batch(log_id(3), &again);
    assert_eq!(st.last_seq(), 4);
    assert_eq!(st.events_applied(), 4);
    assert_eq!(st.revision(), 3);
    assert!(!st.translator().gateways().contains_key("c1/infra/gw2"));
}

#[test]
fn undecodable_messages_still_advance_last_seq() {
    let mut st = StateView::default();
    st.apply_batch(
        log_id(1),
        &EventBatch {
            last_seq: 7,
            events: Vec::new(),
        },
    );
    assert_eq!(st.last_seq(), 7);
    assert_eq!(st.revision(), 0);
}

#[test]
fn deltas_since_a_revision() {
    let mut st = StateView::default();
    st.apply_batch(log_id(1), &mk_batch(1, mk_events(BASE)));
    st.advance(log_id(2), None);
    st.apply_batch(log_id(3), &mk_batch(4, vec![delete_gw2()]));

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

#[test]
fn history_is_bounded_and_old_watchers_get_full_state() {
    let mut st = StateView::default();
    st.apply_batch(log_id(1), &mk_batch(1, mk_events(BASE)));
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
        st.apply_batch(log_id(2 + i), &mk_batch(seq, vec![ev]));
    }
    assert_eq!(st.history().len(), HISTORY_LEN);
    assert!(st.history_floor() > 1);
    assert!(st.delta_since(1).expect("full").full_state);
    let d = st.delta_since(st.revision() - 1).expect("delta");
    assert!(!d.full_state);
    assert_eq!(d.gateways.len(), 1);
}

#[test]
fn restore_rebuilds_the_same_output() {
    let mut st = StateView::default();
    st.apply_batch(log_id(1), &mk_batch(1, mk_events(BASE)));
    let resources: Vec<_> = st
        .translator()
        .resources()
        .map(|r| (r.key.clone(), r.raw.clone()))
        .collect();
    let restored = StateView::restore(
        st.last_applied(),
        st.last_membership().clone(),
        st.last_seq(),
        crate::state::RestoredCounters {
            revision: st.revision(),
            events_applied: st.events_applied(),
        },
        resources,
    );
    assert_eq!(restored.revision(), 1);
    assert_eq!(restored.events_applied(), st.events_applied());
    assert_eq!(restored.last_seq(), 3);
    assert_eq!(restored.history_floor(), 1);
    assert_eq!(restored.translator().gateways(), st.translator().gateways());
}
