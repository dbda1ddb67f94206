//! One way through the change history: a position, and the read that moves it on
//! by whole revisions. Watch streams (one cursor per watcher) and the lock and
//! election recipes (waiting for a key to appear) both follow the history through
//! it, so how the history is read — in batches of whole revisions, on the async
//! task when few are behind, on the blocking pool otherwise — is decided here
//! once. It is also where the histories of several groups will be merged by
//! revision when there are more groups than one.

use synod_storage::mvcc::history::Change;
use synod_storage::mvcc::MvccReader;
use synod_storage::{Applied, StoreError};
use tokio::sync::watch;

use crate::limits::{INLINE_READ_REVISIONS_MAX, WATCH_BATCH_ROWS};

/// Why the history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store failed to read it.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The blocking read did not finish (the runtime is shutting down).
    #[error("a history read did not finish: {0}")]
    Interrupted(String),
    /// The member stopped applying while the cursor waited.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// A position in the change history and whether the changes read from it carry
/// the values they replaced.
#[derive(Debug, Clone, Copy)]
pub struct HistoryCursor {
    next_revision: i64,
    with_previous: bool,
}

impl HistoryCursor {
    /// A cursor whose next read starts at `revision`.
    pub fn at(revision: i64, with_previous: bool) -> Self {
        Self {
            next_revision: revision,
            with_previous,
        }
    }

    /// The first revision not read yet.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// The last revision read completely.
    pub fn last_read(&self) -> i64 {
        self.next_revision - 1
    }

    /// Reads the changes of whole revisions from the cursor up to `through` (about
    /// [`WATCH_BATCH_ROWS`] rows; a revision larger than that comes whole) and moves
    /// the cursor past them. Fewer than [`INLINE_READ_REVISIONS_MAX`] revisions
    /// behind, the read runs on the calling task: cheaper than two thread hand-offs.
    pub async fn read(
        &mut self,
        reader: &MvccReader,
        through: i64,
    ) -> Result<Vec<Change>, HistoryError> {
        let (from, with_previous) = (self.next_revision, self.with_previous);
        let reader = reader.clone();
        let read = move || reader.whole_revisions(from, through, WATCH_BATCH_ROWS, with_previous);
        let (changes, last_complete) = if through - from < INLINE_READ_REVISIONS_MAX {
            read()?
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|error| HistoryError::Interrupted(error.to_string()))??
        };
        self.next_revision = last_complete + 1;
        Ok(changes)
    }

    /// The next batch of whole revisions, waiting on `applied` until there is at
    /// least one.
    pub async fn next(
        &mut self,
        reader: &MvccReader,
        applied: &mut watch::Receiver<Applied>,
    ) -> Result<Vec<Change>, HistoryError> {
        loop {
            let current = applied.borrow_and_update().revision;
            if self.next_revision <= current {
                return self.read(reader, current).await;
            }
            if applied.changed().await.is_err() {
                return Err(HistoryError::Stopped);
            }
        }
    }
}
