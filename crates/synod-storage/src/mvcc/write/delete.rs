//! DeleteRange: a tombstone for every live key of a span.

use std::ops::ControlFlow;

use synod_proto::etcdserverpb::{DeleteRangeRequest, DeleteRangeResponse, ResponseHeader};

use super::MvccWriter;
use crate::mvcc::read;
use crate::mvcc::record::KeyRecord;
use crate::mvcc::span::KeySpan;
use crate::mvcc::MvccError;

impl MvccWriter<'_> {
    /// Applies a DeleteRange. Deleting nothing creates no revision.
    pub fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let response = self.do_delete_range(request)?;
        self.finish();
        Ok(response)
    }

    /// Deletes a span, as the whole command or as an op of a Txn.
    pub(super) fn do_delete_range(
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
}
