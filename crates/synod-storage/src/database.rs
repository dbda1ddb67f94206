//! A node's database: one redb file per node, every table created up front so readers
//! never meet a missing table, behind a handle that can swap the file for a compacted
//! copy while the node keeps running (etcd's Defragment).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, Value, WriteTransaction,
};

use crate::error::{StoreError, StoreResult};
use crate::mvcc::index::KeyIndex;
use crate::mvcc::record::encode_version;
use crate::partial_file::PartialFile;
use crate::tables::{
    legacy, read_counter, sm_meta, HISTORY, IDENTITY, LEASES, LEASE_KEYS, MEMBERS, SM_META,
};
use crate::types::GroupId;

/// File name of the database inside the data dir: the store, its history, leases,
/// members and identity.
pub const DATABASE_FILE: &str = "synod.redb";

/// File name of the Raft log's database in the data dirs of synod before the log
/// became a write-ahead log of its own; such a data dir is refused, not misread.
pub const LEGACY_LOG_DATABASE_FILE: &str = "raft-log.redb";

/// Directory of the Raft logs inside the data dir, one subdirectory per group.
pub const LOG_DIR: &str = "wal";

/// redb's page size: 4 KiB, which only redb's own tests can change.
const PAGE_BYTES: u64 = 4096;

/// Suffix of the compacted copy a defragmentation writes before it replaces the file.
const DEFRAG_SUFFIX: &str = "defrag";

/// A node's database. Transactions begin through it rather than on a `redb::Database`
/// so that [`Store::defragment`] can replace the file underneath: a write transaction
/// begun on the replaced file is abandoned and begun again on the new one.
pub struct Store {
    path: PathBuf,
    cache_bytes: usize,
    current: RwLock<Arc<Database>>,
    /// The key index of each group, built from the database when first asked for.
    indexes: Mutex<HashMap<GroupId, Arc<RwLock<KeyIndex>>>>,
    /// The file's size as of the last commit that could change it: every write
    /// request checks it against the quota, and asking the file system each time
    /// would cost a system call per request.
    file_bytes: AtomicU64,
}

/// Runs `$body` once for each table of the database, with `$table` bound to its
/// definition: the one list of tables that creating, measuring and copying the
/// database all follow, so a new table cannot be left out of one of them. (A
/// macro, as the definitions differ in type.)
macro_rules! for_each_table {
    (|$table:ident| $body:expr) => {
        for_each_table!(@each $table, $body, HISTORY, SM_META, MEMBERS, IDENTITY, LEASES, LEASE_KEYS)
    };
    (@each $table:ident, $body:expr, $($definition:ident),*) => {{
        $({
            let $table = $definition;
            $body;
        })*
    }};
}

/// Opens (or creates) the database at `path`, with a page cache of `cache_bytes`,
/// and makes sure every table exists.
pub fn open_database(path: &Path, cache_bytes: usize) -> StoreResult<Arc<Store>> {
    // A defragmentation that crashed before its rename leaves its copy behind; the
    // original is intact, so the copy is garbage.
    let leftover = defrag_path(path);
    if leftover.exists() {
        fs::remove_file(&leftover)?;
    }
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)?;
    create_tables(&db)?;
    move_legacy_history(&db)?;
    let store = Store {
        path: path.to_path_buf(),
        cache_bytes,
        current: RwLock::new(Arc::new(db)),
        indexes: Mutex::new(HashMap::new()),
        file_bytes: AtomicU64::new(0),
    };
    store.measure_file_size();
    Ok(Arc::new(store))
}

