//! The Raft log and hard state of one group, in redb.
//!
//! Appends, truncations and vote changes commit with `Durability::Immediate` (an
//! fsync) before openraft is told they are done: that is what makes an acknowledged
//! write survive a crash.
//!
//! Group commit: every write goes to one writer thread, which takes all the writes
//! queued while it was busy and commits them in one transaction — one fsync for many
//! appends. An append returns as soon as its entries are queued (openraft learns of
//! durability through its callback), so Raft keeps replicating while the disk
//! syncs; until committed, queued entries are served to readers from memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use crate::database::Store;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};
use redb::Durability;

use crate::codec::{decode, encode};
use crate::error::{StoreError, StoreResult};
use crate::tables::{raft_meta, RAFT_LOG, RAFT_META};
use crate::types::{Entry, GroupId, LogId, NodeId, StorageError, TypeConfig};

/// Most queued writes committed in one transaction.
const WRITES_PER_COMMIT_MAX: usize = 4096;

/// The log store of one Raft group. Cheap to clone: clones share the database, the
/// writer thread and the entries not yet committed.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Store>,
    group: GroupId,
    writes: mpsc::Sender<LogWrite>,
    /// Appended entries the writer has not committed yet, by index.
    unflushed: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

/// A change to one transaction's worth of tables.
type TableWrite = Box<dyn FnOnce(&redb::WriteTransaction, GroupId) -> StoreResult<()> + Send>;

/// A write queued for the writer thread.
enum LogWrite {
    /// Entries to append; `done` tells openraft once they are durable.
    Append {
        rows: Vec<(LogId, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    /// Any other change; `done` answers once it is committed.
    Other {
        durability: Durability,
        write: TableWrite,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
}

impl LogStore {
    /// Opens the log of `group` in `db` and starts its writer thread.
    pub fn new(db: Arc<Store>, group: GroupId) -> Self {
        let (writes, queue) = mpsc::channel();
        let unflushed = Arc::new(Mutex::new(BTreeMap::new()));
        let writer = Writer {
            db: db.clone(),
            group,
            queue,
            unflushed: unflushed.clone(),
        };
        // If the thread cannot start, every write reports the writer gone.
        let _ = std::thread::Builder::new()
            .name(format!("synod-log-{group}"))
            .spawn(move || writer.run());
        Self {
            db,
            group,
            writes,
            unflushed,
        }
    }

    fn unflushed(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        lock(&self.unflushed)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> StoreResult<Option<T>> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(RAFT_META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        match table.get((self.group, name))? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Ok(None),
        }
    }

    /// Queues `write` for the writer thread; the receiver learns when it is
    /// committed.
    fn queue<F>(
        &self,
        durability: Durability,
        write: F,
    ) -> StoreResult<tokio::sync::oneshot::Receiver<Result<(), String>>>
    where
        F: FnOnce(&redb::WriteTransaction, GroupId) -> StoreResult<()> + Send + 'static,
    {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.writes
            .send(LogWrite::Other {
                durability,
                write: Box::new(write),
                done,
            })
            .map_err(|_| writer_gone())?;
        Ok(outcome)
    }

    /// Has the writer thread commit `write` and waits until it has.
    async fn write<F>(&self, durability: Durability, write: F) -> StoreResult<()>
    where
        F: FnOnce(&redb::WriteTransaction, GroupId) -> StoreResult<()> + Send + 'static,
    {
        self.queue(durability, write)?
            .await
            .map_err(|_| writer_gone())?
            .map_err(StoreError::Corrupt)
    }

    fn read_entries<RB: RangeBounds<u64>>(&self, range: RB) -> StoreResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(index) => Bound::Included((self.group, *index)),
            Bound::Excluded(index) => Bound::Excluded((self.group, *index)),
            Bound::Unbounded => Bound::Included((self.group, u64::MAX)),
        };
        // Unflushed entries first: the writer removes them only after committing
        // them, so an entry is always in one place or the other for this reader.
        let unflushed: Vec<Entry> = {
            let pending = self.unflushed();
            let upper = match end {
                Bound::Included((_, index)) => Bound::Included(index),
                Bound::Excluded((_, index)) => Bound::Excluded(index),
                Bound::Unbounded => Bound::Unbounded,
            };
            pending
                .range((Bound::Included(start), upper))
                .map(|(_, entry)| entry.clone())
                .collect()
        };
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RAFT_LOG)?;
        let mut entries = BTreeMap::new();
        for row in table.range::<(u64, u64)>((Bound::Included((self.group, start)), end))? {
            let (key, value) = row?;
            entries.insert(key.value().1, decode::<Entry>(value.value())?);
        }
        for entry in unflushed {
            entries.insert(entry.log_id.index, entry);
        }
        Ok(entries.into_values().collect())
    }

