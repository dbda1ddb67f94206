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
pub use synod_storage::limits::BULK_READ_VERSIONS;

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

/// Most commands the leader gathers into one batch log entry (see [`crate::proposal`]).
pub const COMMANDS_PER_BATCH_MAX: usize = 512;

/// Bytes of commands gathered into one batch log entry before it is cut.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How long a joining member looks for a peer that answers.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long peers may answer without this member before it gives up: a follower
/// asked right after MemberAdd may not have applied the change yet.
pub const NOT_ADDED_GRACE: Duration = Duration::from_secs(5);

/// Runtime passes a batcher's driver waits before cutting a round (see
/// [`crate::batch`]). Measured with 16 clients
/// writing: 4 passes gained most of it, 16 no more than 8, and 64 lost some.
pub const GATHER_PASSES: usize = 8;

/// TTL of the lease the server grants when a contender names none (etcd's session
/// default).
pub const SESSION_TTL_SECONDS: i64 = 60;

/// Bytes of backup data per `Maintenance.Snapshot` message (etcd's send buffer
/// size).
pub const CLIENT_SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// How many election timeouts without a leader end a require-leader stream (etcd's
/// `maxNoLeaderCnt`): reconnecting a stream costs more than refusing a request.
pub const NO_LEADER_TIMEOUTS: u32 = 3;

/// How often a server-chosen lease id is redrawn after colliding with an existing one.
pub const LEASE_ID_ATTEMPTS: usize = 3;

/// A watcher (see [`crate::api::watch`]) fewer revisions than this behind reads them on the stream's own task:
/// a few rows of history cost less than handing the read to the blocking pool and
/// back, two thread wake-ups. With one writer on 3 members sharing 2 cores, the
/// median event latency went from 828 to 778 µs on the leader and from 1,170 to
/// 1,087 µs through a follower. Further behind, it reads on the pool, so a long
/// catch-up never holds the task's thread.
pub const INLINE_READ_REVISIONS_MAX: i64 = 16;

/// Forwards under way at once from one member. A forward waits at the leader for
/// a log entry; with two, the next forward is on its way while the last one waits,
/// instead of starting only after it returns.
pub const FORWARDS_IN_FLIGHT: usize = 2;

/// Most commands in one forward to the leader (see [`crate::forward`]).
pub const COMMANDS_PER_FORWARD_MAX: usize = 512;

/// Entries a learner may lag the leader's log by and still count as caught up.
pub const CAUGHT_UP_LAG_ENTRIES: u64 = 64;

/// How long a membership answer waits for this member to apply the change.
pub const MEMBERSHIP_CATCH_UP: Duration = Duration::from_secs(2);

/// How often the leader looks for added voters to promote.
pub const PROMOTION_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// How often a member asks its peers whether it is still a member.
pub const REMOVAL_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Forward rounds of one follower served at once: more than a follower sends.
pub const FORWARDS_SERVED_AT_ONCE: usize = 8;

/// Batches of single-key reads served at once (see [`crate::point_reads`]): one
/// reading while the next gathers.
pub const POINT_READ_BATCHES_IN_FLIGHT: usize = 2;

/// Most single-key reads in one batch.
pub const POINT_READS_PER_BATCH_MAX: usize = 256;

/// Forward rounds that may wait to be sent on one stream to the leader (see
/// [`crate::forward_link`]): more than a follower puts under way at once.
pub const FORWARD_ROUNDS_QUEUED: usize = 8;

/// Largest TTL a lease may be granted (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_MAX_SECONDS: i64 = 9_000_000_000;

/// How long an expired lease's failed revocation waits before it is retried.
pub const REVOKE_RETRY: Duration = Duration::from_millis(500);

/// Extra wait past the followers' leader lease when leadership is handed over (see
/// [`crate::transfer`]), for clock granularity and message delay.
pub const TRANSFER_LEASE_MARGIN: Duration = Duration::from_millis(100);
