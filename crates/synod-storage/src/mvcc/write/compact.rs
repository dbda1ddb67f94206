//! Compaction: history below a revision goes, except each key's live version.

use synod_proto::etcdserverpb::{CompactionRequest, CompactionResponse};

use super::MvccWriter;
use crate::mvcc::MvccError;
use crate::sync;

impl MvccWriter<'_> {
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
}
