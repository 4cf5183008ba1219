//! Flotilla's own gRPC services: the store's watch API (consumed by edges) and the raft
//! transport between store nodes. Generated from `proto/`.

pub mod watch {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("flotilla.watch.v1");
}

pub mod raft {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("flotilla.raft.v1");
}
