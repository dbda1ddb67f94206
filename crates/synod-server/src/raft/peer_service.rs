//! The server side of the peer RPC: Raft messages from other members, requests
//! forwarded by followers, and read-index queries.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use synod_proto::synodpeer::raft_peer_server::RaftPeer;
use synod_proto::synodpeer::{
    ForwardRequest, ForwardResponse, LeaseDeadline, LeaseRequest, MembershipRequest,
    MembershipResponse, NodeInfoRequest, NodeInfoResponse, PeerMember, RaftMessage,
    ReadIndexRequest, ReadIndexResponse, TimeoutNowRequest, TimeoutNowResponse,
};
use synod_storage::{GroupId, NodeId, TypeConfig};
use tonic::{Request, Response, Status, Streaming};

use super::{codec, pre_vote};
use crate::forward;
use crate::limits::FORWARDS_SERVED_AT_ONCE;
use crate::membership::{LocalChange, MembershipChange, MembershipError};
use crate::node::{LeaseQuery, MemberInfo, Node};
use crate::outcome::not_leader;
use crate::replicas::Replicas;

/// Serves the peer RPC of one member, handing each message to the replica of its
/// group.
pub struct PeerService {
    member: MemberInfo,
    replicas: Arc<Replicas>,
}

impl PeerService {
    /// The peer service of member `member`, which hosts `replicas`.
    pub fn new(member: MemberInfo, replicas: Arc<Replicas>) -> Self {
        Self { member, replicas }
    }

    /// The replica of `group`, or the refusal of a message for a group this member
    /// does not host.
    fn replica(&self, group: GroupId) -> Result<Arc<Node>, Status> {
        replica(&self.replicas, group)
    }

    fn lease_query(
        &self,
        request: LeaseRequest,
        query: LeaseQuery,
    ) -> Result<Response<LeaseDeadline>, Status> {
        let node = self.replica(request.group_id)?;
        match node.local_lease_query(request.lease_id, query) {
            Ok(Some(answer)) => Ok(Response::new(LeaseDeadline {
                found: answer.is_some(),
                granted_ttl: answer.map_or(0, |ttl| ttl.granted),
                remaining_ttl: answer.map_or(0, |ttl| ttl.remaining),
            })),
            Ok(None) => Err(not_leader()),
            Err(error) => Err(Status::internal(error.to_string())),
        }
    }
}

fn replica(replicas: &Replicas, group: GroupId) -> Result<Arc<Node>, Status> {
    replicas
        .get(group)
        .cloned()
        .ok_or_else(|| Status::not_found(format!("this node hosts no raft group {group}")))
}

/// Hands one AppendEntries message to its group's Raft and encodes the answer.
async fn append_entries(replicas: &Replicas, message: RaftMessage) -> Result<RaftMessage, Status> {
    let node = replica(replicas, message.group_id)?;
    let rpc: AppendEntriesRequest<TypeConfig> = codec::decode(&message.payload)?;
    Ok(RaftMessage {
        group_id: message.group_id,
        payload: codec::encode(&node.raft.append_entries(rpc).await)?,
    })
}

fn reply<T: serde::Serialize>(group: GroupId, result: &T) -> Result<Response<RaftMessage>, Status> {
    Ok(Response::new(RaftMessage {
        group_id: group,
        payload: codec::encode(result)?,
    }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        append_entries(&self.replicas, request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream = BoxStream<'static, Result<RaftMessage, Status>>;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        let replicas = self.replicas.clone();
        // One request at a time, answered in order; a bad message ends the stream.
        let answers = request.into_inner().then(move |message| {
            let replicas = replicas.clone();
            async move { append_entries(&replicas, message?).await }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let node = self.replica(message.group_id)?;
        let rpc: VoteRequest<NodeId> = codec::decode(&message.payload)?;
        reply(message.group_id, &node.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let node = self.replica(message.group_id)?;
        let rpc: VoteRequest<NodeId> = codec::decode(&message.payload)?;
        let response = pre_vote::answer(&node, &rpc)
            .await
            .ok_or_else(|| Status::unavailable("raft has stopped"))?;
        reply(message.group_id, &response)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let node = self.replica(message.group_id)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = codec::decode(&message.payload)?;
        reply(message.group_id, &node.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let message = request.into_inner();
        let node = self.replica(message.group_id)?;
        let results = forward::serve(&node.proposals, message.commands).await;
        Ok(Response::new(ForwardResponse { results }))
    }

    type ForwardStreamStream = BoxStream<'static, Result<ForwardResponse, Status>>;

    async fn forward_stream(
        &self,
        request: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let replicas = self.replicas.clone();
        // Rounds are served together and answered in the order they came.
        let answers = request
            .into_inner()
            .map(move |message| {
                let replicas = replicas.clone();
                async move {
                    let message = message?;
                    let node = replica(&replicas, message.group_id)?;
                    let results = forward::serve(&node.proposals, message.commands).await;
                    Ok(ForwardResponse { results })
                }
            })
            .buffered(FORWARDS_SERVED_AT_ONCE);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn timeout_now(
        &self,
        request: Request<TimeoutNowRequest>,
    ) -> Result<Response<TimeoutNowResponse>, Status> {
        let node = self.replica(request.into_inner().group_id)?;
        node.raft
            .trigger()
            .elect()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(TimeoutNowResponse {}))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        let node = self.replica(request.into_inner().group_id)?;
        let read_index = node.local_read_index().await?;
        let (leader_id, term) = {
            let server = node.raft.server_metrics();
            let server = server.borrow();
            (server.current_leader, server.vote.leader_id().get_term())
        };
        Ok(Response::new(ReadIndexResponse {
            read_index,
            leader_id: leader_id.unwrap_or_default(),
            term,
        }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseDeadline>, Status> {
        self.lease_query(request.into_inner(), LeaseQuery::KeepAlive)
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseDeadline>, Status> {
        self.lease_query(request.into_inner(), LeaseQuery::TimeToLive)
    }

    async fn change_membership(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        let node = self.replica(message.group_id)?;
        let change: MembershipChange = codec::decode(&message.payload)?;
        // `None`: not the leader (nothing changed), so the caller may look elsewhere.
        let outcome: Option<Result<(), MembershipError>> =
            match node.change_membership_local(&change).await {
                Ok(()) => Some(Ok(())),
                Err(LocalChange::Refused(error)) => Some(Err(error)),
                Err(LocalChange::NotLeader(_) | LocalChange::Retry) => None,
            };
        reply(message.group_id, &outcome)
    }

    async fn membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        let node = self.replica(request.into_inner().group_id)?;
        let metrics = node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let config_index = metrics
            .membership_config
            .log_id()
            .map_or(0, |log_id| log_id.index);
        let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
        Ok(Response::new(MembershipResponse {
            cluster_id: node.member.cluster_id,
            config_index,
            config_applied: metrics.membership_config.log_id().is_some() && config_index <= applied,
            members: membership
                .nodes()
                .map(|(id, node)| PeerMember {
                    id: *id,
                    name: node.name.clone(),
                    peer_urls: node.peer_urls.clone(),
                    is_learner: !voters.contains(id),
                })
                .collect(),
        }))
    }

    async fn node_info(
        &self,
        _request: Request<NodeInfoRequest>,
    ) -> Result<Response<NodeInfoResponse>, Status> {
        let member = &self.member;
        Ok(Response::new(NodeInfoResponse {
            member_id: member.id,
            cluster_id: member.cluster_id,
            name: member.name.clone(),
            client_urls: member.client_urls.clone(),
            peer_urls: member.peer_urls.clone(),
        }))
    }
}
