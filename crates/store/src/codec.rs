//! The one binary encoding of everything the store writes to disk or sends to a peer: Raft log
//! entries, vote and log metadata, Raft messages, snapshots.
//!
//! postcard (serde, varint integers, no field names, no self-description): compact and fast,
//! and its decoder's work is bounded by the nesting of the Rust types, not of the data, since
//! none of the encoded types holds a free-form tree (events travel as opaque bytes, see
//! [`crate::types::EventBatch`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct Error {
    what: &'static str,
    #[source]
    source: postcard::Error,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|source| Error { what, source })
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EventBatch, LogId, StreamItem};
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload};

    #[test]
    fn entries_round_trip_whatever_the_payload_holds() {
        // An event payload nested far deeper than any JSON decoder's recursion limit is just
        // bytes to the log.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let batch = EventBatch::new(
            "stream@1",
            7,
            vec![
                StreamItem::event("flotilla.events.east", Bytes::from(deep)),
                StreamItem::Missing(2),
                StreamItem::event(
                    "flotilla.events.west",
                    Bytes::from_static(b"\xff\x00garbage"),
                ),
            ],
        )
        .expect("batch");
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 42),
            payload: EntryPayload::Normal(batch),
        };
        let bytes = encode("entry", &entry).expect("encode");
        let back: Entry = decode("entry", &bytes).expect("decode");
        assert_eq!(back.log_id, entry.log_id);
        match (back.payload, entry.payload) {
            (EntryPayload::Normal(a), EntryPayload::Normal(b)) => assert_eq!(a, b),
            _ => panic!("payload kind changed"),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            &b""[..],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x01\x02",
        ] {
            assert!(decode::<Entry>("entry", junk).is_err());
        }
    }
}
