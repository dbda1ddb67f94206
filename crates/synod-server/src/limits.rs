//! Every bound the node enforces, in one place.

use std::time::Duration;

/// Most levels of Txn nesting a request may have (a Txn with no Txn inside is one
/// level). Enforced where a Txn is decoded, in `synod_proto::nested`, so that no
/// form a Txn travels in (log command, batch, forward) can exceed what decodes.
pub use synod_proto::nested::TXN_NESTING_MAX;

/// Encoded size from which an answer is encoded off the async workers, at low
/// priority (see `synod_proto::codec`).
pub use synod_proto::codec::LARGE_MESSAGE_BYTES;

/// Records from which a client's Range reads them at low priority (see
/// `synod_storage::mvcc::read`).
pub use synod_storage::mvcc::read::BULK_READ_VERSIONS;

/// Bounds on client requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request accepted (`--max-request-bytes`), as etcd measures it.
    pub request_bytes_max: usize,
    /// Most operations in one Txn branch (`--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Shortest lease TTL granted; shorter requests are raised to it. As in etcd, 1.5
    /// election timeouts (rounded up to whole seconds), so a lease survives an
    /// election.
    pub lease_ttl_min_seconds: i64,
    /// Largest the database file may grow through writes (`--quota-backend-bytes`)
    /// before the NOSPACE alarm stops them; `None` when disabled.
    pub backend_quota_bytes: Option<u64>,
    /// Free bytes the data dir's disk must keep (`--disk-reserve-bytes`): below
    /// them the member raises the NOSPACE alarm (see [`crate::disk_guard`]); 0
    /// turns the check off.
    pub disk_reserve_bytes: u64,
}

impl Limits {
    /// etcd's minimum lease TTL for an election timeout.
    pub fn lease_ttl_min_for(election_timeout: Duration) -> i64 {
        let millis = election_timeout.as_millis().saturating_mul(3) / 2;
        i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX)
    }

    /// The quota `--quota-backend-bytes` asks for, read as etcd reads it: 0 means
    /// the default, a negative value turns the quota off.
    pub fn backend_quota_for(flag: i64) -> Option<u64> {
        match flag {
            0 => Some(DEFAULT_BACKEND_QUOTA_BYTES),
            bytes => u64::try_from(bytes).ok(),
        }
    }

    /// Largest gRPC message a client may send: `--max-request-bytes` plus gRPC's
    /// slack, as etcd sets its gRPC receive limit. Longer ones are refused from
    /// their header.
    pub fn message_bytes_max(&self) -> usize {
        self.request_bytes_max.saturating_add(GRPC_OVERHEAD_BYTES)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_bytes_max: 1536 * 1024,
            txn_ops_max: 128,
            lease_ttl_min_seconds: 2,
            backend_quota_bytes: Some(DEFAULT_BACKEND_QUOTA_BYTES),
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
        }
    }
}

/// Free disk a member keeps by default: two of the Raft log's 64 MiB segments.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 128 * 1024 * 1024;

/// How often a member looks at its data dir's free disk space.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// etcd's default space quota: 2 GiB.
pub const DEFAULT_BACKEND_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Slack the gRPC layer allows above `request_bytes_max` before refusing a message
/// outright (as etcd's gRPC server does); between the two, etcd's own "request is
/// too large" answers.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Bytes of partly received messages one client connection may hold at once (see
/// [`crate::receive_budget`]): 32 messages of the largest default size. A message
/// that does not fit is refused with `RESOURCE_EXHAUSTED`. Raised to the largest
/// message allowed if that is larger.
pub const CONNECTION_RECEIVE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Streams one client connection may have open at once. etcd sets no bound (watch
/// clients open a stream per watch context), so this one is generous; what each
/// stream may hold is bounded by [`CONNECTION_RECEIVE_BYTES_MAX`].
pub const STREAMS_PER_CONNECTION_MAX: u32 = 4096;

/// Backlog asked for on every listening socket; the kernel caps it at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// First wait after a failed accept (out of file descriptors, say); it doubles up
/// to [`ACCEPT_BACKOFF_MAX`] while accepts keep failing.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Longest wait between failed accepts.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Bytes etcd's proposal adds around a request (its `InternalRaftRequest` header),
/// counted against `--max-request-bytes` so the same request is too large on both.
pub const PROPOSAL_HEADER_BYTES: usize = 14;

/// Largest peer message: a batch of log entries or a snapshot chunk.
pub const PEER_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Most log entries in one replication message.
pub const REPLICATION_ENTRIES_MAX: u64 = 64;

/// Bytes of snapshot data in one install-snapshot message.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// How long a stopping member lets open requests and streams finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a client request may wait for a leader, a commit or a read index.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Pause between attempts while no leader is known.
pub const LEADER_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Timeout for one peer RPC that is not a snapshot.
pub const PEER_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep-alive responses buffered per stream before the server waits for the client.
pub const KEEPALIVE_RESPONSES_BUFFERED: usize = 16;

/// Most watchers one watch stream may hold.
pub const WATCHERS_PER_STREAM_MAX: usize = 4096;

/// Most history rows a watcher reads in one step; bounds the memory a watcher that
/// is catching up can take, and keeps one busy watcher from starving the others.
pub const WATCH_BATCH_ROWS: usize = 1024;

/// Watch responses buffered per stream before the server waits for the client.
pub const WATCH_RESPONSES_BUFFERED: usize = 64;
