//! The bounded fuzz pass over the event envelope as it arrives from NATS (JSON bytes; run
//! alone with `cargo test fuzz_`, longer with `PROPTEST_CASES=100000`): arbitrary bytes and
//! mutated valid encodings never panic, and what decodes is an event that encodes and decodes
//! back to itself.

use super::*;
use crate::Kind;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// `cases` unless `PROPTEST_CASES` asks for another number (see `parse/fuzz_tests.rs`).
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Decodes `bytes` as the store does; what decodes must encode to bytes that decode to the
/// same event, and encode identically again (the encoding is a fixed point).
fn check_decode(bytes: &[u8]) -> Option<ResourceEvent> {
    let ev: ResourceEvent = serde_json::from_slice(bytes).ok()?;
    let _ = ev.validate();
    let encoded = serde_json::to_vec(&ev).unwrap_or_else(|e| panic!("{ev:?}: {e}"));
    let again: ResourceEvent =
        serde_json::from_slice(&encoded).unwrap_or_else(|e| panic!("{ev:?} re-encoded: {e}"));
    assert_eq!(again, ev);
    assert_eq!(serde_json::to_vec(&again).ok(), Some(encoded));
    Some(ev)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Any float (NaN and infinities have no JSON form: they become null).
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => "[a-z0-9.-]{0,12}", 1 => ".{0,12}"]
}

fn key() -> impl Strategy<Value = ResourceKey> {
    (
        prop_oneof![3 => Just("east".to_string()), 1 => text()],
        prop::sample::select(Kind::ALL.to_vec()),
        text(),
        text(),
    )
        .prop_map(|(cluster, kind, namespace, name)| {
            ResourceKey::new(cluster, kind, namespace, name)
        })
}

fn event() -> impl Strategy<Value = ResourceEvent> {
    let body = prop_oneof![
        (key(), json_value(), prop::option::of(text())).prop_map(|(key, object, origin)| {
            EventBody::Upsert {
                key,
                object,
                origin,
            }
        }),
        key().prop_map(|key| EventBody::Delete { key }),
        (
            prop::collection::vec(key(), 0..4),
            prop::collection::vec(text(), 0..3)
        )
            .prop_map(|(keys, keep_origins)| EventBody::Resync { keys, keep_origins }),
    ];
    (
        prop_oneof![3 => Just("east".to_string()), 1 => text()],
        text(),
        body,
    )
        .prop_map(|(cluster, source, body)| ResourceEvent {
            cluster,
            source,
            body,
        })
}

/// One change to an encoding.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Extend(Vec<u8>),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[]\":,0-9eE.tfn\\ ".to_vec())
    ];
    prop_oneof![
        3 => (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(byte.clone(), 1..8).prop_map(Mutation::Extend),
        2 => (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<prop::sample::Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        if let Mutation::Extend(more) = m {
            bytes.extend_from_slice(more);
        }
        return;
    }
    match m {
        Mutation::FlipBit(i, bit) => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Extend(more) => bytes.extend_from_slice(more),
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Mutation::Delete(i, n) => {
            let at = i.index(bytes.len());
            bytes.drain(at..(at + n).min(bytes.len()));
        }
    }
}

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn fuzz_event_decode_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_decode(&bytes);
    }

    #[test]
    fn fuzz_event_decode_mutated_encodings(
        ev in event(),
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let mut bytes = serde_json::to_vec(&ev).unwrap_or_default();
        // Unmutated, an event comes back as itself.
        let decoded = check_decode(&bytes);
        prop_assert_eq!(decoded.as_ref(), Some(&ev));
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check_decode(&bytes);
    }
}

proptest! {
    #![proptest_config(config(100))]

    /// An object nested past serde_json's recursion limit (at most 127 levels) is refused, not
    /// a crash; below it, it decodes.
    #[test]
    fn fuzz_event_decode_deep_objects(depth in 100usize..140, lists in any::<bool>()) {
        let (open, close) = if lists { ("[", "]") } else { ("{\"k\":", "}") };
        let object = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let text = format!(
            r#"{{"cluster":"east","source":"s","body":{{"type":"upsert","key":{{"cluster":"east","kind":"ConfigMap","namespace":"n","name":"m"}},"object":{object}}}}}"#
        );
        let decoded = check_decode(text.as_bytes());
        // The envelope adds 2 levels (event, body).
        prop_assert_eq!(decoded.is_some(), depth + 2 <= 127, "depth {}", depth);
    }
}
