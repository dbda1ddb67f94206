//! Membership changes through Raft's joint consensus, run by the leader whichever
//! member the request reached.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics};
use serde::{Deserialize, Serialize};
use synod_proto::synodpeer::RaftMessage;
use synod_storage::{member_attributes, MemberNode, NodeId};
use tokio::time::Instant;

use crate::leadership::{until_done, Attempt};
use crate::limits::{
    CAUGHT_UP_LAG_ENTRIES, MEMBERSHIP_CATCH_UP, PROMOTION_CHECK_INTERVAL, REQUEST_TIMEOUT,
};
use crate::node::Node;
use crate::raft::codec;

/// One change to the membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a non-voting member (a learner), which replicates but does not vote.
    AddLearner(NodeId, MemberNode),
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a member, voter or learner.
    Remove(NodeId),
    /// Change a member's peer URLs.
    Update(NodeId, MemberNode),
}

/// Why a membership change was refused or failed.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum MembershipError {
    /// No member has that id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// Promote of a member that is already a voter.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// Promote of a learner that has not caught up with the leader's log.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The cluster could not carry out the change in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Raft refused the change.
    #[error("etcdserver: {0}")]
    Raft(String),
}

impl Node {
    /// Applies `change` through the leader (forwarding it there if needed) and
    /// waits until the new membership is committed.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), MembershipError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT * 2;
        let outcome = until_done(
            deadline,
            || MembershipError::Timeout,
            || async {
                match self.change_membership_local(&change).await {
                    Ok(()) => Attempt::Done(Ok(())),
                    Err(LocalChange::Refused(error)) => Attempt::Done(Err(error)),
                    Err(LocalChange::NotLeader(Some(leader))) => {
                        match self.forward_membership(&leader, &change, deadline).await {
                            Some(outcome) => Attempt::Done(outcome),
                            None => Attempt::NotDone,
                        }
                    }
                    Err(LocalChange::Retry | LocalChange::NotLeader(None)) => Attempt::NotDone,
                }
            },
        )
        .await;
        if outcome.is_ok() {
            self.catch_up_after_change().await;
        }
        outcome
    }

    /// Runs `change` on this member, which must lead.
    pub async fn change_membership_local(
        &self,
        change: &MembershipChange,
    ) -> Result<(), LocalChange> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        let is_member = |id: &NodeId| membership.get_node(id).is_some();
        let is_voter = |id: &NodeId| membership.voter_ids().any(|voter| voter == *id);
        let changes: ChangeMembers<NodeId, MemberNode> = match change.clone() {
            MembershipChange::AddLearner(id, node) => {
                ChangeMembers::AddNodes(BTreeMap::from([(id, node)]))
            }
            MembershipChange::Promote(id) if !is_member(&id) => {
                return Err(LocalChange::Refused(MembershipError::MemberNotFound))
            }
            MembershipChange::Promote(id) if is_voter(&id) => {
                return Err(LocalChange::Refused(MembershipError::NotLearner))
            }
            MembershipChange::Promote(id) if !self.learner_in_sync(id) => {
                return Err(LocalChange::Refused(MembershipError::LearnerNotReady))
            }
            MembershipChange::Promote(id) => ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            MembershipChange::Remove(id) if !is_member(&id) => {
                return Err(LocalChange::Refused(MembershipError::MemberNotFound))
            }
            MembershipChange::Remove(id) if is_voter(&id) => {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            }
            MembershipChange::Remove(id) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            MembershipChange::Update(id, _) if !is_member(&id) => {
                return Err(LocalChange::Refused(MembershipError::MemberNotFound))
            }
            MembershipChange::Update(id, node) => {
                ChangeMembers::SetNodes(BTreeMap::from([(id, node)]))
            }
        };
        let result =
            tokio::time::timeout(REQUEST_TIMEOUT, self.raft.change_membership(changes, false))
                .await;
        match result {
            Err(_) => Err(LocalChange::Refused(MembershipError::Timeout)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(LocalChange::NotLeader(
                    forward
                        .leader_node
                        .filter(|_| forward.leader_id != Some(self.member.id)),
                ))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error)))) => {
                match error {
                    // Another change is still being committed: wait for it.
                    ChangeMembershipError::InProgress(_) => Err(LocalChange::Retry),
                    ChangeMembershipError::LearnerNotFound(_) => {
                        Err(LocalChange::Refused(MembershipError::MemberNotFound))
                    }
                    other => Err(LocalChange::Refused(MembershipError::Raft(
                        other.to_string(),
                    ))),
                }
            }
            Ok(Err(RaftError::Fatal(error))) => Err(LocalChange::Refused(MembershipError::Raft(
                error.to_string(),
            ))),
        }
    }

    /// Waits (briefly) until this member has applied the change too, so that the
    /// member list it answers with shows it, as etcd's does. Best effort: a
    /// member just removed may not get a read index any more.
    async fn catch_up_after_change(&self) {
        let _ = tokio::time::timeout(MEMBERSHIP_CATCH_UP, self.read_barrier()).await;
    }

    /// Whether learner `id` holds at least 90% of the leader's log, etcd's bar for
    /// promotion. Only the leader knows; elsewhere the answer is yes and the leader
    /// decides when the change reaches it.
    fn learner_in_sync(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let (true, Some(last)) = (metrics.replication.is_some(), metrics.last_log_index) else {
            return true;
        };
        let matched = matched_index(&metrics, id).unwrap_or(0);
        matched.saturating_mul(10) >= last.saturating_mul(9)
    }

    /// Asks the leader to run `change`; `None` if it could not be reached or no
    /// longer leads (the change was not made).
    async fn forward_membership(
        &self,
        leader: &MemberNode,
        change: &MembershipChange,
        deadline: Instant,
    ) -> Option<Result<(), MembershipError>> {
        let mut client = self.peers.for_node(leader).ok()?;
        let mut request = tonic::Request::new(RaftMessage {
            group_id: self.group,
            payload: codec::encode(change).ok()?,
        });
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
        let reply = client.change_membership(request).await.ok()?.into_inner();
        let outcome: Option<Result<(), MembershipError>> = codec::decode(&reply.payload).ok()?;
        outcome
    }
}

