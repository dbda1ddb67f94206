//! The etcd Cluster service. Membership comes from Raft; names and client URLs from
//! the attributes each member publishes through the log after it starts.

use std::collections::HashMap;
use std::sync::Arc;

use synod_proto::etcdserverpb::cluster_server::Cluster;
use synod_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use synod_storage::member_attributes;
use tonic::{Request, Response, Status};

use super::error::{unimplemented, ApiError};
use crate::node::{Node, DEFAULT_GROUP};

/// Serves the Cluster service of one node.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    /// The Cluster service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The members as this node knows them.
    pub fn members(&self) -> Result<Vec<Member>, ApiError> {
        let attributes: HashMap<u64, _> = member_attributes(&self.node.db, DEFAULT_GROUP)
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .into_iter()
            .map(|attributes| (attributes.member_id, attributes))
            .collect();
        let metrics = self.node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        Ok(membership
            .nodes()
            .map(|(id, node)| {
                let published = attributes.get(id);
                Member {
                    id: *id,
                    name: published.map_or_else(String::new, |attributes| attributes.name.clone()),
                    peer_ur_ls: node.peer_urls.clone(),
                    client_ur_ls: published
                        .map_or_else(Vec::new, |attributes| attributes.client_urls.clone()),
                    is_learner: !voters.contains(id),
                }
            })
            .collect())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(unimplemented("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        _request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(unimplemented("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        _request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unimplemented("Cluster.MemberUpdate"))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.node.read_barrier().await.map_err(ApiError::from)?;
        }
        // As etcd: the member list's header carries no store revision.
        Ok(Response::new(MemberListResponse {
            header: Some(self.node.header(0)),
            members: self.members()?,
        }))
    }

    async fn member_promote(
        &self,
        _request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(unimplemented("Cluster.MemberPromote"))
    }
}
