//! Applying commands to the MVCC store inside one redb write transaction.
//!
//! Every command is checked completely before it changes anything, so a refused
//! command leaves no trace; a command that writes gets exactly one new main
//! revision, and each change inside it the next sub revision.

use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};

use redb::{Key, ReadableTable, Table, TableDefinition, Value, WriteTransaction};
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use synod_proto::mvccpb::KeyValue;

use super::index::{KeyIndex, Version};
use super::read;
use super::record::{encode_version, KeyRecord};
use super::span::KeySpan;
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

    /// Applies a Put.
    pub fn put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        self.check_put(request)?;
        let response = self.do_put(request)?;
        self.finish();
        Ok(response)
    }

    /// Applies a DeleteRange. Deleting nothing creates no revision.
    pub fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let response = self.do_delete_range(request)?;
        self.finish();
        Ok(response)
    }

    /// Applies a Txn: compares decide the branch, the branch is checked as a whole,
    /// then run. One revision covers every change it makes.
    pub fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let succeeded = self.compares_hold(&request.compare)?;
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        self.check_ops(ops)?;
        let responses = self.run_ops(ops)?;
        self.finish();
        Ok(TxnResponse {
            header: Some(self.header()),
            succeeded,
            responses,
        })
    }

    /// Compacts history below `revision`: every version superseded at or before it is
    /// removed, as is every key deleted at or before it.
    pub fn compact(
        &mut self,
        request: &CompactionRequest,
    ) -> Result<CompactionResponse, MvccError> {
        let target = request.revision;
        if target <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if target > self.revision {
            return Err(MvccError::FutureRevision);
        }
        let doomed = sync::write(&self.index).compact(target);
        for version in doomed {
            self.history.remove(version.row(self.group))?;
        }
        self.compacted = target;
        Ok(CompactionResponse {
            header: Some(self.header()),
        })
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

    fn check_put(&mut self, request: &PutRequest) -> Result<(), MvccError> {
        let group = self.group;
        if request.lease != 0 && self.leases()?.get((group, request.lease))?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        if (request.ignore_value || request.ignore_lease) && !self.is_live(&request.key) {
            return Err(MvccError::KeyNotFound);
        }
        Ok(())
    }

    /// Grants a lease of `ttl` seconds under `id`.
    pub fn lease_grant(
        &mut self,
        request: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, MvccError> {
        let group = self.group;
        let leases = self.leases()?;
        if leases.get((group, request.id))?.is_some() {
            return Err(MvccError::LeaseExists);
        }
        leases.insert((group, request.id), request.ttl)?;
        Ok(LeaseGrantResponse {
            header: Some(self.header()),
            id: request.id,
            ttl: request.ttl,
            error: String::new(),
        })
    }

    /// Revokes a lease, deleting every key attached to it in one revision.
    pub fn lease_revoke(
        &mut self,
        request: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        let group = self.group;
        if self.leases()?.remove((group, request.id))?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        let mut attached = Vec::new();
        for row in self.lease_keys()?.range::<(u64, i64, &[u8])>(
            (group, request.id, &[][..])..(group, request.id.saturating_add(1), &[][..]),
        )? {
            let (key, ()) = row.map(|(key, value)| (key.value().2.to_vec(), value.value()))?;
            attached.push(key);
        }
        for key in attached {
            self.lease_keys()?
                .remove((group, request.id, key.as_slice()))?;
            if self.is_live(&key) {
                self.write_version(&key, &KeyRecord::TOMBSTONE)?;
            }
        }
        self.finish();
        Ok(LeaseRevokeResponse {
            header: Some(self.header()),
        })
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

    fn check_ops(&mut self, ops: &[RequestOp]) -> Result<(), MvccError> {
        for op in ops {
            match &op.request {
                Some(Request::RequestRange(range)) => {
                    read::resolve_revision(range.revision, self.revision, self.compacted)?;
                }
                Some(Request::RequestPut(put)) => self.check_put(put)?,
                Some(Request::RequestTxn(txn)) => {
                    let branch = if self.compares_hold(&txn.compare)? {
                        &txn.success
                    } else {
                        &txn.failure
                    };
                    self.check_ops(branch)?;
                }
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn run_ops(&mut self, ops: &[RequestOp]) -> Result<Vec<ResponseOp>, MvccError> {
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(range)) => {
                    Some(Response::ResponseRange(self.range(range)?))
                }
                Some(Request::RequestPut(put)) => Some(Response::ResponsePut(self.do_put(put)?)),
                Some(Request::RequestDeleteRange(delete)) => {
                    Some(Response::ResponseDeleteRange(self.do_delete_range(delete)?))
                }
                Some(Request::RequestTxn(txn)) => {
                    let succeeded = self.compares_hold(&txn.compare)?;
                    let branch = if succeeded {
                        &txn.success
                    } else {
                        &txn.failure
                    };
                    let responses = self.run_ops(branch)?;
                    // As etcd: only the outermost Txn response carries a revision.
                    Some(Response::ResponseTxn(TxnResponse {
                        header: Some(ResponseHeader::default()),
                        succeeded,
                        responses,
                    }))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(responses)
    }

    fn do_put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        let version = self.next_version(false)?;
        let mut index = sync::write(&self.index);
        // One walk of the index records the new version and finds the one it
        // replaces; the new version's lineage is filled in once it is known.
        let (replaced, recorded) = index.insert(&request.key, version);
        let previous = match replaced.filter(|replaced| !replaced.tombstone) {
            // The previous value is copied out only when the answer or the new
            // version needs it.
            Some(replaced) if request.prev_kv || request.ignore_value => {
                Some(read::version_value(&self.history, self.group, replaced)?)
            }
            Some(replaced) => Some(self.replaced_header(replaced)?),
            None => None,
        };
        if previous.is_none() && (request.ignore_value || request.ignore_lease) {
            index.withdraw(&request.key, version);
            return Err(MvccError::KeyNotFound);
        }
        let value: &[u8] = match (&previous, request.ignore_value) {
            (Some(previous), true) => &previous.value,
            _ => &request.value,
        };
        let lease = match (&previous, request.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => request.lease,
        };
        let record = KeyRecord {
            tombstone: false,
            create_revision: previous
                .as_ref()
                .map_or(version.main, |kv| kv.create_revision),
            version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            lease,
            value,
        };
        recorded.lineage = record.lineage(version.main);
        drop(index);
        self.write_row(&request.key, version, &record)?;
        self.reattach(
            &request.key,
            previous.as_ref().map_or(0, |kv| kv.lease),
            lease,
        )?;
        Ok(PutResponse {
            header: Some(ResponseHeader {
                revision: version.main,
                ..Default::default()
            }),
            prev_kv: previous.filter(|_| request.prev_kv),
        })
    }

    /// What a put needs of `replaced`, the live version it replaces: taken from
    /// the version's lineage when that is known and names no lease (whose id the
    /// index does not keep), else read back from the history.
    fn replaced_header(&self, replaced: Version) -> StoreResult<KeyValue> {
        match replaced.lineage.known(replaced.main) {
            Some(known) if !known.leased => Ok(KeyValue {
                create_revision: known.create_revision,
                mod_revision: replaced.main,
                version: known.version,
                ..Default::default()
            }),
            _ => read::version_header(&self.history, self.group, replaced),
        }
    }

    fn do_delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let span = KeySpan::new(&request.key, &request.range_end);
        let mut doomed = Vec::new();
        read::visit_live(
            &self.history,
            &self.index,
            self.group,
            &span,
            i64::MAX,
            |key, mod_revision, record| {
                doomed.push(read::key_value(key, mod_revision, &record));
                ControlFlow::Continue(())
            },
        )?;
        for kv in &doomed {
            self.write_version(&kv.key, &KeyRecord::TOMBSTONE)?;
            self.reattach(&kv.key, kv.lease, 0)?;
        }
        let deleted = doomed.len() as i64;
        // The revision this command will have if it changes anything so far.
        let revision = self.revision + i64::from(self.sub > 0);
        Ok(DeleteRangeResponse {
            header: Some(ResponseHeader {
                revision,
                ..Default::default()
            }),
            deleted,
            prev_kvs: if request.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// Evaluates compares as etcd does: against the store as it was before the
    /// command (so nested Txns choose their branches up front, consistently with
    /// the checks), over every key in a compare's range; a compare on a missing key
    /// sees zeros, except that a VALUE compare on a missing key always fails.
    fn compares_hold(&self, compares: &[Compare]) -> Result<bool, MvccError> {
        for compare in compares {
            if !self.compare_holds(compare)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compare_holds(&self, compare: &Compare) -> Result<bool, MvccError> {
        let span = KeySpan::new(&compare.key, &compare.range_end);
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        let mut seen_any = false;
        let mut holds = true;
        read::visit_live(
            &self.history,
            &self.index,
            self.group,
            &span,
            self.revision,
            |key, mod_revision, record| {
                seen_any = true;
                if !compare_key_value(
                    compare,
                    target,
                    &read::key_value(key, mod_revision, &record),
                ) {
                    holds = false;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        )?;
        if !seen_any {
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_key_value(compare, target, &KeyValue::default()));
        }
        Ok(holds)
    }
}

fn compare_key_value(compare: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let ordering = match (target, &compare.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(value))) => {
            kv.value.as_slice().cmp(value.as_slice())
        }
        (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[]),
        (CompareTarget::Version, Some(TargetUnion::Version(version))) => kv.version.cmp(version),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(revision))) => {
            kv.create_revision.cmp(revision)
        }
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(revision))) => {
            kv.mod_revision.cmp(revision)
        }
        (CompareTarget::Lease, Some(TargetUnion::Lease(lease))) => kv.lease.cmp(lease),
        (CompareTarget::Version, _) => kv.version.cmp(&0),
        (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    match CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
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
