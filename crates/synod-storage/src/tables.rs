//! The redb tables of a node's database. Every key starts with the Raft group id, so
//! one database holds every group a node hosts.

use redb::{ReadableTable, TableDefinition};

use crate::error::{StoreError, StoreResult};
use crate::types::GroupId;

/// A row of [`HISTORY`]: (group, main revision, sub revision).
pub type HistoryKey = (u64, i64, i64);

/// Every version of every key, in revision order: (group, main, sub) → the key and
/// its record (see `mvcc::record`). New versions append to the end of the tree; the
/// in-memory key index (`mvcc::index`) finds a key's versions. Watch replay,
/// snapshots and HashKV read it in order.
pub const HISTORY: TableDefinition<HistoryKey, &[u8]> = TableDefinition::new("history");

/// State machine metadata: (group, name) → postcard value. Names are in [`sm_meta`].
pub const SM_META: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("sm_meta");

/// [`SM_META`], open for writing.
pub type MetaTable<'txn> = redb::Table<'txn, (u64, &'static str), &'static [u8]>;

/// Leases: (group, lease id) → granted TTL in seconds (i64, big-endian).
pub const LEASES: TableDefinition<(u64, i64), i64> = TableDefinition::new("leases");

/// Keys attached to each lease: (group, lease id, key) → (). Lets a revocation find
/// its keys without scanning the store.
pub const LEASE_KEYS: TableDefinition<(u64, i64, &[u8]), ()> = TableDefinition::new("lease_keys");

/// [`LEASE_KEYS`], open for writing.
pub type LeaseKeysTable<'txn> = redb::Table<'txn, (u64, i64, &'static [u8]), ()>;

/// Member attributes published through the log: (group, member id) → postcard record.
pub const MEMBERS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("members");

/// Node identity, written once when the data dir is created: name → bytes.
pub const IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");

/// The tables of the layout before [`HISTORY`], which a database still holding them
/// is moved out of when it is opened.
pub mod legacy {
    use redb::TableDefinition;

    /// Every version, by key: (group, key, main, sub) → record.
    pub const KV: TableDefinition<(u64, &[u8], i64, i64), &[u8]> = TableDefinition::new("kv");

    /// The change history: (group, main, sub) → key.
    pub const REVISIONS: TableDefinition<(u64, i64, i64), &[u8]> =
        TableDefinition::new("revisions");
}

/// Names of [`SM_META`] rows.
pub mod sm_meta {
    /// The last log id applied to the state machine (written with the data it covers).
    pub const LAST_APPLIED: &str = "last_applied";
    /// The last membership applied.
    pub const LAST_MEMBERSHIP: &str = "last_membership";
    /// The store's current MVCC revision.
    pub const REVISION: &str = "revision";
    /// The revision the store was last compacted at.
    pub const COMPACT_REVISION: &str = "compact_revision";
    /// The alarms raised, as (member id, alarm type) pairs.
    pub const ALARMS: &str = "alarms";
    /// Metadata of the snapshot file currently on disk.
    pub const SNAPSHOT: &str = "snapshot";
}

/// Reads a revision counter from a metadata table; a missing counter has its
/// initial value.
pub fn read_counter<T>(table: &T, group: GroupId, name: &str) -> StoreResult<i64>
where
    T: ReadableTable<(u64, &'static str), &'static [u8]>,
{
    match table.get((group, name))? {
        Some(value) => {
            let bytes: [u8; 8] = value
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("metadata {name} is not 8 bytes")))?;
            Ok(i64::from_be_bytes(bytes))
        }
        None if name == sm_meta::REVISION => Ok(INITIAL_REVISION),
        None => Ok(0),
    }
}

/// The revision of an empty store. As in etcd it is 1, so the first write is
/// revision 2 and clients can tell "no revision yet" (0) from an empty store.
pub const INITIAL_REVISION: i64 = 1;
