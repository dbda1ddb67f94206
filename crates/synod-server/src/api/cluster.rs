//! The etcd Cluster service. Membership comes from Raft; names and client URLs from
//! the attributes each member publishes through the log after it starts.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::{SystemTime, UNIX_EPOCH};
use synod_proto::etcdserverpb::cluster_server::Cluster;
use synod_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{Command, MemberAttributes};
use synod_storage::{member_attributes, MemberNode};
use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::config::parse_socket_url;
use crate::identity;
use crate::membership::MembershipChange;
use crate::node::Node;

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
        let attributes: HashMap<u64, _> = member_attributes(&self.node.db, self.node.group)
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
                    // As etcd lists it: a member added as a voter is one, even
                    // while it catches up as a learner before its promotion.
                    is_learner: !voters.contains(id)
                        && !published.is_some_and(|attributes| attributes.voter),
                }
            })
            .collect())
    }
}

/// Checks that every peer URL is `http://IP:PORT`.
fn check_peer_urls(urls: &[String]) -> Result<Vec<String>, ApiError> {
    if urls.is_empty() {
        return Err(ApiError::BadMemberUrls);
    }
    for url in urls {
        parse_socket_url("--peer-urls", url).map_err(|_| ApiError::BadMemberUrls)?;
    }
    Ok(urls.to_vec())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let request = request.into_inner();
        let peer_urls = check_peer_urls(&request.peer_ur_ls)?;
        let existing = self.members()?;
        if existing
            .iter()
            .any(|member| member.peer_ur_ls.iter().any(|url| peer_urls.contains(url)))
        {
            return Err(ApiError::PeerUrlExists.into());
        }
        // As etcd: an added member's id mixes in the time, so re-adding the same URLs
        // after a removal gives a new member.
        let salt = format!(
            "{:x}-{}",
            self.node.member.cluster_id,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_nanos())
                .unwrap_or_default()
        );
        let id = identity::member_id(&peer_urls, &salt);
        let node = MemberNode {
            name: String::new(),
            peer_urls: peer_urls.clone(),
        };
        if !request.is_learner {
            // A voter joins the quorum once it has caught up; until then it
            // replicates as a learner. The intent is replicated before the member
            // is added, so whichever member leads promotes it, even if this one
            // fails (see `promote_added_voters`).
            let intent = MemberAttributes {
                member_id: id,
                voter: true,
                ..Default::default()
            };
            self.node
                .propose(Command {
                    op: Some(Op::MemberAttributes(intent)),
                })
                .await
                .map_err(ApiError::from)?;
        }
        self.node
            .change_membership(MembershipChange::AddLearner(id, node))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.node.header(0)),
            member: Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: peer_urls,
                client_ur_ls: Vec::new(),
                is_learner: request.is_learner,
            }),
            members: self.members()?,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        self.node
            .change_membership(MembershipChange::Remove(id))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.node.header(0)),
            members: self.members()?,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let peer_urls = check_peer_urls(&request.peer_ur_ls)?;
        let name = self
            .members()?
            .into_iter()
            .find(|member| member.id == request.id)
            .map(|member| member.name)
            .ok_or(ApiError::MemberNotFound)?;
        let node = MemberNode { name, peer_urls };
        self.node
            .change_membership(MembershipChange::Update(request.id, node))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(self.node.header(0)),
            members: self.members()?,
        }))
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
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        // A member added as a voter is listed as one (the leader promotes it
        // itself): as etcd, refuse to promote it again.
        if self
            .members()?
            .iter()
            .any(|member| member.id == id && !member.is_learner)
        {
            return Err(ApiError::NotLearner.into());
        }
        self.node
            .change_membership(MembershipChange::Promote(id))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.node.header(0)),
            members: self.members()?,
        }))
    }
}
