//! The replicated state machine of one group: applies committed log entries to the
//! MVCC store, and builds and installs snapshots.
//!
//! A batch of entries is applied in one redb transaction that also records
//! `last_applied`, so after a crash the store is exactly as of some applied entry and
//! openraft re-applies the rest from the durable log. The transaction itself is not
//! fsynced: the log already is, and a durable commit now and then (see
//! [`DURABLE_APPLY_INTERVAL`]) bounds how much of it a restart re-applies.

use std::path::PathBuf;
use std::sync::Arc;

use crate::database::Store;
use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
};
use prost::Message;
use redb::{Durability, ReadableTable, WriteTransaction};
use synod_proto::etcdserverpb::request_op::Request as TxnOp;
use synod_proto::etcdserverpb::TxnRequest;
use synod_proto::synodpb::apply_error::Kind as ApplyErrorKind;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::command_result::Result as Outcome;
use synod_proto::synodpb::{
    ApplyError, BatchResult, CommandResult as ResultMessage, Empty, MemberAttributes,
};
use tokio::sync::watch;

use crate::alarm;
use crate::codec::{decode, encode};
use crate::error::{StoreError, StoreResult};
use crate::limits::{
    DURABLE_APPLY_INTERVAL, DURABLE_APPLY_INTERVAL_MAX, DURABLE_APPLY_REVISIONS,
    INLINE_APPLY_COMMANDS_MAX, INLINE_APPLY_KEYS_MAX, SNAPSHOT_OPEN_ATTEMPTS,
};
use crate::mvcc::index::KeyIndex;
use crate::mvcc::span::KeySpan;
use crate::mvcc::{MvccError, MvccReader, MvccWriter};
use crate::snapshot::{self, SnapshotRecord};
use crate::tables::{sm_meta, MEMBERS, SM_META};
use crate::types::{
    CommandResult, Entry, GroupId, LogId, MemberNode, NodeId, SnapshotFile, StorageError,
    StoredMembership, TypeConfig,
};

/// How far the state machine has applied, published after every applied batch for
/// those who wait on it: watchers (new revisions) and the lease keeper (leases
/// granted or revoked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The index of the last log entry applied: what a read or a forwarded write
    /// waits for before it may answer from this member.
    pub log_index: u64,
    /// The store's current revision.
    pub revision: i64,
    /// The revision the store is compacted at.
    pub compacted: i64,
    /// Counts batches that granted or revoked a lease (or installed a snapshot)
    /// since this process started; a change means the lease table changed.
    pub lease_changes: u64,
}

/// The state machine of one group. Cheap to clone: clones share the database.
///
/// Its database must not hold the Raft log: applies commit without an fsync, and the
/// log must outlive them (see [`DURABLE_APPLY_INTERVAL`]).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Store>,
    group: GroupId,
    snapshot_dir: PathBuf,
    applied: Arc<watch::Sender<Applied>>,
    durable_commits: Arc<std::sync::Mutex<DurableCommits>>,
    /// How far the Raft log is on disk, when the log may acknowledge a leader's
    /// appends before flushing them (see [`StateMachine::wait_for_log`]).
    log_durable: Option<watch::Receiver<u64>>,
}

impl StateMachine {
    /// The state machine of `group` in `db`, keeping its snapshot files in
    /// `snapshot_dir` (a directory of its own: other files there are removed).
    pub fn new(db: Arc<Store>, group: GroupId, snapshot_dir: PathBuf) -> StoreResult<Self> {
        // Built now, before the member serves, rather than by the first apply.
        db.key_index(group)?;
        snapshot::remove_partial_files(&snapshot_dir)?;
        let (revision, compacted) = MvccReader::new(db.clone(), group).revisions()?;
        let (applied, _) = watch::channel(Applied {
            log_index: 0,
            revision,
            compacted,
            lease_changes: 0,
        });
        let state_machine = Self {
            db,
            group,
            snapshot_dir,
            applied: Arc::new(applied),
            durable_commits: Arc::new(std::sync::Mutex::new(DurableCommits {
                last: std::time::Instant::now(),
                last_revision: 0,
                running: None,
            })),
            log_durable: None,
        };
        let (last_applied, _) = state_machine.applied_state_sync()?;
        state_machine.applied.send_modify(|applied| {
            applied.log_index = last_applied.map_or(0, |log_id| log_id.index);
        });
        Ok(state_machine)
    }

