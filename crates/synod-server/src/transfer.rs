//! Leadership transfer (etcd's MoveLeader).
//!
//! openraft 0.9 has no transfer of its own, and its followers refuse to vote while
//! their leader's lease lasts. So the leader goes quiet: it holds back proposals and
//! reads and stops heartbeats until every follower's lease has run out, makes sure
//! the target holds its whole log, then tells the target to campaign at once. The
//! target wins before any other follower's election timer fires, because those wait
//! a lease plus an election timeout. Requests held back meanwhile go on to the new
//! leader.

use std::time::Duration;

use synod_proto::synodpeer::TimeoutNowRequest;
use tokio::time::Instant;

use crate::limits::TRANSFER_LEASE_MARGIN;
use crate::membership::matched_index;
use crate::node::Node;
use synod_storage::NodeId;

/// Why a transfer did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can hand leadership over.
    #[error("not the leader")]
    NotLeader,
    /// The target is not a voting member.
    #[error("member {0:x} cannot lead: it is not a voting member")]
    BadTarget(NodeId),
    /// The target did not take over in time; this member may still lead.
    #[error("member {0:x} did not take over in time")]
    Timeout(NodeId),
}

/// Makes `target` the leader; returns once it leads.
pub async fn move_leader(node: &Node, target: NodeId) -> Result<(), TransferError> {
    let metrics = node.raft.metrics().borrow().clone();
    if metrics.current_leader != Some(node.member.id) {
        return Err(TransferError::NotLeader);
    }
    if !metrics
        .membership_config
        .membership()
        .voter_ids()
        .any(|id| id == target)
    {
        return Err(TransferError::BadTarget(target));
    }
    if target == node.member.id {
        return Ok(());
    }
    let config = node.raft.config().clone();
    let election = Duration::from_millis(config.election_timeout_min);
    let lease = Duration::from_millis(config.election_timeout_max);
    let deadline = Instant::now() + lease + election * 4;

    let _quiet = node.transfer_gate.write().await;
    let _heartbeats = HeartbeatsOff::new(node);
    let silent_since = Instant::now();
    wait_caught_up(node, target, deadline).await?;
    tokio::time::sleep_until(silent_since + lease + TRANSFER_LEASE_MARGIN).await;

    let target_node = metrics
        .membership_config
        .membership()
        .get_node(&target)
        .cloned()
        .ok_or(TransferError::BadTarget(target))?;
    let mut client = node
        .peers
        .for_node(&target_node)
        .map_err(|_| TransferError::BadTarget(target))?;
    let mut request = tonic::Request::new(TimeoutNowRequest {
        group_id: node.group,
    });
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    if let Err(status) = client.timeout_now(request).await {
        tracing::warn!(%status, target, "leadership transfer: the target did not campaign");
        return Err(TransferError::Timeout(target));
    }
    node.raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(
            |metrics| metrics.current_leader == Some(target),
            "new leader",
        )
        .await
        .map_err(|_| TransferError::Timeout(target))?;
    tracing::info!(target, "handed leadership over");
    Ok(())
}

/// Waits until `target` has every entry this leader has.
async fn wait_caught_up(
    node: &Node,
    target: NodeId,
    deadline: Instant,
) -> Result<(), TransferError> {
    node.raft
        .wait(Some(deadline.saturating_duration_since(Instant::now())))
        .metrics(
            |metrics| {
                matched_index(metrics, target)
                    .is_some_and(|matched| Some(matched) == metrics.last_log_index)
            },
            "transfer target caught up",
        )
        .await
        .map(|_| ())
        .map_err(|_| TransferError::Timeout(target))
}

/// Turns the leader's heartbeats off for as long as it lives.
struct HeartbeatsOff<'a> {
    node: &'a Node,
}

impl<'a> HeartbeatsOff<'a> {
    fn new(node: &'a Node) -> Self {
        node.raft.runtime_config().heartbeat(false);
        Self { node }
    }
}

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.node.raft.runtime_config().heartbeat(true);
    }
}
