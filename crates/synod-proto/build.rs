//! Compiles the etcd v3 wire API and synod's own protocols with protox, so the build
//! needs no system `protoc`.

use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";

const PROTO_FILES: &[&str] = &[
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
    "etcd/etcdserverpb/rpc.proto",
    "etcd/v3lockpb/v3lock.proto",
    "etcd/v3electionpb/v3election.proto",
    "synod/internal.proto",
    "synod/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<PathBuf> = PROTO_FILES
        .iter()
        .map(|file| PathBuf::from(PROTO_ROOT).join(file))
        .collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        // Txns nest without bound; see src/codec.rs.
        .codec_path("crate::codec::BoundedCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
