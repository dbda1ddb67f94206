//! A running member: its Raft instance, its store, and the two things every client
//! request needs from them — getting a command committed (here or at the leader)
//! and making a read linearizable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use synod_proto::etcdserverpb::ResponseHeader;
use synod_proto::synodpb::{Command as CommandMessage, CommandResult as ResultMessage};
use synod_proto::synodpeer::LeaseRequest;
use synod_storage::mvcc::MvccReader;
use synod_storage::{Applied, GroupId, MemberNode, NodeId, TypeConfig};
use synod_storage::{LogStore, Store};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::forward::{ForwardError, Forwards};
use crate::leadership::{leader_elsewhere, until_done, Attempt};
use crate::lease::{KeeperError, LeaseKeeper, LeaseTtl};
use crate::limits::{Limits, REQUEST_TIMEOUT};
use crate::outcome::{not_leader, NodeError, ProposeError};
use crate::point_reads::PointReads;
use crate::proposal::Proposals;
use crate::raft::network::PeerClients;
use crate::read_index::{FollowerReads, LeaderReads, ReadIndex};

/// Identity and addresses of this member.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// This member's id.
    pub id: NodeId,
    /// The cluster's id.
    pub cluster_id: u64,
    /// `--name`.
    pub name: String,
    /// Advertised client URLs.
    pub client_urls: Vec<String>,
    /// Advertised peer URLs.
    pub peer_urls: Vec<String>,
}

/// A running member of the cluster. Shared by every API service.
pub struct Node {
    /// Who this member is.
    pub member: MemberInfo,
    /// The Raft group this is a replica of.
    pub group: GroupId,
    /// The Raft instance of the default group.
    pub raft: Raft<TypeConfig>,
    /// The default group's Raft log, which Raft writes; read here only for its
    /// last entry, which a pre-vote is judged by.
    pub log: LogStore,
    /// Whether this member knows a live leader: it leads and a majority answers
    /// it, or it heard from its leader within an election timeout (kept by
    /// [`crate::raft::pre_vote::run`]). Require-leader requests go by it.
    pub has_leader: watch::Sender<bool>,
    /// Reads of the applied state.
    pub reader: MvccReader,
    /// The node's database: the store and everything but the Raft log.
    pub db: Arc<Store>,
    /// The data dir.
    pub data_dir: PathBuf,
    /// Request bounds.
    pub limits: Limits,
    /// Test-only: serve linearizable reads without a read index (see
    /// [`crate::config::ServerConfig::unsafe_skip_read_index`]).
    pub unsafe_skip_read_index: bool,
    /// Connections to peers.
    pub peers: PeerClients,
    /// Lease deadlines (meaningful while this member leads).
    pub leases: LeaseKeeper,
    /// What the state machine has applied; watchers wait on it.
    pub applied: watch::Receiver<Applied>,
    /// Held shared by every proposal and leader read, and exclusively while this
    /// member hands leadership over (see [`crate::transfer`]): the followers must
    /// hear nothing from it for a while, or they refuse to elect the target.
    pub transfer_gate: Arc<tokio::sync::RwLock<()>>,
    /// The last log index this member had when it started. openraft 0.9 lets a
    /// restarted leader keep leading, with a commit index recovered from disk that
    /// may be older than entries it had committed (and answered) before the crash;
    /// its read indexes are never lower than this, so they cover those entries.
    pub recovered_log_index: u64,
    /// Proposals gathered into batch entries while this member leads.
    pub proposals: Arc<Proposals>,
    /// Single-key reads of the store, batched onto the blocking pool.
    pub point_reads: Arc<PointReads>,
    /// Writes forwarded to the leader while this member follows.
    pub forwards: Arc<Forwards>,
    /// Leadership confirmations shared by concurrent reads while this member leads.
    pub leader_reads: Arc<LeaderReads>,
    /// Read-index requests to the leader shared by concurrent reads on a follower.
    pub follower_reads: Arc<FollowerReads>,
}

impl Node {
    /// The store's revision as applied on this member.
    pub fn revision(&self) -> i64 {
        self.applied.borrow().revision
    }

