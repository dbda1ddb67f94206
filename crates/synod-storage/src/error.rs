//! The storage layer's error type, and its mapping into openraft's.

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::types::{NodeId, StorageError};

/// Everything that can go wrong below the Raft and MVCC logic.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The redb database refused an operation.
    #[error("database: {0}")]
    Database(#[from] redb::Error),
    /// A stored record failed to decode: the data on disk is not what this build wrote.
    #[error("corrupt record: {0}")]
    Codec(#[from] postcard::Error),
    /// A snapshot file could not be read or written.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    /// Data on disk breaks an invariant of the store.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A blocking storage task was lost (the runtime is shutting down).
    #[error("storage task failed: {0}")]
    Task(String),
}

/// Lets every redb error type convert with `?`.
macro_rules! from_redb {
    ($($error:ty),*) => {
        $(impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                StoreError::Database(redb::Error::from(error))
            }
        })*
    };
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<tokio::task::JoinError> for StoreError {
    fn from(error: tokio::task::JoinError) -> Self {
        StoreError::Task(error.to_string())
    }
}

impl StoreError {
    /// Wraps this error as openraft's storage error for the given subject and verb.
    pub fn into_raft(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError {
        StorageError::IO {
            source: StorageIOError::new(subject, verb, AnyError::new(&self)),
        }
    }

    /// A failure reading the Raft log.
    pub fn read_logs(self) -> StorageError {
        self.into_raft(ErrorSubject::Logs, ErrorVerb::Read)
    }

    /// A failure writing the Raft log.
    pub fn write_logs(self) -> StorageError {
        self.into_raft(ErrorSubject::Logs, ErrorVerb::Write)
    }

    /// A failure reading the persisted vote.
    pub fn read_vote(self) -> StorageError {
        self.into_raft(ErrorSubject::Vote, ErrorVerb::Read)
    }

    /// A failure writing the persisted vote.
    pub fn write_vote(self) -> StorageError {
        self.into_raft(ErrorSubject::Vote, ErrorVerb::Write)
    }

    /// A failure reading the state machine.
    pub fn read_state_machine(self) -> StorageError {
        self.into_raft(ErrorSubject::StateMachine, ErrorVerb::Read)
    }

    /// A failure writing the state machine.
    pub fn write_state_machine(self) -> StorageError {
        self.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write)
    }

    /// A failure reading or writing a snapshot.
    pub fn snapshot(self, verb: ErrorVerb) -> StorageError {
        self.into_raft(ErrorSubject::Snapshot(None), verb)
    }
}

/// Shorthand for results of this crate.
pub type StoreResult<T> = Result<T, StoreError>;
