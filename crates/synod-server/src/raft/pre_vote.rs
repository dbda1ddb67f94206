//! Elections with a pre-vote (etcd's `--pre-vote`, on by default since etcd 3.5).
//!
//! openraft 0.9 has no pre-vote: when a member's election timer fires it raises
//! its term and asks for votes, whether or not it can win. A member cut off from
//! the others, or one that hears them but cannot reach them, then raises its term
//! at every timeout. The others learn the higher term from its answers, and
//! whichever leader they elect steps down at its next message to it: the cluster
//! can stay without a leader for as long as the fault lasts, and a member that
//! comes back from a partition deposes a healthy leader.
//!
//! So openraft's own timer is off (`Config::enable_elect`) and [`run`] keeps it
//! instead, with openraft's timing: a member that follows a leader waits the
//! leader's lease plus a random election timeout after it last heard from it; one
//! that does not, the election timeout alone. When the timer fires, the member
//! first asks every voter whether it would grant a vote for the next term, which
//! changes nothing anywhere, and campaigns only if a majority of each voter set
//! says yes (`--pre-vote=false` skips the asking, as in etcd). Safety does not
//! depend on any of this: openraft's vote decides.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::{Raft, ServerState, Vote};
use rand::Rng;
use synod_proto::synodpeer::RaftMessage;
use synod_storage::{LogId, MemberNode, NodeId, TypeConfig};
use tokio::time::Instant;

use super::codec;
use crate::limits::PEER_RPC_TIMEOUT;
use crate::node::Node;

/// The election timer's settings, taken from openraft's configuration so that
/// they mean what they mean to openraft's vote.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Shortest election timeout.
    election_min: Duration,
    /// Longest election timeout, and the lease during which a member that heard
    /// from its leader refuses to vote for anyone else.
    lease: Duration,
    /// How often the timer looks at the member's state.
    tick: Duration,
}

impl Timing {
    fn of(config: &openraft::Config) -> Timing {
        Timing {
            election_min: Duration::from_millis(config.election_timeout_min),
            lease: Duration::from_millis(config.election_timeout_max),
            tick: Duration::from_millis(config.heartbeat_interval.max(1)),
        }
    }

    /// A fresh random election timeout, so that members rarely campaign at once.
    fn random_timeout(&self) -> Duration {
        let spread = self.lease.saturating_sub(self.election_min);
        self.election_min + spread.mul_f64(rand::rng().random_range(0.0..1.0))
    }
}

/// The part of a member's Raft state a vote is judged by.
#[derive(Debug, Clone)]
struct VoterState {
    vote: Vote<NodeId>,
    /// When the vote last changed or was confirmed by the leader's messages.
    vote_touched: Option<Instant>,
    server_state: ServerState,
    /// The voter sets: one, or two while a membership change is under way.
    voter_sets: Vec<BTreeSet<NodeId>>,
    /// Every member of the current configuration, learners included.
    members: BTreeMap<NodeId, MemberNode>,
}

impl VoterState {
    async fn of(raft: &Raft<TypeConfig>) -> Option<VoterState> {
        raft.with_raft_state(|state| {
            let membership = state.membership_state.effective().membership();
            VoterState {
                vote: *state.vote_ref(),
                vote_touched: state.vote_last_modified(),
                server_state: state.server_state,
                voter_sets: membership.get_joint_config().clone(),
                members: membership
                    .nodes()
                    .map(|(id, node)| (*id, node.clone()))
                    .collect(),
            }
        })
        .await
        .ok()
    }

    fn is_voter(&self, id: NodeId) -> bool {
        self.voter_sets.iter().any(|voters| voters.contains(&id))
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.voter_sets.iter().flatten().copied().collect()
    }
}

/// Whether `granted` holds a majority of every voter set.
fn is_quorum(voter_sets: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    voter_sets
        .iter()
        .all(|voters| voters.intersection(granted).count() * 2 > voters.len())
}