/// Moves the versions of a database written before the history was kept in
/// revision order (a key-ordered table plus a revision → key table) into
/// [`HISTORY`], in one durable transaction, and drops the old tables.
fn move_legacy_history(db: &Database) -> StoreResult<()> {
    let mut txn = db.begin_write()?;
    let legacy_present = txn
        .list_tables()?
        .any(|table| table.name() == legacy::REVISIONS.name());
    if !legacy_present {
        txn.abort()?;
        return Ok(());
    }
    txn.set_durability(Durability::Immediate)?;
    let mut moved = 0u64;
    {
        let revisions = txn.open_table(legacy::REVISIONS)?;
        let kv = txn.open_table(legacy::KV)?;
        let mut history = txn.open_table(HISTORY)?;
        let mut row = Vec::new();
        for entry in revisions.iter()? {
            let (revision, key) = entry?;
            let (group, main, sub) = revision.value();
            let key = key.value();
            let record = kv.get((group, key, main, sub))?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "revision {main}.{sub} names a key version that is missing"
                ))
            })?;
            encode_version(key, record.value(), &mut row)?;
            history.insert((group, main, sub), row.as_slice())?;
            moved += 1;
        }
    }
    txn.delete_table(legacy::KV)?;
    txn.delete_table(legacy::REVISIONS)?;
    txn.commit()?;
    tracing::info!(
        versions = moved,
        "moved the key versions into revision order"
    );
    Ok(())
}

fn create_tables(db: &Database) -> StoreResult<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    for_each_table!(|table| {
        txn.open_table(table)?;
    });
    txn.commit()?;
    Ok(())
}

fn defrag_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(DEFRAG_SUFFIX);
    PathBuf::from(name)
}

/// Sizes of the database file, as etcd's Status reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSize {
    /// Bytes the file takes.
    pub file_bytes: u64,
    /// Bytes of pages holding live data (the rest is free space a defragmentation
    /// would give back).
    pub in_use_bytes: u64,
}

