//! Opening a node's database: one redb file per node, every table created up front
//! so readers never meet a missing table.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability};

use crate::error::StoreResult;
use crate::tables::{
    IDENTITY, KV, LEASES, LEASE_KEYS, MEMBERS, RAFT_LOG, RAFT_META, REVISIONS, SM_META,
};

/// File name of the database inside the data dir.
pub const DATABASE_FILE: &str = "synod.redb";

/// Opens (or creates) the database at `path` and makes sure every table exists.
pub fn open_database(path: &Path) -> StoreResult<Arc<Database>> {
    let db = Database::create(path)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.open_table(RAFT_LOG)?;
    txn.open_table(RAFT_META)?;
    txn.open_table(KV)?;
    txn.open_table(REVISIONS)?;
    txn.open_table(SM_META)?;
    txn.open_table(MEMBERS)?;
    txn.open_table(IDENTITY)?;
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_KEYS)?;
    txn.commit()?;
    Ok(Arc::new(db))
}
