//! synod's storage: the Raft log, a write-ahead log of its own per Raft group
//! (`wal/`), and the MVCC state machine, in one redb database per node keyed by
//! Raft group.
//!
//! No networking lives here. The node (`synod-server`) hands committed entries to
//! [`StateMachine`] through openraft and serves reads with [`mvcc::MvccReader`].

pub mod alarm;
pub mod backup;
pub mod codec;
pub mod database;
pub mod error;
pub mod limits;
pub mod log_store;
pub mod mvcc;
pub mod partial_file;
pub mod snapshot;
pub mod state_machine;
pub mod sync;
pub mod tables;
pub mod types;

pub use database::{
    open_database, Store, StoreSize, DATABASE_FILE, LEGACY_LOG_DATABASE_FILE, LOG_DIR,
};
pub use error::{StoreError, StoreResult};
pub use limits::DEFAULT_CACHE_BYTES;
pub use log_store::{LogLimits, LogStore};
pub use state_machine::{member_attributes, Applied, StateMachine};
pub use types::{Command, CommandResult, GroupId, LogId, MemberNode, NodeId, TypeConfig};
