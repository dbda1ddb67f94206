//! Batched read index. A linearizable read needs the leader to confirm, with a
//! quorum, that it still leads, and the commit index at that moment. Reads that
//! arrive while a confirmation is under way wait for the next one and share it, so
//! a burst of reads costs one quorum round instead of one each.
//!
//! Sharing is safe only with a round that *starts after* a read arrived: a round
//! already under way may have taken its commit index before a write the reader has
//! seen acknowledged. [`crate::batch::Batcher`] gives exactly that: a round takes
//! the reads waiting when it starts.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::Raft;
use synod_proto::synodpeer::ReadIndexRequest;
use synod_storage::{GroupId, NodeId, TypeConfig};

use crate::batch::{Batcher, Limit};
use crate::leadership::leader_elsewhere;
use crate::limits::REQUEST_TIMEOUT;
use crate::raft::network::PeerClients;

/// Leadership confirmations, shared by the reads waiting when each starts.
pub type LeaderReads = Batcher<(), ReadIndex>;

/// Read indexes asked of the leader, shared like [`LeaderReads`]; `None` when no
/// leader answered.
pub type FollowerReads = Batcher<(), Option<u64>>;

/// Confirmations of `raft`'s leadership, held back while `gate` is held
/// exclusively. Read indexes are at least `floor` (see
/// [`crate::node::Node::recovered_log_index`]).
pub fn leader_reads(
    raft: Raft<TypeConfig>,
    gate: Arc<tokio::sync::RwLock<()>>,
    floor: u64,
) -> Arc<LeaderReads> {
    Batcher::new(Limit::unlimited(), move |reads: Vec<()>| {
        let (raft, gate) = (raft.clone(), gate.clone());
        async move { vec![confirm_leadership(raft, gate, floor).await; reads.len()] }
    })
}

/// Read indexes that member `me` asks of the member `raft` says leads.
pub fn follower_reads(
    raft: Raft<TypeConfig>,
    group: GroupId,
    peers: PeerClients,
    me: NodeId,
) -> Arc<FollowerReads> {
    Batcher::new(Limit::unlimited(), move |reads: Vec<()>| {
        let (raft, peers) = (raft.clone(), peers.clone());
        async move { vec![ask_leader_for_read_index(raft, group, peers, me).await; reads.len()] }
    })
}

/// What one leadership confirmation round found.
#[derive(Debug, Clone)]
pub enum ReadIndex {
    /// This member leads; reads may proceed once this log index is applied.
    Ready(u64),
    /// This member does not lead.
    NotLeader,
    /// Leadership could not be confirmed with a quorum.
    NoQuorum(String),
    /// Raft has stopped.
    Stopped,
}

/// One confirmation round on the leader (held back while leadership is handed over).
/// The read index is at least `floor` (see [`crate::node::Node::recovered_log_index`]).
async fn confirm_leadership(
    raft: Raft<TypeConfig>,
    gate: Arc<tokio::sync::RwLock<()>>,
    floor: u64,
) -> ReadIndex {
    let _gate = gate.read().await;
    match tokio::time::timeout(REQUEST_TIMEOUT, raft.get_read_log_id()).await {
        Err(_) => ReadIndex::NoQuorum("read index: leadership not confirmed in time".into()),
        Ok(Ok((read_log_id, _))) => {
            ReadIndex::Ready(read_log_id.map_or(0, |log_id| log_id.index).max(floor))
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
            ReadIndex::NotLeader
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(error)))) => {
            ReadIndex::NoQuorum(error.to_string())
        }
        Ok(Err(RaftError::Fatal(_))) => ReadIndex::Stopped,
    }
}

/// One follower round: asks the member this one believes leads for a read index.
async fn ask_leader_for_read_index(
    raft: Raft<TypeConfig>,
    group: GroupId,
    peers: PeerClients,
    me: NodeId,
) -> Option<u64> {
    let leader = leader_elsewhere(&raft, me)?;
    let mut client = peers.for_node(&leader).ok()?;
    let mut request = tonic::Request::new(ReadIndexRequest { group_id: group });
    request.set_timeout(Duration::from_secs(2));
    client
        .read_index(request)
        .await
        .ok()
        .map(|response| response.into_inner().read_index)
}
