//! Txn: compares that choose a branch, and the branch's operations, checked as a
//! whole and then run under one revision.

use std::ops::ControlFlow;

use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{
    Compare, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use synod_proto::mvccpb::KeyValue;

use super::MvccWriter;
use crate::mvcc::read;
use crate::mvcc::span::KeySpan;
use crate::mvcc::MvccError;

impl MvccWriter<'_> {
    /// Applies a Txn: compares decide the branch, the branch is checked as a whole,
    /// then run. One revision covers every change it makes.
    pub fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let succeeded = self.compares_hold(&request.compare)?;
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        self.check_ops(ops)?;
        let responses = self.run_ops(ops)?;
        self.finish();
        Ok(TxnResponse {
            header: Some(self.header()),
            succeeded,
            responses,
        })
    }

    fn check_ops(&mut self, ops: &[RequestOp]) -> Result<(), MvccError> {
        for op in ops {
            match &op.request {
                Some(Request::RequestRange(range)) => {
                    read::resolve_revision(range.revision, self.revision, self.compacted)?;
                }
                Some(Request::RequestPut(put)) => self.check_put(put)?,
                Some(Request::RequestTxn(txn)) => {
                    let branch = if self.compares_hold(&txn.compare)? {
                        &txn.success
                    } else {
                        &txn.failure
                    };
                    self.check_ops(branch)?;
                }
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn run_ops(&mut self, ops: &[RequestOp]) -> Result<Vec<ResponseOp>, MvccError> {
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(range)) => {
                    Some(Response::ResponseRange(self.range(range)?))
                }
                Some(Request::RequestPut(put)) => Some(Response::ResponsePut(self.do_put(put)?)),
                Some(Request::RequestDeleteRange(delete)) => {
                    Some(Response::ResponseDeleteRange(self.do_delete_range(delete)?))
                }
                Some(Request::RequestTxn(txn)) => {
                    let succeeded = self.compares_hold(&txn.compare)?;
                    let branch = if succeeded {
                        &txn.success
                    } else {
                        &txn.failure
                    };
                    let responses = self.run_ops(branch)?;
                    // As etcd: only the outermost Txn response carries a revision.
                    Some(Response::ResponseTxn(TxnResponse {
                        header: Some(ResponseHeader::default()),
                        succeeded,
                        responses,
                    }))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(responses)
    }

    /// Evaluates compares as etcd does: against the store as it was before the
    /// command (so nested Txns choose their branches up front, consistently with
    /// the checks), over every key in a compare's range; a compare on a missing key
    /// sees zeros, except that a VALUE compare on a missing key always fails.
    fn compares_hold(&self, compares: &[Compare]) -> Result<bool, MvccError> {
        for compare in compares {
            if !self.compare_holds(compare)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn compare_holds(&self, compare: &Compare) -> Result<bool, MvccError> {
        let span = KeySpan::new(&compare.key, &compare.range_end);
        let target = CompareTarget::try_from(compare.target).unwrap_or(CompareTarget::Version);
        let mut seen_any = false;
        let mut holds = true;
        read::visit_live(
            &self.history,
            &self.index,
            self.group,
            &span,
            self.revision,
            |key, mod_revision, record| {
                seen_any = true;
                if !compare_key_value(
                    compare,
                    target,
                    &read::key_value(key, mod_revision, &record),
                ) {
                    holds = false;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        )?;
        if !seen_any {
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_key_value(compare, target, &KeyValue::default()));
        }
        Ok(holds)
    }
}

fn compare_key_value(compare: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let ordering = match (target, &compare.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(value))) => {
            kv.value.as_slice().cmp(value.as_slice())
        }
        (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[]),
        (CompareTarget::Version, Some(TargetUnion::Version(version))) => kv.version.cmp(version),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(revision))) => {
            kv.create_revision.cmp(revision)
        }
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(revision))) => {
            kv.mod_revision.cmp(revision)
        }
        (CompareTarget::Lease, Some(TargetUnion::Lease(lease))) => kv.lease.cmp(lease),
        (CompareTarget::Version, _) => kv.version.cmp(&0),
        (CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    match CompareResult::try_from(compare.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}