/// Whether a member in `state`, whose log ends at `last_log_id`, would grant
/// `request` now. These are the checks openraft's vote makes (the leader's lease,
/// the vote, the log), plus one: a leader still acknowledged by a majority within
/// the lease (`quorum_acked` ago) refuses, as etcd's leader ignores pre-votes.
fn would_grant(
    state: &VoterState,
    last_log_id: Option<&LogId>,
    quorum_acked: Option<Duration>,
    request: &VoteRequest<NodeId>,
    lease: Duration,
    now: Instant,
) -> bool {
    let in_touch = if state.server_state == ServerState::Leader {
        quorum_acked.is_some_and(|since| since <= lease)
    } else {
        state.vote.is_committed()
            && state
                .vote_touched
                .is_some_and(|touched| now <= touched + lease)
    };
    !in_touch && request.vote >= state.vote && request.last_log_id.as_ref() >= last_log_id
}

/// This member's answer to a pre-vote `request`; `None` once Raft has stopped.
pub async fn answer(node: &Node, request: &VoteRequest<NodeId>) -> Option<VoteResponse<NodeId>> {
    let state = VoterState::of(&node.raft).await?;
    let last_log_id = node.log.last_log_id();
    let quorum_acked = node
        .raft
        .metrics()
        .borrow()
        .millis_since_quorum_ack
        .map(Duration::from_millis);
    let lease = Timing::of(node.raft.config()).lease;
    let granted = would_grant(
        &state,
        last_log_id.as_ref(),
        quorum_acked,
        request,
        lease,
        Instant::now(),
    );
    Some(VoteResponse::new(state.vote, last_log_id, granted))
}

/// Keeps this member's election timer until Raft stops; campaigns without asking
/// first unless `pre_vote`. Also keeps [`Node::has_leader`]: a follower loses its
/// leader when its timer fires.
pub async fn run(node: &Node, pre_vote: bool) {
    let timing = Timing::of(node.raft.config());
    let me = node.member.id;
    let mut timeout = timing.random_timeout();
    let mut next_try = Instant::now();
    loop {
        tokio::time::sleep(timing.tick).await;
        let Some(state) = VoterState::of(&node.raft).await else {
            node.has_leader.send_replace(false);
            return;
        };
        let now = Instant::now();
        let quiet = if state.vote.is_committed() {
            timing.lease + timeout
        } else {
            timeout
        };
        let heard = state
            .vote_touched
            .is_some_and(|touched| now < touched + quiet);
        let alone = state.voters() == BTreeSet::from([me]);
        let leading = state.server_state == ServerState::Leader;
        let has_leader = if leading {
            let acked = node.raft.metrics().borrow().millis_since_quorum_ack;
            alone || acked.is_some_and(|millis| Duration::from_millis(millis) <= timing.lease)
        } else {
            state.vote.is_committed() && heard
        };
        node.has_leader
            .send_if_modified(|known| std::mem::replace(known, has_leader) != has_leader);
        if leading || !state.is_voter(me) || heard || now < next_try {
            continue;
        }
        if alone && state.server_state == ServerState::Candidate {
            continue;
        }
        if alone || !pre_vote || majority_would_vote(node, &state, &timing).await {
            if let Err(error) = node.raft.trigger().elect().await {
                tracing::warn!(%error, "could not start an election");
            }
        }
        timeout = timing.random_timeout();
        next_try = Instant::now() + timeout;
    }
}

