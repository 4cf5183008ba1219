//! Generates the gRPC code for Flotilla's own services (store watch and raft transport).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["proto/watch.proto", "proto/raft.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
