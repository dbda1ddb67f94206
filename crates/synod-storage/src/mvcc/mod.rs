//! etcd's MVCC data model on redb: every write creates a new revision; each key keeps
//! its versions until compaction; reads name a revision or take the current one.

pub mod history;
pub mod index;
mod index_key;
pub mod lineage;
pub mod read;
pub mod record;
pub mod span;
pub mod write;

use std::sync::Arc;

use crate::database::Store;
use synod_proto::etcdserverpb::{AlarmMember, RangeRequest, RangeResponse};
use synod_proto::synodpb::apply_error::Kind as ApplyErrorKind;

use crate::error::StoreError;
use crate::tables::{read_counter, sm_meta, HISTORY, LEASES, LEASE_KEYS, SM_META};
use crate::types::GroupId;
pub use write::MvccWriter;

/// Why the store refused a request. All but [`MvccError::Store`] are answers to the
/// client; they are decided identically on every replica.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    /// The requested revision has been compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put named a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// A grant named a lease id that is taken.
    #[error("lease already exists")]
    LeaseExists,
    /// A write met the NOSPACE alarm.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::StorageError> for MvccError {
    fn from(error: redb::StorageError) -> Self {
        MvccError::Store(error.into())
    }
}

impl MvccError {
    /// The replicated form of a refusal, or `None` for a storage failure.
    pub fn apply_error_kind(&self) -> Option<ApplyErrorKind> {
        match self {
            MvccError::Compacted => Some(ApplyErrorKind::Compacted),
            MvccError::FutureRevision => Some(ApplyErrorKind::FutureRevision),
            MvccError::LeaseNotFound => Some(ApplyErrorKind::LeaseNotFound),
            MvccError::KeyNotFound => Some(ApplyErrorKind::KeyNotFound),
            MvccError::LeaseExists => Some(ApplyErrorKind::LeaseExists),
            MvccError::NoSpace => Some(ApplyErrorKind::NoSpace),
            MvccError::Store(_) => None,
        }
    }
}

/// Whether a key exists at a revision, and since when, as the key index alone
/// tells it (see [`MvccReader::key_creation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCreation {
    /// The key does not exist at that revision.
    Absent,
    /// The key exists, created at this revision.
    CreatedAt(i64),
    /// The index cannot tell without a read of the store.
    Unknown,
}

/// Read access to one group's applied MVCC state, for serving client reads without
/// going through the log.
#[derive(Clone)]
pub struct MvccReader {
    db: Arc<Store>,
    group: GroupId,
}

impl MvccReader {
    /// A reader of `group` in `db`.
    pub fn new(db: Arc<Store>, group: GroupId) -> Self {
        Self { db, group }
    }

