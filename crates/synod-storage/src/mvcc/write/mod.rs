//! Applying commands to the MVCC store inside one redb write transaction.
//!
//! Every command is checked completely before it changes anything, so a refused
//! command leaves no trace; a command that writes gets exactly one new main
//! revision, and each change inside it the next sub revision.
//!
//! One file per command (`put`, `delete`, `txn`, `compact`, `lease`); this one
//! holds the writer and what they share: revisions, versions, history rows and
//! lease attachments.

mod compact;
mod delete;
mod lease;
mod put;
mod txn;

use std::sync::{Arc, RwLock};

use redb::{Key, Table, TableDefinition, Value, WriteTransaction};
use synod_proto::etcdserverpb::{RangeRequest, ResponseHeader};

use super::index::{KeyIndex, Version};
use super::read;
use super::record::{encode_version, KeyRecord};
use super::MvccError;
use crate::database::Store;
use crate::error::StoreResult;
use crate::sync;
use crate::tables::{
    read_counter, sm_meta, HistoryKey, LeaseKeysTable, MetaTable, HISTORY, LEASES, LEASE_KEYS,
    SM_META,
};
use crate::types::GroupId;

/// The MVCC store of one group, open for writing.
///
/// It updates the group's key index as it writes, ahead of the commit: if the
/// transaction does not commit, the index must be rebuilt
/// ([`Store::reload_key_index`]).
pub struct MvccWriter<'txn> {
    txn: &'txn WriteTransaction,
    history: Table<'txn, HistoryKey, &'static [u8]>,
    /// Open for the whole batch: redb refuses to open a table twice at once, and
    /// every open and close of a table costs a lookup and a root update at commit.
    meta: MetaTable<'txn>,
    index: Arc<RwLock<KeyIndex>>,
    /// Opened when a command first needs them, as most batches touch no lease.
    leases: Option<Table<'txn, (u64, i64), i64>>,
    lease_keys: Option<LeaseKeysTable<'txn>>,
    group: GroupId,
    /// The last committed revision; a command that writes commits `revision + 1`.
    revision: i64,
    compacted: i64,
    /// Changes made so far by the command being applied.
    sub: i64,
    /// Reused for encoding each version written, and its history row.
    record: Vec<u8>,
    row: Vec<u8>,
}

impl<'txn> MvccWriter<'txn> {
    /// Opens the store of `group` of `db` inside `txn`, a write transaction of `db`.
    pub fn open(db: &Store, txn: &'txn WriteTransaction, group: GroupId) -> StoreResult<Self> {
        let meta = txn.open_table(SM_META)?;
        let revision = read_counter(&meta, group, sm_meta::REVISION)?;
        let compacted = read_counter(&meta, group, sm_meta::COMPACT_REVISION)?;
        Ok(Self {
            txn,
            history: txn.open_table(HISTORY)?,
            meta,
            index: db.key_index(group)?,
            leases: None,
            lease_keys: None,
            group,
            revision,
            compacted,
            sub: 0,
            record: Vec::new(),
            row: Vec::new(),
        })
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision the store was compacted at.
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// The group's metadata table, for what the batch records beside the store.
    pub fn meta(&mut self) -> &mut MetaTable<'txn> {
        &mut self.meta
    }

    /// Persists the revision counters into the metadata table.
    pub fn save(mut self) -> StoreResult<()> {
        let meta = &mut self.meta;
        meta.insert(
            (self.group, sm_meta::REVISION),
            self.revision.to_be_bytes().as_slice(),
        )?;
        meta.insert(
            (self.group, sm_meta::COMPACT_REVISION),
            self.compacted.to_be_bytes().as_slice(),
        )?;
        Ok(())
    }

    /// Reads inside the write transaction, seeing the command's own earlier changes.
    pub fn range(
        &self,
        request: &RangeRequest,
    ) -> Result<synod_proto::etcdserverpb::RangeResponse, MvccError> {
        let current = self.revision + i64::from(self.sub > 0);
        read::range(
            &self.history,
            &self.index,
            self.group,
            request,
            current,
            self.compacted,
        )
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            revision: self.revision,
            ..Default::default()
        }
    }

    /// Closes the command: if it changed anything, its revision becomes current.
    fn finish(&mut self) {
        if self.sub > 0 {
            self.revision += 1;
            self.sub = 0;
        }
    }

    fn pending_revision(&self) -> i64 {
        self.revision + 1
    }

    fn is_live(&self, key: &[u8]) -> bool {
        sync::read(&self.index).live_at(key, i64::MAX).is_some()
    }

    /// Writes `record` as the next version of `key`, recording it in the index.
    fn write_version(&mut self, key: &[u8], record: &KeyRecord<'_>) -> StoreResult<()> {
        let mut version = self.next_version(record.tombstone)?;
        version.lineage = record.lineage(version.main);
        sync::write(&self.index).insert(key, version);
        self.write_row(key, version, record)
    }

    /// The version the command's next change gets.
    fn next_version(&self, tombstone: bool) -> StoreResult<Version> {
        Version::new(self.pending_revision(), self.sub, tombstone)
    }

    /// Writes the history row of `version`, which the index already records.
    fn write_row(
        &mut self,
        key: &[u8],
        version: Version,
        record: &KeyRecord<'_>,
    ) -> StoreResult<()> {
        record.encode_into(&mut self.record);
        encode_version(key, &self.record, &mut self.row)?;
        self.history
            .insert(version.row(self.group), self.row.as_slice())?;
        self.sub += 1;
        Ok(())
    }

    fn leases(&mut self) -> StoreResult<&mut Table<'txn, (u64, i64), i64>> {
        open_once(self.txn, &mut self.leases, LEASES)
    }

    fn lease_keys(&mut self) -> StoreResult<&mut LeaseKeysTable<'txn>> {
        open_once(self.txn, &mut self.lease_keys, LEASE_KEYS)
    }

    /// Moves `key`'s lease attachment from `from` to `to` (0 means none).
    fn reattach(&mut self, key: &[u8], from: i64, to: i64) -> StoreResult<()> {
        if from == to {
            return Ok(());
        }
        let group = self.group;
        let lease_keys = self.lease_keys()?;
        if from != 0 {
            lease_keys.remove((group, from, key))?;
        }
        if to != 0 {
            lease_keys.insert((group, to, key), ())?;
        }
        Ok(())
    }
}

/// The table `slot` holds, opening it as `definition` in `txn` the first time.
fn open_once<'txn, 'slot, K: Key + 'static, V: Value + 'static>(
    txn: &'txn WriteTransaction,
    slot: &'slot mut Option<Table<'txn, K, V>>,
    definition: TableDefinition<'_, K, V>,
) -> StoreResult<&'slot mut Table<'txn, K, V>> {
    let table = match slot.take() {
        Some(table) => table,
        None => txn.open_table(definition)?,
    };
    Ok(slot.insert(table))
}
