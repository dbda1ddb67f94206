//! The wire protocols synod speaks.
//!
//! The etcd v3 packages keep etcd's package names, service paths and field numbers, so
//! `etcdctl` and every etcd client library talk to synod unchanged. `synodpb` holds the
//! commands replicated through the Raft log and `synodpeer` the node-to-node RPC.

pub mod codec;
pub mod low_priority;
pub mod nested;

/// etcd's MVCC key-value types (`KeyValue`, `Event`).
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's authentication types.
#[allow(clippy::all, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's v3 services: KV, Watch, Lease, Cluster, Maintenance, Auth.
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's distributed lock service.
#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's leader election service.
#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Commands that travel through the Raft log, and their results.
#[allow(clippy::all, missing_docs)]
pub mod synodpb {
    tonic::include_proto!("synodpb");
}

/// The node-to-node RPC: Raft messages, request forwarding, read index.
#[allow(clippy::all, missing_docs)]
pub mod synodpeer {
    tonic::include_proto!("synodpeer");
}

/// The `range_end` that covers every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff incremented, or
/// `"\0"` (every key from the start) if there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"lock/"), b"lock0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