    fn last_entry_log_id(&self) -> StoreResult<Option<LogId>> {
        if let Some((_, entry)) = self.unflushed().last_key_value() {
            return Ok(Some(entry.log_id));
        }
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(RAFT_LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let last = table
            .range((self.group, 0)..=(self.group, u64::MAX))?
            .next_back()
            .transpose()?;
        match last {
            Some((_, value)) => {
                let entry: Entry = decode(value.value())?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(range).map_err(StoreError::read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self
            .read_meta(raft_meta::LAST_PURGED)
            .map_err(StoreError::read_logs)?;
        let last_log_id = self
            .last_entry_log_id()
            .map_err(StoreError::read_logs)?
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(StoreError::write_vote)?;
        self.write(Durability::Immediate, move |txn, group| {
            txn.open_table(RAFT_META)?
                .insert((group, raft_meta::VOTE), bytes.as_slice())?;
            Ok(())
        })
        .await
        .map_err(StoreError::write_vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(raft_meta::VOTE)
            .map_err(StoreError::read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode(&committed).map_err(StoreError::write_logs)?;
        // The committed index is a hint that speeds up restart; it becomes durable with
        // the next fsynced append, and losing it only delays re-applying the log. So
        // it is queued behind the appends without waiting: Raft moves on at once.
        self.queue(Durability::None, move |txn, group| {
            txn.open_table(RAFT_META)?
                .insert((group, raft_meta::COMMITTED), bytes.as_slice())?;
            Ok(())
        })
        .map(drop)
        .map_err(StoreError::write_logs)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(raft_meta::COMMITTED)
            .map_err(StoreError::read_logs)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        {
            let mut unflushed = self.unflushed();
            for entry in entries {
                let bytes = encode(&entry).map_err(StoreError::write_logs)?;
                rows.push((entry.log_id, bytes));
                unflushed.insert(entry.log_id.index, entry);
            }
        }
        self.writes
            .send(LogWrite::Append {
                rows,
                done: callback,
            })
            .map_err(|_| writer_gone().write_logs())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.unflushed().split_off(&from);
        self.write(Durability::Immediate, move |txn, group| {
            let mut table = txn.open_table(RAFT_LOG)?;
            table.retain_in((group, from)..=(group, u64::MAX), |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(StoreError::write_logs)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let upto = log_id.index;
        self.unflushed().retain(|index, _| *index > upto);
        let bytes = encode(&log_id).map_err(StoreError::write_logs)?;
        self.write(Durability::Immediate, move |txn, group| {
            txn.open_table(RAFT_META)?
                .insert((group, raft_meta::LAST_PURGED), bytes.as_slice())?;
            let mut table = txn.open_table(RAFT_LOG)?;
            table.retain_in((group, 0)..=(group, upto), |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(StoreError::write_logs)
    }
}

fn writer_gone() -> StoreError {
    StoreError::Task("the log writer thread has stopped".into())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The thread that commits a group's log writes, many per transaction.
struct Writer {
    db: Arc<Store>,
    group: GroupId,
    queue: mpsc::Receiver<LogWrite>,
    unflushed: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

impl Writer {
    fn run(self) {
        while let Ok(first) = self.queue.recv() {
            let mut batch = vec![first];
            while batch.len() < WRITES_PER_COMMIT_MAX {
                match self.queue.try_recv() {
                    Ok(write) => batch.push(write),
                    Err(_) => break,
                }
            }
            let outcome = self.commit(&mut batch);
            self.report(batch, outcome);
        }
    }

    /// Commits every write of `batch` in one transaction, fsynced if any needs it.
    /// The table changes are taken out of the batch; what is left answers.
    fn commit(&self, batch: &mut [LogWrite]) -> Result<(), String> {
        let mut run = || -> StoreResult<()> {
            let mut txn = self.db.begin_write()?;
            let durable = batch.iter().any(|write| match write {
                LogWrite::Append { .. } => true,
                LogWrite::Other { durability, .. } => !matches!(durability, Durability::None),
            });
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })?;
            for write in batch.iter_mut() {
                match write {
                    LogWrite::Append { rows, .. } => {
                        let mut table = txn.open_table(RAFT_LOG)?;
                        for (log_id, bytes) in rows.iter() {
                            table.insert((self.group, log_id.index), bytes.as_slice())?;
                        }
                    }
                    LogWrite::Other { write, .. } => {
                        let write = std::mem::replace(write, Box::new(|_, _| Ok(())));
                        write(&txn, self.group)?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        };
        run().map_err(|error| error.to_string())
    }

    fn report(&self, batch: Vec<LogWrite>, outcome: Result<(), String>) {
        if outcome.is_ok() {
            let mut unflushed = lock(&self.unflushed);
            for write in &batch {
                if let LogWrite::Append { rows, .. } = write {
                    for (log_id, _) in rows {
                        if unflushed.get(&log_id.index).map(|entry| entry.log_id) == Some(*log_id) {
                            unflushed.remove(&log_id.index);
                        }
                    }
                }
            }
        }
        for write in batch {
            match write {
                LogWrite::Append { done, .. } => {
                    done.log_io_completed(outcome.clone().map_err(std::io::Error::other))
                }
                LogWrite::Other { done, .. } => {
                    let _ = done.send(outcome.clone());
                }
            }
        }
    }
}
