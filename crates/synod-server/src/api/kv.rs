//! The etcd KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Reads are served from the local replica after a read barrier (or without one for
//! serializable requests). Writes are validated here, then committed through Raft;
//! the state machine's answer, including its refusals, comes back unchanged.

use std::sync::Arc;

use synod_proto::etcdserverpb::kv_server::Kv;
use synod_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::command_result::Result as Outcome;
use tonic::{Request, Response, Status};

use super::commit::{commit, unexpected};
use super::error::ApiError;
use super::header::stamp;
use super::validate;
use crate::node::Node;

/// Serves the KV service of one node.
pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    /// The KV service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    async fn commit(&self, op: Op) -> Result<Outcome, ApiError> {
        commit(&self.node, op).await
    }
}

/// Serves a Range from the local replica, after a read barrier unless the request
/// is serializable.
pub async fn read_range(node: &Node, request: RangeRequest) -> Result<RangeResponse, ApiError> {
    if !request.serializable {
        node.read_barrier().await?;
    }
    // Store reads block (a durable commit holds pages readers need), so they run
    // off the async workers. Point reads go together, many to one blocking task
    // and one read snapshot (see [`crate::point_reads`]); a range may scan without
    // bound (a count covers the whole range whatever the limit), so it gets a task
    // of its own rather than hold up the reads batched behind it.
    let response = if request.range_end.is_empty() {
        node.point_reads
            .submit(request)
            .await
            .ok_or_else(|| ApiError::Internal("a point read was lost".into()))??
    } else {
        let reader = node.reader.clone();
        tokio::task::spawn_blocking(move || reader.range(&request))
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))??
    };
    Ok(stamp(node, response))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        validate::check_range(&request)?;
        Ok(Response::new(read_range(&self.node, request).await?))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        validate::check_put(&request)?;
        match self.commit(Op::Put(request)).await? {
            Outcome::Put(response) => Ok(Response::new(stamp(&self.node, response))),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        validate::check_delete(&request)?;
        match self.commit(Op::DeleteRange(request)).await? {
            Outcome::DeleteRange(response) => Ok(Response::new(stamp(&self.node, response))),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let request = request.into_inner();
        validate::check_txn(&request, self.node.limits.txn_ops_max)?;
        match self.commit(Op::Txn(request)).await? {
            Outcome::Txn(response) => Ok(Response::new(stamp(&self.node, response))),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let request = request.into_inner();
        match self.commit(Op::Compaction(request)).await? {
            Outcome::Compaction(response) => Ok(Response::new(stamp(&self.node, response))),
            other => Err(unexpected(&other).into()),
        }
    }
}
