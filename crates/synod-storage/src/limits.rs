//! Every bound the storage layer enforces or works to, in one place: sizes of what
//! it reads and writes, and the pacing of its commits.

use std::time::Duration;

/// Times the current snapshot is looked up again when its file was replaced
/// between reading its record and opening it: more than snapshots are built in
/// that moment.
pub const SNAPSHOT_OPEN_ATTEMPTS: u32 = 3;

/// How often the applied state is made durable. Applies skip the fsync: the Raft
/// log (its own files, flushed before an entry is applied) holds every applied
/// entry, and a restart re-applies from the last durable commit. This bounds that replay, and
/// lets the database reuse the pages freed since. The durable commit holds the
/// database's write lock for its fsync, which grows with the data written since
/// the last one: at 1 s the stalls set every write's tail (put p99.9 at 256
/// clients 145-170 ms), at 100 ms (etcd's backend batch interval too) it is 62-68
/// ms, for about 10% less peak throughput.
///
/// It runs behind the apply that fell due, after that apply's results are
/// published: the answers and watch events of that apply never wait for the
/// fsync, and only an apply that comes while it runs does.
///
/// Under few writes it comes less often (see [`DURABLE_APPLY_REVISIONS`]).
pub const DURABLE_APPLY_INTERVAL: Duration = Duration::from_millis(100);

/// Revisions written since the last durable commit that make the next one due
/// at [`DURABLE_APPLY_INTERVAL`]; with fewer, it waits until
/// [`DURABLE_APPLY_INTERVAL_MAX`]. Each durable commit stalls the apply that
/// comes during its fsync, and a trickle of writes (one client writing about a
/// thousand keys a second) met ten a second: about 1% of its writes, which set
/// the p99 of its watch latency. Measured with one client on 3 members: watch
/// p99 2.13 → 1.96 ms through a follower and 1.56 → 1.43 ms on the leader, put
/// p99 on the leader 1.50 → 1.26 ms. Heavier writes keep the 100 ms, which
/// bounds how much one fsync carries (puts at 128 clients and locks at 16 did not
/// change).
pub const DURABLE_APPLY_REVISIONS: i64 = 2_000;

/// Longest time between durable commits while anything is written.
pub const DURABLE_APPLY_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Largest batch, in client commands, applied on the calling task rather than on
/// the blocking pool. At 16 clients (batches of about 6 commands), applying
/// inline cut the members' CPU per lock by 6-10%; at 128 clients and up, where
/// batches hold hundreds, the pool lets apply overlap the network work.
pub const INLINE_APPLY_COMMANDS_MAX: usize = 16;

/// Keys a batch applied inline may touch in all. A put or a point read or delete
/// counts one key; a ranged one, as many as its span holds when the batch
/// arrives. So Lock's acquire, a txn that reads its lock's prefix (one key per
/// contender), stays inline while the queue is short.
pub const INLINE_APPLY_KEYS_MAX: usize = 64;

/// Records read from which a client's Range runs at low priority: a few
/// milliseconds of work, against the tens of microseconds a thread costs to start.
pub const BULK_READ_VERSIONS: usize = 4096;

/// Default size of redb's page cache. Reads that miss it go to the OS page cache,
/// so a modest cache keeps a node's memory small without costing much speed. The
/// in-memory key index finds every key without reading pages, and new versions
/// append to the last pages, so the cache serves mostly the values reads return:
/// 64 MiB measured as fast as 128 MiB for puts and serializable gets at 128
/// clients, and keeps a member with a million keys near 250 MB.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Largest snapshot frame a reader accepts; bounds memory when reading a damaged file.
pub const SNAPSHOT_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Largest Raft log record accepted when reading. Entries are bounded far below this by the
/// request size limit and the proposal batcher; anything larger is damage.
pub const LOG_RECORD_BYTES_MAX: usize = 256 * 1024 * 1024;

/// How far ahead of its records the active segment is zeroed. Zeroing happens in
/// the write that reaches the end of the zeroed space, and the flush after it
/// carries the zeros: a larger step makes that flush rarer but slower.
pub const ZEROED_AHEAD_BYTES: u64 = 256 * 1024;