/// Asks every other voter whether it would vote for this member in the next
/// term; true as soon as a majority of every voter set would.
async fn majority_would_vote(node: &Node, state: &VoterState, timing: &Timing) -> bool {
    let me = node.member.id;
    let term = state.vote.leader_id().term + 1;
    let request = VoteRequest::new(Vote::new(term, me), node.log.last_log_id());
    let Ok(payload) = codec::encode(&request) else {
        return false;
    };
    let deadline = timing.election_min.min(PEER_RPC_TIMEOUT);
    let mut asks: FuturesUnordered<_> = state
        .voters()
        .into_iter()
        .filter(|id| *id != me)
        .filter_map(|id| Some((id, state.members.get(&id)?)))
        .filter_map(|(id, member)| Some((id, node.peers.for_node(member).ok()?)))
        .map(|(id, mut client)| {
            let mut grpc_request = tonic::Request::new(RaftMessage {
                group_id: node.group,
                payload: payload.clone(),
            });
            grpc_request.set_timeout(deadline);
            async move {
                let granted = match client.pre_vote(grpc_request).await {
                    Ok(reply) => codec::decode::<VoteResponse<NodeId>>(&reply.into_inner().payload)
                        .is_ok_and(|response| response.vote_granted),
                    Err(_) => false,
                };
                (id, granted)
            }
        })
        .collect();
    let mut granted = BTreeSet::from([me]);
    while let Some((id, yes)) = asks.next().await {
        if yes {
            granted.insert(id);
            if is_quorum(&state.voter_sets, &granted) {
                tracing::info!(term, granted = ?granted, "pre-vote won; campaigning");
                return true;
            }
        }
    }
    tracing::debug!(term, granted = ?granted, "pre-vote lost; not campaigning");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(2);

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    fn follower(vote: Vote<NodeId>, touched_ago: Duration, now: Instant) -> VoterState {
        VoterState {
            vote,
            vote_touched: Some(now - touched_ago),
            server_state: ServerState::Follower,
            voter_sets: vec![BTreeSet::from([1, 2, 3])],
            members: BTreeMap::new(),
        }
    }

    fn committed(term: u64, leader: NodeId) -> Vote<NodeId> {
        Vote::new_committed(term, leader)
    }

    fn ask(term: u64, candidate: NodeId, last: Option<LogId>) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(term, candidate), last)
    }

    #[test]
    fn a_follower_refuses_while_it_hears_its_leader() {
        let now = Instant::now() + Duration::from_secs(60);
        let state = follower(committed(3, 1), Duration::from_millis(500), now);
        let last = Some(log_id(3, 10));
        let request = ask(4, 2, last);
        assert!(!would_grant(
            &state,
            last.as_ref(),
            None,
            &request,
            LEASE,
            now
        ));
        let quiet = follower(committed(3, 1), LEASE * 2, now);
        assert!(would_grant(
            &quiet,
            last.as_ref(),
            None,
            &request,
            LEASE,
            now
        ));
    }

    #[test]
    fn a_shorter_log_or_an_older_term_is_refused() {
        let now = Instant::now() + Duration::from_secs(60);
        let state = follower(committed(3, 1), LEASE * 2, now);
        let mine = Some(log_id(3, 10));
        let behind = ask(4, 2, Some(log_id(3, 9)));
        assert!(!would_grant(
            &state,
            mine.as_ref(),
            None,
            &behind,
            LEASE,
            now
        ));
        let stale_term = ask(2, 2, mine);
        assert!(!would_grant(
            &state,
            mine.as_ref(),
            None,
            &stale_term,
            LEASE,
            now
        ));
        // A vote for someone else in the same term is not given twice.
        let voted = follower(Vote::new(4, 3), LEASE * 2, now);
        assert!(!would_grant(
            &voted,
            mine.as_ref(),
            None,
            &ask(4, 2, mine),
            LEASE,
            now
        ));
    }

    #[test]
    fn a_leader_refuses_while_a_majority_answers_it() {
        let now = Instant::now() + Duration::from_secs(60);
        let mut state = follower(committed(3, 1), LEASE * 2, now);
        state.server_state = ServerState::Leader;
        let last = Some(log_id(3, 10));
        let request = ask(4, 2, last);
        let acked = Some(Duration::from_millis(100));
        assert!(!would_grant(
            &state,
            last.as_ref(),
            acked,
            &request,
            LEASE,
            now
        ));
        let lost = Some(LEASE * 2);
        assert!(would_grant(
            &state,
            last.as_ref(),
            lost,
            &request,
            LEASE,
            now
        ));
    }

    #[test]
    fn a_quorum_needs_a_majority_of_every_voter_set() {
        let old = BTreeSet::from([1, 2, 3]);
        let new = BTreeSet::from([3, 4, 5]);
        let joint = [old.clone(), new];
        assert!(is_quorum(&[old], &BTreeSet::from([1, 2])));
        assert!(!is_quorum(&joint, &BTreeSet::from([1, 2])));
        assert!(is_quorum(&joint, &BTreeSet::from([1, 3, 4])));
    }
}
