//! Checks of client requests before they are proposed, in etcd's order, so the same
//! bad request gets the same error from synod as from etcd.

use std::collections::HashSet;

use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use synod_proto::nested::txn_nesting;

use super::error::ApiError;
use crate::limits::TXN_NESTING_MAX;

/// Checks a Range request.
pub fn check_range(request: &RangeRequest) -> Result<(), ApiError> {
    if request.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    Ok(())
}

/// Checks a Put request.
pub fn check_put(request: &PutRequest) -> Result<(), ApiError> {
    if request.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(ApiError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(ApiError::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange request.
pub fn check_delete(request: &DeleteRangeRequest) -> Result<(), ApiError> {
    if request.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    Ok(())
}

/// Checks a Txn: its nesting, operation counts, every operation, then duplicate
/// keys in each branch (both branches, whichever will run). The gRPC layer already
/// refuses a Txn nested too deep; the check here holds for requests from any
/// other path.
pub fn check_txn(request: &TxnRequest, txn_ops_max: usize) -> Result<(), ApiError> {
    if txn_nesting(request) > TXN_NESTING_MAX {
        return Err(ApiError::TooManyOps);
    }
    check_txn_ops(request, txn_ops_max)?;
    check_intervals(&request.success)?;
    check_intervals(&request.failure)?;
    Ok(())
}

fn check_txn_ops(request: &TxnRequest, txn_ops_max: usize) -> Result<(), ApiError> {
    let ops = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if ops > txn_ops_max {
        return Err(ApiError::TooManyOps);
    }
    if request.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(ApiError::EmptyKey);
    }
    for op in request.success.iter().chain(&request.failure) {
        check_op(op, txn_ops_max - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, txn_ops_max: usize) -> Result<(), ApiError> {
    match &op.request {
        Some(Request::RequestRange(range)) => check_range(range),
        Some(Request::RequestPut(put)) => check_put(put),
        Some(Request::RequestDeleteRange(delete)) => check_delete(delete),
        Some(Request::RequestTxn(txn)) => check_txn_ops(txn, txn_ops_max),
        None => Err(ApiError::KeyNotFound),
    }
}

/// A deleted interval as etcd's duplicate check sees it: `[start, end)` compared
/// byte-wise, or a single key. (As in etcd, a `"\0"` end is taken literally, so a
/// from-key delete overlaps no put here.)
struct Deleted {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Deleted {
    fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => self.start == key,
            Some(end) => self.start.as_slice() <= key && key < end.as_slice(),
        }
    }
}

/// etcd's `checkIntervals`: within one branch, no key may be put twice or be both
/// put and deleted, looking into nested Txns (whose two branches may put the same
/// key, as only one of them runs).
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Deleted>), ApiError> {
    let mut deleted: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(delete)) => Some(Deleted {
                start: delete.key.clone(),
                end: (!delete.range_end.is_empty()).then(|| delete.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let is_deleted = |deleted: &[Deleted], key: &[u8]| deleted.iter().any(|d| d.contains(key));

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else {
            continue;
        };
        let (puts_then, deleted_then) = check_intervals(&txn.success)?;
        let (puts_else, deleted_else) = check_intervals(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || is_deleted(&deleted, key) {
                return Err(ApiError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in puts_else {
            if (puts.contains(&key) && !puts_then.contains(&key)) || is_deleted(&deleted, &key) {
                return Err(ApiError::DuplicateKey);
            }
            puts.insert(key);
        }
        deleted.extend(deleted_then);
        deleted.extend(deleted_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || is_deleted(&deleted, &put.key) {
            return Err(ApiError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn delete(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success,
                failure,
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            success,
            failure,
            ..Default::default()
        }
    }

    #[test]
    fn finds_duplicates_as_etcd_does() {
        let check = |request: TxnRequest| check_txn(&request, 128);
        assert!(matches!(
            check(txn(vec![put("a"), put("a")], vec![])),
            Err(ApiError::DuplicateKey)
        ));
        assert!(matches!(
            check(txn(vec![], vec![put("a"), put("a")])),
            Err(ApiError::DuplicateKey)
        ));
        assert!(check(txn(vec![put("a")], vec![put("a")])).is_ok());
        assert!(matches!(
            check(txn(vec![put("b"), delete("a", "c")], vec![])),
            Err(ApiError::DuplicateKey)
        ));
        assert!(check(txn(vec![delete("a", ""), delete("a", "")], vec![])).is_ok());
        assert!(check(txn(vec![nested(vec![put("a")], vec![put("a")])], vec![])).is_ok());
        assert!(matches!(
            check(txn(vec![put("a"), nested(vec![put("a")], vec![])], vec![])),
            Err(ApiError::DuplicateKey)
        ));
        assert!(matches!(
            check(txn(
                vec![delete("a", "b"), nested(vec![], vec![put("a")])],
                vec![]
            )),
            Err(ApiError::DuplicateKey)
        ));
    }

    #[test]
    fn a_txn_nested_past_the_bound_is_refused_as_etcd_refuses_it() {
        let nest = |levels: usize| {
            let mut txn = TxnRequest {
                success: vec![put("k")],
                ..Default::default()
            };
            for _ in 1..levels {
                txn = TxnRequest {
                    success: vec![RequestOp {
                        request: Some(Request::RequestTxn(txn)),
                    }],
                    ..Default::default()
                };
            }
            txn
        };
        // One operation a level: the bound is also what --max-txn-ops allows.
        assert!(check_txn(&nest(TXN_NESTING_MAX), 128).is_ok());
        assert!(matches!(
            check_txn(&nest(TXN_NESTING_MAX + 1), 128),
            Err(ApiError::TooManyOps)
        ));
        // A larger --max-txn-ops does not lift the nesting bound.
        assert!(matches!(
            check_txn(&nest(TXN_NESTING_MAX + 1), 1024),
            Err(ApiError::TooManyOps)
        ));
    }

    #[test]
    fn counts_ops_per_branch() {
        let many: Vec<RequestOp> = (0..100).map(|i| put(&format!("k{i}"))).collect();
        assert!(check_txn(&txn(many.clone(), many.clone()), 128).is_ok());
        let too_many: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert!(matches!(
            check_txn(&txn(too_many, vec![]), 128),
            Err(ApiError::TooManyOps)
        ));
        assert!(matches!(
            check_txn(&txn(vec![RequestOp { request: None }], vec![]), 128),
            Err(ApiError::KeyNotFound)
        ));
    }
}
