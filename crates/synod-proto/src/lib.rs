//! The wire protocols synod speaks.
//!
//! The etcd v3 packages keep etcd's package names, service paths and field numbers, so
//! `etcdctl` and every etcd client library talk to synod unchanged. `synodpb` holds the
//! commands replicated through the Raft log and `synodpeer` the node-to-node RPC.

#![allow(clippy::all, missing_docs)]

/// etcd's MVCC key-value types (`KeyValue`, `Event`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's authentication types.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's v3 services: KV, Watch, Lease, Cluster, Maintenance, Auth.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's distributed lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's leader election service.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Commands that travel through the Raft log, and their results.
pub mod synodpb {
    tonic::include_proto!("synodpb");
}

/// The node-to-node RPC: Raft messages, request forwarding, read index.
pub mod synodpeer {
    tonic::include_proto!("synodpeer");
}