/// The last log index the leader knows member `id` holds: `None` when this member
/// does not lead (only a leader tracks replication) or has no match for `id` yet.
pub fn matched_index(metrics: &RaftMetrics<NodeId, MemberNode>, id: NodeId) -> Option<u64> {
    metrics
        .replication
        .as_ref()?
        .get(&id)?
        .as_ref()
        .map(|log_id| log_id.index)
}

/// While this member leads, makes each learner that MemberAdd added as a voter
/// (marked so in its replicated attributes) a voter once it has caught up. A
/// voter is added in two steps (learner, then voter) so that the quorum never
/// includes a member that has not started or caught up: adding it does not cost
/// availability. The leader does it, not the member that took the MemberAdd, so a
/// failure of that member or a change of leader does not leave it a learner.
pub async fn promote_added_voters(node: &Node) {
    loop {
        tokio::time::sleep(PROMOTION_CHECK_INTERVAL).await;
        let metrics = node.raft.metrics().borrow().clone();
        let (true, Some(last)) = (metrics.replication.is_some(), metrics.last_log_index) else {
            continue;
        };
        let caught_up: Vec<NodeId> = metrics
            .membership_config
            .membership()
            .learner_ids()
            .filter(|id| {
                matched_index(&metrics, *id)
                    .is_some_and(|matched| matched + CAUGHT_UP_LAG_ENTRIES >= last)
            })
            .collect();
        if caught_up.is_empty() {
            continue;
        }
        // The store is read off the async workers (a read may wait on a commit).
        let (db, group) = (node.db.clone(), node.group);
        let Ok(Ok(attributes)) =
            tokio::task::spawn_blocking(move || member_attributes(&db, group)).await
        else {
            continue;
        };
        for id in caught_up {
            let added_as_voter = attributes
                .iter()
                .any(|stored| stored.member_id == id && stored.voter);
            if !added_as_voter {
                continue;
            }
            let member = format!("{id:x}");
            match node
                .change_membership_local(&MembershipChange::Promote(id))
                .await
            {
                Ok(()) => tracing::info!(member, "added voter promoted"),
                Err(error) => tracing::debug!(?error, member, "promotion failed; will retry"),
            }
        }
    }
}

/// The outcome of trying a change on this member.
#[derive(Debug)]
pub enum LocalChange {
    /// This member does not lead; the leader, if known.
    NotLeader(Option<MemberNode>),
    /// The change cannot start yet; try again.
    Retry,
    /// The change was refused or failed.
    Refused(MembershipError),
}
