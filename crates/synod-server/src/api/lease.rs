//! The etcd Lease service.
//!
//! Grants and revocations go through the log. Keep-alives and TTL queries are
//! answered by the leader's lease keeper (forwarded there from followers), because
//! only the leader tracks deadlines.

use std::sync::Arc;

use futures::StreamExt;
use rand::Rng;
use synod_proto::etcdserverpb::lease_server::Lease;
use synod_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::command_result::Result as Outcome;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::commit::{commit, unexpected};
use super::error::ApiError;
use super::header::stamp;
use super::require_leader;
use crate::limits::{KEEPALIVE_RESPONSES_BUFFERED, LEASE_ID_ATTEMPTS, LEASE_TTL_MAX_SECONDS};
use crate::node::{LeaseQuery, Node};

/// Serves the Lease service of one node.
pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    /// The Lease service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// A fresh lease id: positive, non-zero, as etcd's are.
fn random_lease_id() -> i64 {
    rand::rng().random_range(1..=i64::MAX)
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(
            grant(&self.node, request.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        match commit(&self.node, Op::LeaseRevoke(request.into_inner())).await? {
            Outcome::LeaseRevoke(response) => Ok(Response::new(stamp(&self.node, response))),
            other => Err(unexpected(&other).into()),
        }
    }

    type LeaseKeepAliveStream = BoxStream<LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let metadata = request.metadata().clone();
        let mut requests = request.into_inner();
        let (sender, receiver) = mpsc::channel(KEEPALIVE_RESPONSES_BUFFERED);
        let node = self.node.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let response = match request {
                    Ok(request) => keep_alive(&node, request.id).await,
                    Err(status) => Err(status),
                };
                let failed = response.is_err();
                if sender.send(response).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(require_leader::guard(
            &self.node,
            &metadata,
            Box::pin(ReceiverStream::new(receiver)),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let ttl = self
            .node
            .lease_query(request.id, LeaseQuery::TimeToLive)
            .await
            .map_err(ApiError::from)?;
        let keys = match (ttl, request.keys) {
            (Some(_), true) => {
                // The keys come from this member's state: make it current first.
                self.node.read_barrier().await.map_err(ApiError::from)?;
                self.node
                    .reader
                    .lease_keys(request.id)
                    .map_err(|error| ApiError::Internal(error.to_string()))?
            }
            _ => Vec::new(),
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: Some(self.node.header(self.node.revision())),
            id: request.id,
            // As etcd 3.4 and later: an unknown lease reports TTL -1, not an error.
            ttl: ttl.map_or(-1, |ttl| ttl.remaining),
            granted_ttl: ttl.map_or(0, |ttl| ttl.granted),
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.node.read_barrier().await.map_err(ApiError::from)?;
        let leases = self
            .node
            .reader
            .leases()
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.node.header(self.node.revision())),
            leases: leases
                .into_iter()
                .map(|(id, _)| LeaseStatus { id })
                .collect(),
        }))
    }
}

/// Grants a lease: the TTL raised to the minimum, the id drawn by this member when
/// the client left it 0.
pub async fn grant(
    node: &Node,
    mut request: LeaseGrantRequest,
) -> Result<LeaseGrantResponse, ApiError> {
    if request.ttl > LEASE_TTL_MAX_SECONDS {
        return Err(ApiError::LeaseTtlTooLarge);
    }
    request.ttl = request.ttl.max(node.limits.lease_ttl_min_seconds);
    let server_chosen = request.id == 0;
    for _ in 0..LEASE_ID_ATTEMPTS {
        if server_chosen {
            request.id = random_lease_id();
        }
        match commit(node, Op::LeaseGrant(request)).await {
            Ok(Outcome::LeaseGrant(response)) => return Ok(stamp(node, response)),
            Ok(other) => return Err(unexpected(&other)),
            Err(ApiError::LeaseExists) if server_chosen => continue,
            Err(error) => return Err(error),
        }
    }
    Err(ApiError::LeaseExists)
}

/// Renews one lease; an unknown lease answers TTL 0, as etcd does.
async fn keep_alive(node: &Node, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
    let ttl = node
        .lease_query(id, LeaseQuery::KeepAlive)
        .await
        .map_err(ApiError::from)?;
    let revision = node.revision();
    Ok(LeaseKeepAliveResponse {
        header: Some(node.header(revision)),
        id,
        ttl: ttl.map_or(0, |ttl| ttl.granted),
    })
}