    /// Serves a Range request from one consistent read snapshot.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.ranges(std::slice::from_ref(request))?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("a range produced no answer".into()).into()))
    }

    /// Serves several Range requests from one read snapshot, one answer each: a
    /// snapshot opened once for a batch of reads, each of which only needs state
    /// at least as new as when it arrived. Fails as a whole only if the snapshot
    /// cannot be opened.
    pub fn ranges(
        &self,
        requests: &[RangeRequest],
    ) -> Result<Vec<Result<RangeResponse, MvccError>>, MvccError> {
        let index = self.db.key_index(self.group)?;
        // The transaction fixes the revision read at; the index holds at least
        // every version up to it (see `index`).
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let meta = txn.open_table(SM_META).map_err(StoreError::from)?;
        let current = read_counter(&meta, self.group, sm_meta::REVISION)?;
        let compacted = read_counter(&meta, self.group, sm_meta::COMPACT_REVISION)?;
        let history = txn.open_table(HISTORY).map_err(StoreError::from)?;
        Ok(requests
            .iter()
            .map(|request| {
                read::client_range(&history, &index, self.group, request, current, compacted)
            })
            .collect())
    }

    /// What the key index alone says of `key` at revision `at`, an applied
    /// revision, without blocking: a lock or election waiter asks it of its
    /// predecessor's key after every applied entry, and with hundreds of waiters
    /// a store read each time cost about a quarter of each hand-over's CPU
    /// (bench/RESULTS.md). `Unknown` when the index is locked for writing (by an
    /// apply, a compaction or a snapshot install), `at` is compacted, or the
    /// version there does not know its lineage: the caller then reads the key.
    pub fn key_creation(&self, key: &[u8], at: i64) -> Result<KeyCreation, StoreError> {
        let index = self.db.key_index(self.group)?;
        let Some(index) = crate::sync::try_read(&index) else {
            return Ok(KeyCreation::Unknown);
        };
        if at < index.compacted() {
            return Ok(KeyCreation::Unknown);
        }
        Ok(match index.live_at(key, at) {
            None => KeyCreation::Absent,
            Some(version) => version
                .lineage
                .known(version.main)
                .map_or(KeyCreation::Unknown, |known| {
                    KeyCreation::CreatedAt(known.create_revision)
                }),
        })
    }

    /// Up to `limit` changes with revisions in `from..=to`, with each change's
    /// previous version when `with_previous` (one extra lookup per change).
    pub fn changes(
        &self,
        from: i64,
        to: i64,
        limit: usize,
        with_previous: bool,
    ) -> Result<Vec<history::Change>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let mut changes = history::changes(&table, self.group, from, to, limit)?;
        if with_previous {
            let index = self.db.key_index(self.group)?;
            for change in &mut changes {
                if let Some(key) = change.event.kv.as_ref().map(|kv| kv.key.clone()) {
                    change.event.prev_kv = history::previous(
                        &table,
                        &index,
                        self.group,
                        &key,
                        change.revision,
                        change.sub,
                    )?;
                }
            }
        }
        Ok(changes)
    }

    /// Changes of whole revisions from `from` on, up to `to`: about `limit` rows,
    /// cut at a revision boundary (a single revision larger than `limit` comes
    /// whole). Returns the changes and the last revision they cover completely.
    pub fn whole_revisions(
        &self,
        from: i64,
        to: i64,
        limit: usize,
        with_previous: bool,
    ) -> Result<(Vec<history::Change>, i64), StoreError> {
        let mut changes = self.changes(from, to, limit, with_previous)?;
        if changes.len() < limit {
            return Ok((changes, to));
        }
        let last = changes.last().map_or(to, |change| change.revision);
        if last > from {
            changes.retain(|change| change.revision < last);
            return Ok((changes, last - 1));
        }
        Ok((self.changes(from, from, usize::MAX, with_previous)?, from))
    }

    /// A checksum of every key version with revision up to `revision` (0: the
    /// current one), for checking that replicas agree. Returns the hash, the
    /// revision hashed up to, and the compact revision. Every replica applies the
    /// same log, including compactions, so equal stores hash equal.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), MvccError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let meta = txn.open_table(SM_META).map_err(StoreError::from)?;
        let current = read_counter(&meta, self.group, sm_meta::REVISION)?;
        let compacted = read_counter(&meta, self.group, sm_meta::COMPACT_REVISION)?;
        let upto = read::resolve_revision(revision, current, compacted)?;
        let history = txn.open_table(HISTORY).map_err(StoreError::from)?;
        let mut hasher = crc32fast::Hasher::new();
        for row in history.range((self.group, 0, 0)..=(self.group, upto, i64::MAX))? {
            let (revision, stored) = row?;
            let (_, main, sub) = revision.value();
            let (key, record) = record::split_version(stored.value())?;
            hasher.update(key);
            hasher.update(&main.to_be_bytes());
            hasher.update(&sub.to_be_bytes());
            hasher.update(record);
        }
        Ok((hasher.finalize(), upto, compacted))
    }

    /// The alarms raised in the cluster.
    pub fn alarms(&self) -> Result<Vec<AlarmMember>, StoreError> {
        let txn = self.db.begin_read()?;
        crate::alarm::read(&txn.open_table(SM_META)?, self.group)
    }

    /// The TTL a lease was granted with, if it exists.
    pub fn lease(&self, id: i64) -> Result<Option<i64>, StoreError> {
        let txn = self.db.begin_read()?;
        let leases = txn.open_table(LEASES)?;
        Ok(leases.get((self.group, id))?.map(|ttl| ttl.value()))
    }

    /// Every lease, as (id, granted TTL), in id order.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let leases = txn.open_table(LEASES)?;
        let mut all = Vec::new();
        for row in leases.range((self.group, i64::MIN)..=(self.group, i64::MAX))? {
            let (key, ttl) = row?;
            all.push((key.value().1, ttl.value()));
        }
        Ok(all)
    }

    /// The keys attached to a lease.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEASE_KEYS)?;
        let mut keys = Vec::new();
        for row in table.range::<(u64, i64, &[u8])>(
            (self.group, id, &[][..])..(self.group, id.saturating_add(1), &[][..]),
        )? {
            let (key, _) = row?;
            keys.push(key.value().2.to_vec());
        }
        Ok(keys)
    }

    /// The current and compacted revisions.
    pub fn revisions(&self) -> Result<(i64, i64), StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(SM_META)?;
        Ok((
            read_counter(&meta, self.group, sm_meta::REVISION)?,
            read_counter(&meta, self.group, sm_meta::COMPACT_REVISION)?,
        ))
    }
}