    /// The response header every answer carries.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.member.cluster_id,
            member_id: self.member.id,
            revision,
            raft_term: self
                .raft
                .server_metrics()
                .borrow()
                .vote
                .leader_id()
                .get_term(),
        }
    }

    /// Gets `command` committed and applied, proposing it here if this node leads and
    /// forwarding it to the leader otherwise. Retries only while the command is known
    /// not to have been proposed, so a command is never applied twice.
    pub async fn propose(&self, command: CommandMessage) -> Result<ResultMessage, NodeError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        until_done(
            deadline,
            || NodeError::NoLeader,
            || self.propose_once(&command, deadline),
        )
        .await
    }

    /// One try of [`Self::propose`]: here if no other member is known to lead, then
    /// at the leader if one is known.
    async fn propose_once(
        &self,
        command: &CommandMessage,
        deadline: Instant,
    ) -> Attempt<ResultMessage, NodeError> {
        // A follower that knows the leader skips proposing locally only to be
        // refused.
        if leader_elsewhere(&self.raft, self.member.id).is_none() {
            match self.proposals.propose(command.clone(), deadline).await {
                Ok(committed) => return Attempt::Done(Ok(committed.result)),
                Err(ProposeError::NotLeader) => {}
                Err(ProposeError::Node(error)) => return Attempt::Done(Err(error)),
            }
        }
        if leader_elsewhere(&self.raft, self.member.id).is_none() {
            return Attempt::NotDone;
        }
        let forwarded = tokio::time::timeout_at(deadline, self.forwards.submit(command.clone()));
        Attempt::Done(match forwarded.await {
            Ok(Some(Ok(committed))) => {
                // Answer only once this member has applied the write too, as etcd
                // does: a read or watch here right after the answer must see it.
                self.applied_through(committed.log_index, deadline)
                    .await
                    .map(|()| committed.result)
            }
            Ok(Some(Err(ForwardError::NotProposed))) => return Attempt::NotDone,
            Ok(Some(Err(ForwardError::Failed(error)))) => Err(error),
            Ok(None) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        })
    }

    /// Waits until this node's state machine reflects every write committed before
    /// the call, as confirmed by the current leader with a quorum: after it returns, a
    /// local read is linearizable. Concurrent reads share confirmation rounds (see
    /// [`crate::read_index`]).
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        if self.unsafe_skip_read_index {
            return Ok(());
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        until_done(
            deadline,
            || NodeError::NoLeader,
            || async {
                let leader = self.raft.server_metrics().borrow().current_leader;
                let index = if leader == Some(self.member.id) {
                    match self.confirm_leadership().await {
                        ReadIndex::Ready(index) => Some(index),
                        ReadIndex::Stopped => return Attempt::Done(Err(NodeError::Stopped)),
                        ReadIndex::NotLeader | ReadIndex::NoQuorum(_) => None,
                    }
                } else if leader.is_some() {
                    self.follower_reads.submit(()).await.flatten()
                } else {
                    None
                };
                match index {
                    Some(index) => Attempt::Done(self.applied_through(index, deadline).await),
                    None => Attempt::NotDone,
                }
            },
        )
        .await
    }

    /// Waits until this member has applied the log up to `index`. Follows the
    /// state machine's own signal rather than Raft's metrics, which change on every
    /// heartbeat and replication step and would wake every waiter each time.
    async fn applied_through(&self, index: u64, deadline: Instant) -> Result<(), NodeError> {
        let mut applied = self.applied.clone();
        let reached = applied.wait_for(|applied| applied.log_index >= index);
        let outcome = match tokio::time::timeout_at(deadline, reached).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        };
        outcome
    }

    /// Joins the next round in which this member confirms its leadership with a
    /// quorum and learns the index reads must wait for.
    async fn confirm_leadership(&self) -> ReadIndex {
        self.leader_reads
            .submit(())
            .await
            .unwrap_or(ReadIndex::Stopped)
    }

    /// The leader's half of a follower's read: confirms leadership with a quorum and
    /// returns the log index a linearizable read must wait for.
    pub async fn local_read_index(&self) -> Result<u64, tonic::Status> {
        match self.confirm_leadership().await {
            ReadIndex::Ready(index) => Ok(index),
            ReadIndex::NotLeader => Err(not_leader()),
            ReadIndex::NoQuorum(reason) => Err(tonic::Status::unavailable(reason)),
            ReadIndex::Stopped => Err(tonic::Status::unavailable(NodeError::Stopped.to_string())),
        }
    }
}

/// Which lease question to ask the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseQuery {
    /// Renew the lease and report its granted TTL.
    KeepAlive,
    /// Report the lease's TTLs without renewing it.
    TimeToLive,
}

impl Node {
    /// Asks the leader's lease keeper about lease `id` (here, if this member leads).
    /// `None` means the lease does not exist (or is being revoked).
    pub async fn lease_query(
        &self,
        id: i64,
        query: LeaseQuery,
    ) -> Result<Option<LeaseTtl>, NodeError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        until_done(
            deadline,
            || NodeError::NoLeader,
            || async move {
                match self.local_lease_query(id, query) {
                    Ok(Some(answer)) => return Attempt::Done(Ok(answer)),
                    Err(error) => return Attempt::Done(Err(error)),
                    Ok(None) => {}
                }
                let Some(leader) = leader_elsewhere(&self.raft, self.member.id) else {
                    return Attempt::NotDone;
                };
                match self.remote_lease_query(&leader, id, query, deadline).await {
                    Some(answer) => Attempt::Done(Ok(answer)),
                    None => Attempt::NotDone,
                }
            },
        )
        .await
    }

    /// Answers a lease query from this member's keeper; `Ok(None)` if it does not
    /// lead (yet).
    pub fn local_lease_query(
        &self,
        id: i64,
        query: LeaseQuery,
    ) -> Result<Option<Option<LeaseTtl>>, NodeError> {
        let stored = self
            .reader
            .lease(id)
            .map_err(|error| NodeError::Internal(error.to_string()))?;
        let answer = match query {
            LeaseQuery::KeepAlive => self.leases.renew(id, stored).map(|granted| {
                granted.map(|granted| LeaseTtl {
                    granted,
                    remaining: granted,
                })
            }),
            LeaseQuery::TimeToLive => self.leases.time_to_live(id, stored),
        };
        match answer {
            Ok(answer) => Ok(Some(answer)),
            Err(KeeperError::NotLeading) => Ok(None),
        }
    }

    async fn remote_lease_query(
        &self,
        leader: &MemberNode,
        id: i64,
        query: LeaseQuery,
        deadline: Instant,
    ) -> Option<Option<LeaseTtl>> {
        let mut client = self.peers.for_node(leader).ok()?;
        let mut request = tonic::Request::new(LeaseRequest {
            group_id: self.group,
            lease_id: id,
        });
        request.set_timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(2)),
        );
        let response = match query {
            LeaseQuery::KeepAlive => client.lease_keep_alive(request).await,
            LeaseQuery::TimeToLive => client.lease_time_to_live(request).await,
        }
        .ok()?
        .into_inner();
        Some(response.found.then_some(LeaseTtl {
            granted: response.granted_ttl,
            remaining: response.remaining_ttl,
        }))
    }
}
