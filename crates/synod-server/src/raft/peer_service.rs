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
use synod_storage::{NodeId, TypeConfig};
use tonic::{Request, Response, Status, Streaming};

use super::{codec, pre_vote};
use crate::forward;
use crate::group::DEFAULT_GROUP;
use crate::limits::FORWARDS_SERVED_AT_ONCE;
use crate::membership::{LocalChange, MembershipChange, MembershipError};
use crate::node::{LeaseQuery, Node};
use crate::outcome::not_leader;

/// Serves the peer RPC for one node.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    /// The peer service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn lease_query(
        &self,
        request: LeaseRequest,
        query: LeaseQuery,
    ) -> Result<Response<LeaseDeadline>, Status> {
        check_group(request.group_id)?;
        match self.node.local_lease_query(request.lease_id, query) {
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

fn check_group(group: u64) -> Result<(), Status> {
    if group == DEFAULT_GROUP {
        Ok(())
    } else {
        Err(Status::not_found(format!(
            "this node hosts no raft group {group}"
        )))
    }
}

/// Hands one AppendEntries message to Raft and encodes its answer.
async fn append_entries(node: &Node, message: RaftMessage) -> Result<RaftMessage, Status> {
    check_group(message.group_id)?;
    let rpc: AppendEntriesRequest<TypeConfig> = codec::decode(&message.payload)?;
    Ok(RaftMessage {
        group_id: DEFAULT_GROUP,
        payload: codec::encode(&node.raft.append_entries(rpc).await)?,
    })
}

fn reply<T: serde::Serialize>(result: &T) -> Result<Response<RaftMessage>, Status> {
    Ok(Response::new(RaftMessage {
        group_id: DEFAULT_GROUP,
        payload: codec::encode(result)?,
    }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        append_entries(&self.node, request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream = BoxStream<'static, Result<RaftMessage, Status>>;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        let node = self.node.clone();
        // One request at a time, answered in order; a bad message ends the stream.
        let answers = request.into_inner().then(move |message| {
            let node = node.clone();
            async move { append_entries(&node, message?).await }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        check_group(message.group_id)?;
        let rpc: VoteRequest<NodeId> = codec::decode(&message.payload)?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        check_group(message.group_id)?;
        let rpc: VoteRequest<NodeId> = codec::decode(&message.payload)?;
        let response = pre_vote::answer(&self.node, &rpc)
            .await
            .ok_or_else(|| Status::unavailable("raft has stopped"))?;
        reply(&response)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        check_group(message.group_id)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = codec::decode(&message.payload)?;
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let message = request.into_inner();
        check_group(message.group_id)?;
        let results = forward::serve(&self.node.proposals, message.commands).await;
        Ok(Response::new(ForwardResponse { results }))
    }

    type ForwardStreamStream = BoxStream<'static, Result<ForwardResponse, Status>>;

    async fn forward_stream(
        &self,
        request: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let node = self.node.clone();
        // Rounds are served together and answered in the order they came.
        let answers = request
            .into_inner()
            .map(move |message| {
                let node = node.clone();
                async move {
                    let message = message?;
                    check_group(message.group_id)?;
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
        check_group(request.into_inner().group_id)?;
        self.node
            .raft
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
        check_group(request.into_inner().group_id)?;
        let read_index = self.node.local_read_index().await?;
        let (leader_id, term) = {
            let server = self.node.raft.server_metrics();
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
        check_group(message.group_id)?;
        let change: MembershipChange = codec::decode(&message.payload)?;
        // `None`: not the leader (nothing changed), so the caller may look elsewhere.
        let outcome: Option<Result<(), MembershipError>> =
            match self.node.change_membership_local(&change).await {
                Ok(()) => Some(Ok(())),
                Err(LocalChange::Refused(error)) => Some(Err(error)),
                Err(LocalChange::NotLeader(_) | LocalChange::Retry) => None,
            };
        reply(&outcome)
    }

    async fn membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        check_group(request.into_inner().group_id)?;
        let metrics = self.node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let config_index = metrics
            .membership_config
            .log_id()
            .map_or(0, |log_id| log_id.index);
        let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
        Ok(Response::new(MembershipResponse {
            cluster_id: self.node.member.cluster_id,
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
        let member = &self.node.member;
        Ok(Response::new(NodeInfoResponse {
            member_id: member.id,
            cluster_id: member.cluster_id,
            name: member.name.clone(),
            client_urls: member.client_urls.clone(),
            peer_urls: member.peer_urls.clone(),
        }))
    }
}
