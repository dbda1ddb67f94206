//! Fencing tokens: what makes a lock safe against a holder that was paused, lost its
//! lease, and woke up believing it still holds the lock.

use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::{Compare, TxnRequest};

/// Proof of holding a lock: the lock key and its create revision (the token). Tokens
/// grow with every grant of the same lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The key that exists while the lock is held.
    pub key: Vec<u8>,
    /// The key's create revision: the fencing token.
    pub token: i64,
}

impl Fence {
    /// Makes `txn` conditional on the lock still being this holder's: the store
    /// compares the lock key's create revision with the token, so once the lock has
    /// been released, expired or passed on, the transaction takes its failure branch
    /// (`succeeded == false`) and its success operations never run.
    pub fn guard(&self, mut txn: TxnRequest) -> TxnRequest {
        txn.compare.push(Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: self.key.clone(),
            target_union: Some(TargetUnion::CreateRevision(self.token)),
            range_end: Vec::new(),
        });
        txn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_adds_the_token_compare() {
        let fence = Fence {
            key: b"lock/1".to_vec(),
            token: 42,
        };
        let guarded = fence.guard(TxnRequest::default());
        assert_eq!(guarded.compare.len(), 1);
        assert_eq!(guarded.compare[0].key, b"lock/1");
        assert_eq!(
            guarded.compare[0].target_union,
            Some(TargetUnion::CreateRevision(42))
        );
    }
}