impl Store {
    fn database(&self) -> Arc<Database> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Begins a read of the database as it is now.
    pub fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        self.database().begin_read()
    }

    /// Begins the write transaction on the current file if no other is in
    /// progress; `None` where [`Store::begin_write`] would wait, so an async task
    /// can hand the work to a thread that may block instead.
    pub fn try_begin_write(&self) -> Result<Option<WriteTransaction>, redb::TransactionError> {
        let db = self.database();
        match db.try_begin_write() {
            Ok(txn) if Arc::ptr_eq(&db, &self.database()) => Ok(Some(txn)),
            Ok(txn) => {
                txn.abort()?;
                Ok(None)
            }
            Err(redb::TransactionError::WouldBlock) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Begins the (single) write transaction, on the current file.
    pub fn begin_write(&self) -> Result<WriteTransaction, redb::TransactionError> {
        loop {
            let db = self.database();
            let txn = db.begin_write()?;
            // A defragmentation holds the write lock of the old file while it copies;
            // a writer that waited on it must not write into the file it replaced.
            if Arc::ptr_eq(&db, &self.database()) {
                return Ok(txn);
            }
            txn.abort()?;
        }
    }

    /// The key index of `group`, shared by its writer and its readers; the first
    /// call builds it from the database (about a second per million versions).
    pub fn key_index(&self, group: GroupId) -> StoreResult<Arc<RwLock<KeyIndex>>> {
        let mut indexes = crate::sync::lock(&self.indexes);
        if let Some(index) = indexes.get(&group) {
            return Ok(index.clone());
        }
        let index = Arc::new(RwLock::new(self.load_key_index(group)?));
        indexes.insert(group, index.clone());
        Ok(index)
    }

    /// Rebuilds the key index of `group` from the database, after a write that had
    /// updated the index failed to commit.
    pub fn reload_key_index(&self, group: GroupId) -> StoreResult<()> {
        self.replace_group(group, || Ok(()))
    }

    /// Runs `replace`, which rewrites `group`'s data wholesale (a snapshot install or
    /// a restore), with the group's key index locked, and rebuilds the index from
    /// the database before any reader sees it again.
    pub fn replace_group<R>(
        &self,
        group: GroupId,
        replace: impl FnOnce() -> StoreResult<R>,
    ) -> StoreResult<R> {
        let index = self.key_index(group)?;
        let mut index = crate::sync::write(&index);
        let replaced = replace();
        self.measure_file_size();
        *index = self.load_key_index(group)?;
        replaced
    }

    fn load_key_index(&self, group: GroupId) -> StoreResult<KeyIndex> {
        let started = Instant::now();
        let txn = self.begin_read()?;
        let compacted = read_counter(&txn.open_table(SM_META)?, group, sm_meta::COMPACT_REVISION)?;
        let index = KeyIndex::load(&txn.open_table(HISTORY)?, group, compacted)?;
        if !index.is_empty() {
            tracing::info!(
                group,
                keys = index.len(),
                elapsed = ?started.elapsed(),
                "built the key index"
            );
        }
        Ok(index)
    }

    /// Makes every commit so far durable (one fsync).
    pub fn sync(&self) -> StoreResult<()> {
        let mut txn = self.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        self.measure_file_size();
        Ok(())
    }

    /// Bytes the database file takes on disk, as of the last commit that could
    /// change it (see [`Store::measure_file_size`]).
    pub fn file_size(&self) -> u64 {
        self.file_bytes.load(Ordering::Relaxed)
    }

    /// Takes the file's size from the file system, for [`Store::file_size`]. Called
    /// after every commit that can grow or shrink the file: apply's, a snapshot
    /// install's, a defragmentation's.
    pub fn measure_file_size(&self) {
        let bytes = fs::metadata(&self.path).map_or(0, |metadata| metadata.len());
        self.file_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The file's size and the part of it holding live data: the pages of every
    /// table's tree (redb's own bookkeeping, a few pages, is left out). Walks every
    /// table, so it costs time proportional to the database (0.7 s at 570 MB);
    /// it walks a read snapshot, so writes go on meanwhile (redb's exact
    /// `WriteTransaction::stats` would hold them all up for the walk).
    pub fn size(&self) -> StoreResult<StoreSize> {
        let txn = self.begin_read()?;
        let mut pages = 0;
        for_each_table!(|table| pages += table_pages(&txn, table)?);
        Ok(StoreSize {
            file_bytes: self.file_size(),
            in_use_bytes: pages.saturating_mul(PAGE_BYTES),
        })
    }

    /// Rewrites the database into a fresh, compact file and swaps it in, giving free
    /// pages back to the file system. Writers wait while the copy is made (as on
    /// etcd); readers keep reading the old file until they finish.
    pub fn defragment(&self) -> StoreResult<()> {
        let old = self.database();
        // Holding the old file's write transaction stops every writer and makes the
        // copy one consistent state.
        let source = old.begin_write()?;
        let copy_path = defrag_path(&self.path);
        if copy_path.exists() {
            fs::remove_file(&copy_path)?;
        }
        // Removed again if the copy fails (a full disk, say).
        let partial = PartialFile::new(&copy_path);
        let copy = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create(&copy_path)?;
        let mut target = copy.begin_write()?;
        target.set_durability(Durability::Immediate)?;
        for_each_table!(|table| copy_table(&source, &target, table)?);
        target.commit()?;
        fs::rename(&copy_path, &self.path)?;
        partial.keep();
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(copy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(copy),
        }
        self.measure_file_size();
        source.abort()?;
        Ok(())
    }
}

/// Leaf and branch pages of `table`'s tree.
fn table_pages<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> StoreResult<u64> {
    let stats = txn.open_table(table)?.stats()?;
    Ok(stats.leaf_pages() + stats.branch_pages())
}

/// Copies every row of `table` from `source` into `target`.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    source: &WriteTransaction,
    target: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> StoreResult<()> {
    let from = source.open_table(table)?;
    let mut to = target.open_table(table)?;
    for row in from.iter()? {
        let (key, value) = row?;
        to.insert(key.value(), value.value())
            .map_err(StoreError::from)?;
    }
    Ok(())
}
