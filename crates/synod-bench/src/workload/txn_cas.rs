//! `txn-cas`: compare-and-swap of one random key per operation, in one Txn.
//!
//! The Txn puts the key if its mod_revision is still the one this client last saw
//! (0, "absent", for a key it has not seen), and otherwise reads the key back, so
//! the client learns the current revision for its next try without a second round
//! trip. A lost race is an answered operation (a "failure"), not an error.

use std::collections::HashMap;

use rand::rngs::StdRng;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::Channel;

use super::Outcome;
use crate::keys::KeySpace;

/// One client's compare-and-swap loop state.
#[derive(Debug)]
pub struct TxnCas {
    kv: KvClient<Channel>,
    keys: KeySpace,
    value: Vec<u8>,
    /// The mod_revision this client last saw of each key index it touched (bounded
    /// by the key space).
    seen: HashMap<u64, i64>,
    rng: StdRng,
}

impl TxnCas {
    /// Compare-and-swaps over `keys`, writing `value`.
    pub fn new(kv: KvClient<Channel>, keys: KeySpace, value: Vec<u8>, rng: StdRng) -> TxnCas {
        TxnCas {
            kv,
            keys,
            value,
            seen: HashMap::new(),
            rng,
        }
    }

    /// Tries one compare-and-swap.
    pub async fn run(&mut self) -> Result<Outcome, tonic::Status> {
        let index = self.keys.random_index(&mut self.rng);
        let key = self.keys.key(index);
        let expected = self.seen.get(&index).copied().unwrap_or(0);
        let request = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::ModRevision(expected)),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: self.value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let response = self.kv.txn(request).await?.into_inner();
        if response.succeeded {
            // The put happened at the Txn's revision, which is now the key's.
            let revision = response.header.map_or(0, |header| header.revision);
            self.seen.insert(index, revision);
            return Ok(Outcome::Done);
        }
        let current = response
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(Response::ResponseRange(range)) => Some(range),
                _ => None,
            })
            .and_then(|range| range.kvs.into_iter().next())
            .map_or(0, |kv| kv.mod_revision);
        self.seen.insert(index, current);
        Ok(Outcome::ConditionFailed)
    }
}