    /// Applies an entry only once the Raft log has it on disk here, as `durable`
    /// reports. Needed with `LogStore::pipeline_leader_appends`: a leader may then
    /// see an entry committed before its own copy is flushed, and must not act on
    /// it (answer it, serve it) until then.
    pub fn wait_for_log(mut self, durable: watch::Receiver<u64>) -> Self {
        self.log_durable = Some(durable);
        self
    }

    /// Follows what the state machine applies.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.applied.subscribe()
    }

    /// Starts the periodic durable commit on the blocking pool if it is due and
    /// none is running, the store being at `revision`. The next apply's
    /// transaction waits for it in redb.
    fn start_durable_commit_if_due(&self, revision: i64) {
        let mut commits = crate::sync::lock(&self.durable_commits);
        let due = durable_commit_due(commits.last.elapsed(), revision - commits.last_revision);
        if commits.running.is_none() && due {
            commits.last = std::time::Instant::now();
            commits.last_revision = revision;
            let db = self.db.clone();
            commits.running = Some(tokio::task::spawn_blocking(move || db.sync()));
        }
    }

    /// Fails the apply if the last durable commit failed: the database can then
    /// no longer vouch for what it holds. Looks only at one that has finished,
    /// unless `wait`.
    async fn check_durable_commit(&self, wait: bool) -> Result<(), StorageError> {
        let finished = {
            let mut commits = crate::sync::lock(&self.durable_commits);
            commits
                .running
                .take_if(|running| wait || running.is_finished())
        };
        if let Some(finished) = finished {
            finished
                .await
                .map_err(|error| StoreError::from(error).write_state_machine())?
                .map_err(StoreError::write_state_machine)?;
        }
        Ok(())
    }

    fn publish(&self, log_index: u64, revision: i64, compacted: i64, leases_changed: bool) {
        self.applied.send_modify(|applied| {
            applied.log_index = applied.log_index.max(log_index);
            applied.revision = revision;
            applied.compacted = compacted;
            if leases_changed {
                applied.lease_changes += 1;
            }
        });
    }

    fn applied_state_sync(&self) -> StoreResult<(Option<LogId>, StoredMembership)> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(SM_META)?;
        let last_applied = match meta.get((self.group, sm_meta::LAST_APPLIED))? {
            Some(value) => decode(value.value())?,
            None => None,
        };
        let membership = match meta.get((self.group, sm_meta::LAST_MEMBERSHIP))? {
            Some(value) => decode(value.value())?,
            None => StoredMembership::default(),
        };
        Ok((last_applied, membership))
    }
}

/// What applying a batch produced: one result per entry, and the store's state
/// after it, for [`StateMachine::publish`].
struct AppliedBatch {
    results: Vec<CommandResult>,
    log_index: u64,
    revision: i64,
    compacted: i64,
    leases_changed: bool,
}

/// Whether `entries` are cheap enough to apply on the calling task: at most
/// [`INLINE_APPLY_COMMANDS_MAX`] commands, touching at most
/// [`INLINE_APPLY_KEYS_MAX`] keys of `index` in all. A compaction, a lease
/// revocation or a ranged delete of many keys can take seconds, and would stop
/// heartbeats with it.
fn applies_inline(entries: &[Entry], index: &KeyIndex) -> bool {
    let mut budget = InlineBudget {
        index,
        keys_left: INLINE_APPLY_KEYS_MAX,
    };
    let mut commands = 0;
    for entry in entries {
        if let EntryPayload::Normal(command) = &entry.payload {
            let op = command.message().op.as_ref();
            if !budget.affords_op(op) {
                return false;
            }
            commands += match op {
                Some(Op::Batch(batch)) => batch.commands.len(),
                _ => 1,
            };
        }
    }
    commands <= INLINE_APPLY_COMMANDS_MAX
}

/// What is left of the keys a batch applied inline may touch.
struct InlineBudget<'a> {
    index: &'a KeyIndex,
    keys_left: usize,
}

