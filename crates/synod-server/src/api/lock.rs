//! The etcd Lock service: a fair queue over KV, lease and watch, as etcd's own.
//!
//! A contender puts `name/<lease id in hex>` under its lease; the holder is the key
//! with the lowest create revision, and each waiter waits only for the key created
//! just before its own. After waiting, the contender's key is read again: if its
//! lease expired meanwhile, it gets an error, never the lock. The key's create
//! revision is the lock's fencing token, larger for every later holder.

use std::sync::Arc;

use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::request_op::Request as Op;
use synod_proto::etcdserverpb::response_op::Response as OpResponse;
use synod_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::v3lockpb::lock_server::Lock;
use synod_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::lease::grant;
use super::recipe::{delete, first_created, get, txn, wait_deletes};
use crate::limits::SESSION_TTL_SECONDS;
use crate::node::Node;

/// Serves the Lock service of one node.
pub struct LockService {
    node: Arc<Node>,
}

impl LockService {
    /// The Lock service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The lease a recipe runs under: the caller's, or a fresh one when it named none.
pub async fn session_lease(node: &Node, lease: i64) -> Result<i64, ApiError> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = grant(
        node,
        LeaseGrantRequest {
            ttl: SESSION_TTL_SECONDS,
            id: 0,
        },
    )
    .await?;
    Ok(granted.id)
}

/// The key a session holds under `prefix`: `prefix` + the lease id in hex.
pub fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// A compare that holds while `key`'s create revision is `revision` (0: absent).
pub fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        range_end: Vec::new(),
    }
}

fn range_op(request: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(request)),
    }
}

/// Deletes the contender's key if the lock attempt is abandoned (an error, or the
/// client going away while it waits), as etcd's mutex does.
struct Abandon {
    node: Arc<Node>,
    key: Option<Vec<u8>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let node = self.node.clone();
            tokio::spawn(async move {
                if let Err(error) = delete(&node, key).await {
                    tracing::warn!(%error, "could not remove an abandoned lock key");
                }
            });
        }
    }
}

/// Acquires the lock `name` for `lease`, waiting in line.
pub async fn lock(node: &Arc<Node>, name: &[u8], lease: i64) -> Result<LockResponse, ApiError> {
    let lease = session_lease(node, lease).await?;
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let key = session_key(&prefix, lease);
    let acquire = TxnRequest {
        compare: vec![created_at(&key, 0)],
        success: vec![
            RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.clone(),
                    lease,
                    ..Default::default()
                })),
            },
            range_op(first_created(&prefix)),
        ],
        failure: vec![
            range_op(RangeRequest {
                key: key.clone(),
                ..Default::default()
            }),
            range_op(first_created(&prefix)),
        ],
    };
    let response = txn(node, acquire).await?;
    let my_revision = if response.succeeded {
        response.header.map_or(0, |header| header.revision)
    } else {
        range_kvs(&response.responses, 0)
            .first()
            .map_or(0, |kv| kv.create_revision)
    };
    let holder = range_kvs(&response.responses, 1)
        .first()
        .map(|kv| kv.create_revision);
    if holder.is_none_or(|holder| holder == my_revision) {
        return Ok(LockResponse {
            header: response.header,
            key,
        });
    }
    let mut abandon = Abandon {
        node: node.clone(),
        key: Some(key.clone()),
    };
    wait_deletes(node, &prefix, my_revision - 1).await?;
    // Our turn. Make sure our key (and so our lease) is still there: a contender
    // whose lease expired while it waited must not be told it holds the lock.
    let current = get(node, &key).await?;
    if current.kvs.is_empty() {
        abandon.key = None;
        return Err(ApiError::SessionExpired);
    }
    abandon.key = None;
    Ok(LockResponse {
        header: current.header,
        key,
    })
}

/// The key-values of the range response at `index` of a Txn's responses.
pub fn range_kvs(
    responses: &[synod_proto::etcdserverpb::ResponseOp],
    index: usize,
) -> Vec<synod_proto::mvccpb::KeyValue> {
    match responses
        .get(index)
        .and_then(|response| response.response.as_ref())
    {
        Some(OpResponse::ResponseRange(range)) => range.kvs.clone(),
        _ => Vec::new(),
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            lock(&self.node, &request.name, request.lease).await?,
        ))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let response = delete(&self.node, request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse {
            header: response.header,
        }))
    }
}
