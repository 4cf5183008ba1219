//! The bounded fuzz pass over the ADS edge on the wire (run alone with `cargo test fuzz_`,
//! longer with `PROPTEST_CASES=10000`): streams of gRPC messages that are garbage, mutated
//! requests or requests without a node, sent over real HTTP/2 to either ADS method. Each
//! stream ends (with an error or responses that decode) as soon as the client closes it, the
//! edge leaks no stream task, and it keeps serving a well-behaved proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use support::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Status;

/// `cases` unless `PROPTEST_CASES` asks for another number. The defaults keep the whole fuzz
/// pass of the workspace under a minute in a debug build on 2 cores.
fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Sends and receives message bodies as they are: what the client sends is not protobuf.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

#[derive(Clone, Debug)]
enum Frame {
    Garbage(Vec<u8>),
    /// A valid request of the stream's kind, naming the gateway, some bits flipped and cut.
    Mutated {
        type_url: Index,
        flips: Vec<(Index, u8)>,
        cut: Option<Index>,
    },
    /// A valid request without a node.
    NoNode(Index),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Garbage),
        4 => (
            any::<Index>(),
            prop::collection::vec((any::<Index>(), 0u8..8), 0..3),
            prop::option::weighted(0.3, any::<Index>()),
        )
            .prop_map(|(type_url, flips, cut)| Frame::Mutated { type_url, flips, cut }),
        1 => any::<Index>().prop_map(Frame::NoNode),
    ]
}

fn encode(frame: &Frame, delta: bool) -> Vec<u8> {
    let types = [CDS, EDS, LDS, RDS];
    let request = |type_url: &Index, with_node: bool| {
        let node = if with_node { node(GW) } else { None };
        let type_url = type_url.get(&types).to_string();
        if delta {
            DeltaDiscoveryRequest {
                node,
                type_url,
                ..Default::default()
            }
            .encode_to_vec()
        } else {
            DiscoveryRequest {
                node,
                type_url,
                ..Default::default()
            }
            .encode_to_vec()
        }
    };
    match frame {
        Frame::Garbage(bytes) => bytes.clone(),
        Frame::Mutated {
            type_url,
            flips,
            cut,
        } => {
            let mut bytes = request(type_url, true);
            for (at, bit) in flips {
                let at = at.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        }
        Frame::NoNode(type_url) => request(type_url, false),
    }
}

/// One stream: sends the frames, closes, reads until the edge ends the stream.
async fn one_stream(edge: &TestEdge, delta: bool, frames: &[Frame]) -> Result<(), TestCaseError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", edge.addr))
        .map_err(|e| TestCaseError::fail(e.to_string()))?
        .connect()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let messages: Vec<Vec<u8>> = frames.iter().map(|f| encode(f, delta)).collect();
    let path = PathAndQuery::from_static(if delta { DELTA_PATH } else { SOTW_PATH });
    let call = grpc.streaming(tonic::Request::new(tokio_stream::iter(messages)), path, Raw);
    let read = async {
        let mut responses = match call.await {
            Ok(r) => r.into_inner(),
            // Refused before any response: fine, as long as it says something.
            Err(status) => return Ok::<_, Status>(vec![status]),
        };
        let mut errors = Vec::new();
        loop {
            match responses.message().await {
                Ok(Some(body)) => {
                    // Whatever the edge sends decodes.
                    let ok = if delta {
                        DeltaDiscoveryResponse::decode(&body[..]).is_ok()
                    } else {
                        DiscoveryResponse::decode(&body[..]).is_ok()
                    };
                    assert!(ok, "the edge sent a response that does not decode");
                }
                Ok(None) => return Ok(errors),
                Err(status) => {
                    errors.push(status);
                    return Ok(errors);
                }
            }
        }
    };
    let errors = tokio::time::timeout(WAIT, read)
        .await
        .map_err(|_| TestCaseError::fail("the stream did not end after the client closed it"))?
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for status in errors {
        prop_assert!(
            !status.message().is_empty() || status.code() == tonic::Code::Ok,
            "{:?}",
            status
        );
    }
    Ok(())
}

#[test]
fn fuzz_ads_wire_garbage() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_store, _conn, edge) = rt.block_on(async {
        let mut store = FakeStore::start().await;
        let edge = TestEdge::start(vec![store.url.clone()]).await;
        let conn = store.next_conn().await;
        conn.send(full(
            1,
            vec![gw(GW, &[(CDS, "c1", "v1"), (LDS, "l1", "v1")])],
        ))
        .await;
        edge.wait_revision(1).await;
        (store, conn, edge)
    });
    let mut runner = TestRunner::new(config(300));
    let cases = (any::<bool>(), prop::collection::vec(frame(), 0..5));
    let result = runner.run(&cases, |(delta, frames)| {
        rt.block_on(one_stream(&edge, delta, &frames))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(async {
        // Every stream task ended.
        edge.wait_stats(|s| s.streams == 0).await;
        // And a proxy that behaves is served.
        let mut d = Delta::open(&edge).await;
        d.subscribe(CDS, &[]).await;
        let r = d.recv().await;
        assert_eq!(names(&r), map(&[("c1", "v1")]));
    });
}