impl InlineBudget<'_> {
    /// Spends the keys `op` may touch, whichever branch a txn takes; false when
    /// they are more than is left, or not bounded at all.
    fn affords_op(&mut self, op: Option<&Op>) -> bool {
        match op {
            Some(Op::Put(put)) => self.affords(&put.key, &[]),
            Some(Op::DeleteRange(delete)) => self.affords(&delete.key, &delete.range_end),
            Some(Op::Txn(txn)) => self.affords_txn(txn),
            Some(Op::Batch(batch)) => batch
                .commands
                .iter()
                .all(|command| self.affords_op(command.op.as_ref())),
            Some(Op::LeaseGrant(_) | Op::MemberAttributes(_) | Op::Alarm(_)) | None => true,
            Some(Op::Compaction(_) | Op::LeaseRevoke(_)) => false,
        }
    }

    fn affords_txn(&mut self, txn: &TxnRequest) -> bool {
        txn.compare
            .iter()
            .all(|compare| self.affords(&compare.key, &compare.range_end))
            && txn
                .success
                .iter()
                .chain(&txn.failure)
                .all(|op| match &op.request {
                    Some(TxnOp::RequestRange(range)) => self.affords(&range.key, &range.range_end),
                    Some(TxnOp::RequestDeleteRange(delete)) => {
                        self.affords(&delete.key, &delete.range_end)
                    }
                    Some(TxnOp::RequestPut(put)) => self.affords(&put.key, &[]),
                    Some(TxnOp::RequestTxn(txn)) => self.affords_txn(txn),
                    None => true,
                })
    }

    /// Spends the keys of the span `key`..`range_end`.
    fn affords(&mut self, key: &[u8], range_end: &[u8]) -> bool {
        let keys = match KeySpan::new(key, range_end) {
            KeySpan::Single(_) => 1,
            span => self.index.count_up_to(&span, self.keys_left + 1),
        };
        match self.keys_left.checked_sub(keys) {
            Some(left) => {
                self.keys_left = left;
                true
            }
            None => false,
        }
    }
}

/// Whether a durable commit is due, `elapsed` after the last one started and
/// `revisions` later.
fn durable_commit_due(elapsed: std::time::Duration, revisions: i64) -> bool {
    elapsed >= DURABLE_APPLY_INTERVAL_MAX
        || (elapsed >= DURABLE_APPLY_INTERVAL && revisions >= DURABLE_APPLY_REVISIONS)
}

/// The periodic durable commit (see [`DURABLE_APPLY_INTERVAL`]).
struct DurableCommits {
    /// When the last one started.
    last: std::time::Instant,
    /// The store's revision when the last one started.
    last_revision: i64,
    /// The one running behind the applies, if any.
    running: Option<tokio::task::JoinHandle<StoreResult<()>>>,
}

/// Applies `entries` in `txn`, committed without an fsync.
fn apply_batch(
    db: &Store,
    txn: WriteTransaction,
    group: GroupId,
    entries: Vec<Entry>,
) -> StoreResult<AppliedBatch> {
    write_batch(db, txn, group, entries).inspect_err(|_| {
        // The writer updated the key index ahead of a commit that did not happen.
        if let Err(error) = db.reload_key_index(group) {
            tracing::error!(group, %error, "rebuilding the key index after a failed apply");
        }
    })
}

fn write_batch(
    db: &Store,
    mut txn: WriteTransaction,
    group: GroupId,
    entries: Vec<Entry>,
) -> StoreResult<AppliedBatch> {
    txn.set_durability(Durability::None)?;
    let mut results = Vec::with_capacity(entries.len());
    let mut last_applied = None;
    let mut last_membership = None;
    let mut leases_changed = false;
    let revision;
    let compacted;
    {
        let mut writer = MvccWriter::open(db, &txn, group)?;
        let mut no_space = alarm::no_space(&alarm::read(writer.meta(), group)?);
        for entry in entries {
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Empty(Empty {}),
                EntryPayload::Normal(command) => {
                    let outcome = apply_command(
                        &txn,
                        &mut writer,
                        group,
                        &mut no_space,
                        command.message().op.as_ref(),
                    )?;
                    leases_changed |= changes_leases(&outcome);
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    last_membership = Some(StoredMembership::new(Some(entry.log_id), membership));
                    Outcome::Empty(Empty {})
                }
            };
            results.push(CommandResult(ResultMessage {
                revision: writer.revision(),
                result: Some(outcome),
            }));
            last_applied = Some(entry.log_id);
        }
        revision = writer.revision();
        compacted = writer.compacted();
        let meta = writer.meta();
        if let Some(last_applied) = last_applied {
            meta.insert(
                (group, sm_meta::LAST_APPLIED),
                encode(&Some(last_applied))?.as_slice(),
            )?;
        }
        if let Some(membership) = last_membership {
            meta.insert(
                (group, sm_meta::LAST_MEMBERSHIP),
                encode(&membership)?.as_slice(),
            )?;
        }
        writer.save()?;
    }
    txn.commit()?;
    db.measure_file_size();
    Ok(AppliedBatch {
        results,
        log_index: last_applied.map_or(0, |log_id| log_id.index),
        revision,
        compacted,
        leases_changed,
    })
}

