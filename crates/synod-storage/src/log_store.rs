//! The Raft log and hard state of one group, in redb.
//!
//! Appends, truncations and vote changes commit with `Durability::Immediate` (an
//! fsync) before openraft is told they are done: that is what makes an acknowledged
//! write survive a crash. Writes run on the blocking pool so an fsync never stalls the
//! async runtime.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};
use redb::{Database, Durability, ReadableDatabase};

use crate::codec::{decode, encode};
use crate::error::{StoreError, StoreResult};
use crate::tables::{raft_meta, RAFT_LOG, RAFT_META};
use crate::types::{Entry, GroupId, LogId, NodeId, StorageError, TypeConfig};

/// The log store of one Raft group. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    group: GroupId,
}

impl LogStore {
    /// Opens the log of `group` in `db`.
    pub fn new(db: Arc<Database>, group: GroupId) -> Self {
        Self { db, group }
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

    /// Runs `write` in one write transaction on the blocking pool and commits it.
    async fn write<F>(&self, durability: Durability, write: F) -> StoreResult<()>
    where
        F: FnOnce(&redb::WriteTransaction, GroupId) -> StoreResult<()> + Send + 'static,
    {
        let db = self.db.clone();
        let group = self.group;
        tokio::task::spawn_blocking(move || {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            write(&txn, group)?;
            txn.commit()?;
            Ok(())
        })
        .await?
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
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(RAFT_LOG) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut entries = Vec::new();
        for row in table.range::<(u64, u64)>((Bound::Included((self.group, start)), end))? {
            let (_, value) = row?;
            entries.push(decode(value.value())?);
        }
        Ok(entries)
    }

    fn last_entry_log_id(&self) -> StoreResult<Option<LogId>> {
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
        // the next fsynced append, and losing it only delays re-applying the log.
        self.write(Durability::None, move |txn, group| {
            txn.open_table(RAFT_META)?
                .insert((group, raft_meta::COMMITTED), bytes.as_slice())?;
            Ok(())
        })
        .await
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
        for entry in entries {
            let bytes = encode(&entry).map_err(StoreError::write_logs)?;
            rows.push((entry.log_id.index, bytes));
        }
        let result = self
            .write(Durability::Immediate, move |txn, group| {
                let mut table = txn.open_table(RAFT_LOG)?;
                for (index, bytes) in &rows {
                    table.insert((group, *index), bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error.write_logs())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
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