/// Applies one command. `no_space` says whether NOSPACE is raised: read once per
/// batch rather than per command, and kept in step with the batch's own alarms.
fn apply_command(
    txn: &WriteTransaction,
    writer: &mut MvccWriter<'_>,
    group: GroupId,
    no_space: &mut bool,
    op: Option<&Op>,
) -> StoreResult<Outcome> {
    if let Some(op) = op {
        if *no_space && alarm::capped(op) {
            return Ok(Outcome::Error(ApplyError {
                kind: ApplyErrorKind::NoSpace as i32,
            }));
        }
    }
    let outcome = match op {
        Some(Op::Batch(batch)) => {
            let mut results = Vec::with_capacity(batch.commands.len());
            for command in &batch.commands {
                let outcome = apply_command(txn, writer, group, no_space, command.op.as_ref())?;
                results.push(ResultMessage {
                    revision: writer.revision(),
                    result: Some(outcome),
                });
            }
            return Ok(Outcome::Batch(BatchResult { results }));
        }
        Some(Op::Alarm(request)) => {
            let (response, alarms) = alarm::apply(writer.meta(), group, request)?;
            *no_space = alarm::no_space(&alarms);
            return Ok(Outcome::Alarm(response));
        }
        Some(Op::Put(request)) => writer.put(request).map(Outcome::Put),
        Some(Op::DeleteRange(request)) => writer.delete_range(request).map(Outcome::DeleteRange),
        Some(Op::Txn(request)) => writer.txn(request).map(Outcome::Txn),
        Some(Op::Compaction(request)) => writer.compact(request).map(Outcome::Compaction),
        Some(Op::LeaseGrant(request)) => writer.lease_grant(request).map(Outcome::LeaseGrant),
        Some(Op::LeaseRevoke(request)) => writer.lease_revoke(request).map(Outcome::LeaseRevoke),
        Some(Op::MemberAttributes(attributes)) => {
            save_member_attributes(txn, group, attributes)?;
            Ok(Outcome::Empty(Empty {}))
        }
        None => Ok(Outcome::Empty(Empty {})),
    };
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(MvccError::Store(error)) => Err(error),
        Err(refusal) => Ok(Outcome::Error(ApplyError {
            kind: refusal.apply_error_kind().map_or(0, |kind| kind as i32),
        })),
    }
}

/// Whether applying produced a lease grant or revocation (the lease keeper's cue).
fn changes_leases(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::LeaseGrant(_) | Outcome::LeaseRevoke(_) => true,
        Outcome::Batch(batch) => batch
            .results
            .iter()
            .filter_map(|result| result.result.as_ref())
            .any(changes_leases),
        _ => false,
    }
}

/// Stores `attributes` over what is known of the member: empty fields keep the
/// stored ones, and a voter stays marked as one (see `MemberAttributes`).
fn save_member_attributes(
    txn: &WriteTransaction,
    group: GroupId,
    attributes: &MemberAttributes,
) -> StoreResult<()> {
    let mut table = txn.open_table(MEMBERS)?;
    let key = (group, attributes.member_id);
    let stored = match table.get(key)? {
        Some(value) => MemberAttributes::decode(value.value())
            .map_err(|error| StoreError::Corrupt(format!("member attributes: {error}")))?,
        None => MemberAttributes::default(),
    };
    let merged = MemberAttributes {
        member_id: attributes.member_id,
        name: if attributes.name.is_empty() {
            stored.name
        } else {
            attributes.name.clone()
        },
        client_urls: if attributes.client_urls.is_empty() {
            stored.client_urls
        } else {
            attributes.client_urls.clone()
        },
        voter: stored.voter || attributes.voter,
    };
    table.insert(key, merged.encode_to_vec().as_slice())?;
    Ok(())
}

/// The attributes members have published, by member id.
pub fn member_attributes(db: &Store, group: GroupId) -> StoreResult<Vec<MemberAttributes>> {
    let txn = db.begin_read()?;
    let table = txn.open_table(MEMBERS)?;
    let mut members = Vec::new();
    for row in table.range((group, 0)..=(group, u64::MAX))? {
        let (_, value) = row?;
        members.push(
            MemberAttributes::decode(value.value())
                .map_err(|error| StoreError::Corrupt(format!("member attributes: {error}")))?,
        );
    }
    Ok(members)
}

fn snapshot_meta(record: &SnapshotRecord) -> SnapshotMeta<NodeId, MemberNode> {
    SnapshotMeta {
        last_log_id: record.last_log_id,
        last_membership: record.last_membership.clone(),
        snapshot_id: record.id.clone(),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let group = self.group;
        let dir = self.snapshot_dir.clone();
        // The log is purged behind the snapshot once this returns, so everything
        // it covers must be durable by then: a restart re-applies only what the log
        // still holds.
        let record = tokio::task::spawn_blocking(move || {
            let record = snapshot::build(&db, group, &dir)?;
            db.sync()?;
            Ok::<_, StoreError>(record)
        })
        .await
        .map_err(|error| StoreError::from(error).snapshot(ErrorVerb::Write))?
        .map_err(|error| error.snapshot(ErrorVerb::Write))?;
        let file = tokio::fs::File::open(snapshot::snapshot_path(&self.snapshot_dir, &record.id))
            .await
            .map_err(|error| StoreError::from(error).snapshot(ErrorVerb::Read))?;
        Ok(Snapshot {
            meta: snapshot_meta(&record),
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.applied_state_sync()
            .map_err(StoreError::read_state_machine)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (&mut self.log_durable, entries.last()) {
            let index = last.log_id.index;
            durable
                .wait_for(|durable| *durable >= index)
                .await
                .map_err(|_| {
                    StoreError::Corrupt(
                        "the Raft log stopped before flushing an entry to apply".into(),
                    )
                    .write_state_machine()
                })?;
        }
        self.check_durable_commit(false).await?;
        let db = self.db.clone();
        let group = self.group;
        // A small batch touching few keys is applied right here: handing it to
        // the blocking pool and back costs two thread wake-ups, more than
        // applying it. Any other goes to the pool, where it runs beside the
        // network work of this task's thread, as does any batch that would wait
        // for redb's write lock (held by a durable commit, a snapshot or a
        // defragmentation): this task's thread must never block on it.
        let index = db
            .key_index(group)
            .map_err(StoreError::write_state_machine)?;
        let cheap = applies_inline(&entries, &crate::sync::read(&index));
        let inline = if cheap {
            db.try_begin_write()
                .map_err(|error| StoreError::from(error).write_state_machine())?
        } else {
            None
        };
        let batch = match inline {
            Some(txn) => apply_batch(&db, txn, group, entries),
            None => tokio::task::spawn_blocking(move || {
                let txn = db.begin_write()?;
                apply_batch(&db, txn, group, entries)
            })
            .await
            .map_err(|error| StoreError::from(error).write_state_machine())?,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                // A durable commit that failed under this apply (the disk is full,
                // say) leaves redb answering only "previous I/O error": its own
                // error is the cause worth reporting.
                self.check_durable_commit(true).await?;
                return Err(StoreError::write_state_machine(error));
            }
        };
        self.publish(
            batch.log_index,
            batch.revision,
            batch.compacted,
            batch.leases_changed,
        );
        self.start_durable_commit_if_due(batch.revision);
        Ok(batch.results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let dir = self.snapshot_dir.clone();
        let file = tokio::task::spawn_blocking(move || -> StoreResult<std::fs::File> {
            std::fs::create_dir_all(&dir)?;
            Ok(tempfile::tempfile_in(&dir)?)
        })
        .await
        .map_err(|error| StoreError::from(error).snapshot(ErrorVerb::Write))?
        .map_err(|error| error.snapshot(ErrorVerb::Write))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MemberNode>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let record = SnapshotRecord {
            id: meta.snapshot_id.clone(),
            last_log_id: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
        };
        let mut file = snapshot.into_std().await;
        let db = self.db.clone();
        let group = self.group;
        let dir = self.snapshot_dir.clone();
        let id = record.id.clone();
        tokio::task::spawn_blocking(move || {
            snapshot::install(&db, group, &dir, &mut file, &record)
        })
        .await
        .map_err(|error| StoreError::from(error).snapshot(ErrorVerb::Write))?
        .map_err(|error| error.snapshot(ErrorVerb::Write))?;
        tracing::info!(group, snapshot = %id, "installed snapshot from leader");
        let (revision, compacted) = MvccReader::new(self.db.clone(), self.group)
            .revisions()
            .map_err(StoreError::read_state_machine)?;
        let log_index = meta.last_log_id.map_or(0, |log_id| log_id.index);
        self.publish(log_index, revision, compacted, true);
        Ok(())
    }

    /// The current snapshot, opened. A snapshot built or installed meanwhile
    /// replaces the record and removes the file it named, so a file gone between
    /// reading the record and opening it means the record is out of date: it is
    /// read again.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let mut attempts = 0;
        loop {
            let record = snapshot::current(&self.db, self.group)
                .map_err(|error| error.snapshot(ErrorVerb::Read))?;
            let Some(record) = record else {
                return Ok(None);
            };
            let path = snapshot::snapshot_path(&self.snapshot_dir, &record.id);
            match tokio::fs::File::open(path).await {
                Ok(file) => {
                    return Ok(Some(Snapshot {
                        meta: snapshot_meta(&record),
                        snapshot: Box::new(file),
                    }))
                }
                Err(error)
                    if error.kind() == std::io::ErrorKind::NotFound
                        && attempts < SNAPSHOT_OPEN_ATTEMPTS =>
                {
                    attempts += 1;
                }
                Err(error) => return Err(StoreError::from(error).snapshot(ErrorVerb::Read)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, Instant};

    use openraft::CommittedLeaderId;
    use synod_proto::etcdserverpb::PutRequest;

    use super::*;
    use crate::database::open_database;
    use crate::limits::DEFAULT_CACHE_BYTES;
    use crate::mvcc::index::Version;
    use crate::types::Command;

    /// `op` as the log entry at `index`.
    fn entry(index: u64, op: Op) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::new(synod_proto::synodpb::Command {
                op: Some(op),
            })),
        }
    }

    #[test]
    fn a_durable_commit_waits_for_enough_writes_or_the_longest_interval() {
        let ms = Duration::from_millis;
        assert!(
            !durable_commit_due(ms(50), 1_000_000),
            "before the interval"
        );
        assert!(durable_commit_due(ms(100), DURABLE_APPLY_REVISIONS));
        assert!(!durable_commit_due(ms(500), DURABLE_APPLY_REVISIONS - 1));
        assert!(durable_commit_due(ms(1_000), 1));
    }

    fn put(key: &[u8]) -> Op {
        Op::Put(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn only_small_batches_of_few_keys_apply_inline() {
        let mut index = KeyIndex::default();
        for (main, key) in [b"a/1", b"a/2", b"a/3", b"a/4", b"a/5"]
            .into_iter()
            .enumerate()
        {
            index.insert(key, Version::new(main as i64 + 2, 0, false).unwrap());
        }
        for main in 5..105 {
            let key = format!("b/{main}");
            index.insert(key.as_bytes(), Version::new(main, 0, false).unwrap());
        }
        let puts: Vec<Entry> = (1..=16).map(|index| entry(index, put(b"k"))).collect();
        assert!(applies_inline(&puts, &index));
        let too_many: Vec<Entry> = (1..=17).map(|index| entry(index, put(b"k"))).collect();
        assert!(!applies_inline(&too_many, &index));
        let read = |key: &[u8], range_end: &[u8]| {
            Op::Txn(TxnRequest {
                failure: vec![synod_proto::etcdserverpb::RequestOp {
                    request: Some(TxnOp::RequestRange(
                        synod_proto::etcdserverpb::RangeRequest {
                            key: key.to_vec(),
                            range_end: range_end.to_vec(),
                            ..Default::default()
                        },
                    )),
                }],
                ..Default::default()
            })
        };
        assert!(applies_inline(&[entry(1, read(b"k", b""))], &index));
        // A prefix of five keys is cheap; one of a hundred is not.
        assert!(applies_inline(
            &[entry(1, put(b"k")), entry(2, read(b"a/", b"a0"))],
            &index
        ));
        assert!(!applies_inline(
            &[entry(1, put(b"k")), entry(2, read(b"b/", b"b0"))],
            &index
        ));
        // Keys add up over the batch.
        let prefix_reads: Vec<Entry> = (1..=16).map(|n| entry(n, read(b"a/", b"a0"))).collect();
        assert!(applies_inline(&prefix_reads[..12], &index));
        assert!(!applies_inline(&prefix_reads[..13], &index));
        let compaction = Op::Compaction(synod_proto::etcdserverpb::CompactionRequest {
            revision: 5,
            physical: false,
        });
        assert!(!applies_inline(&[entry(1, compaction)], &index));
    }

    /// The member's Raft core and network share the thread an apply runs on: an
    /// apply that finds redb's write lock taken (by a durable commit, a snapshot,
    /// a defragmentation) must wait elsewhere, or heartbeats stop with it.
    #[tokio::test(flavor = "current_thread")]
    async fn an_apply_waiting_for_the_write_lock_leaves_its_thread_free() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db.redb"), DEFAULT_CACHE_BYTES).unwrap();
        let mut state_machine =
            StateMachine::new(db.clone(), 0, dir.path().join("snapshots")).unwrap();
        let held = db.begin_write().unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            drop(held);
        });
        let started = Instant::now();
        let apply = tokio::spawn(async move { state_machine.apply([entry(1, put(b"k"))]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ticked = started.elapsed();
        let results = apply.await.unwrap().unwrap();
        holder.join().unwrap();
        assert!(
            ticked < Duration::from_secs(1),
            "the apply held the task thread for {ticked:?}"
        );
        assert_eq!(results.len(), 1);
    }

    /// Snapshots may be built while one is read and while another is built or
    /// installed: the newest stays current, a build that finishes late gives way,
    /// and no build's partial file is taken from under it.
    #[tokio::test(flavor = "current_thread")]
    async fn the_newest_snapshot_stays_current_whatever_finishes_last() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join("snapshots");
        let db = open_database(&dir.path().join("db.redb"), DEFAULT_CACHE_BYTES).unwrap();
        let mut state_machine = StateMachine::new(db.clone(), 0, snapshots.clone()).unwrap();
        state_machine.apply([entry(1, put(b"a"))]).await.unwrap();
        let older = snapshot::build(&db, 0, &snapshots).unwrap();
        state_machine.apply([entry(2, put(b"b"))]).await.unwrap();
        let building = snapshots.join("under-way.partial");
        std::fs::write(&building, b"a build under way").unwrap();
        let newer = snapshot::build(&db, 0, &snapshots).unwrap();
        assert!(
            building.exists(),
            "a build's partial file was removed under it"
        );
        assert!(!snapshot::snapshot_path(&snapshots, &older.id).exists());

        // The older build finishing last does not replace the newer snapshot.
        std::fs::write(snapshot::snapshot_path(&snapshots, &older.id), b"late").unwrap();
        snapshot::set_current(&db, 0, &snapshots, &older).unwrap();
        let current_record = snapshot::current(&db, 0).unwrap().unwrap();
        assert_eq!(current_record.id, newer.id);
        assert!(!snapshot::snapshot_path(&snapshots, &older.id).exists());
        let current = state_machine.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.snapshot_id, newer.id);
    }

    fn save(db: &Store, attributes: MemberAttributes) {
        let txn = db.begin_write().unwrap();
        save_member_attributes(&txn, 0, &attributes).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn published_attributes_keep_the_voter_mark() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db.redb"), DEFAULT_CACHE_BYTES).unwrap();
        save(
            &db,
            MemberAttributes {
                member_id: 7,
                voter: true,
                ..Default::default()
            },
        );
        save(
            &db,
            MemberAttributes {
                member_id: 7,
                name: "m3".into(),
                client_urls: vec!["http://127.0.0.1:1".into()],
                voter: false,
            },
        );
        save(
            &db,
            MemberAttributes {
                member_id: 7,
                ..Default::default()
            },
        );
        assert_eq!(
            member_attributes(&db, 0).unwrap(),
            [MemberAttributes {
                member_id: 7,
                name: "m3".into(),
                client_urls: vec!["http://127.0.0.1:1".into()],
                voter: true,
            }]
        );
    }
}
