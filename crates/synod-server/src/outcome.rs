//! What became of a request the cluster was asked to carry out, as opposed to one
//! the store refused: committed, never proposed (safe to send again), or failed
//! with an outcome the client must be told.

use synod_proto::synodpb::CommandResult as ResultMessage;

/// Why a request could not be carried out by the cluster (as opposed to being
/// refused by the store).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No leader could be found before the deadline.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request was sent but its outcome is unknown: it may or may not commit.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The request was sent to the leader, but the exchange broke before its
    /// answer came back: it may or may not commit.
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    ConnectionLost,
    /// The leader lost leadership while the request was in its log: it may or may
    /// not commit (etcd's answer to the same).
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The node is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The leader answered a forwarded request with an error.
    #[error("forwarded request failed: {0}")]
    Forwarded(tonic::Status),
    /// Something is wrong with this node's storage or Raft state.
    #[error("etcdserver: {0}")]
    Internal(String),
}

/// A committed and applied command.
#[derive(Debug)]
pub struct Committed {
    /// What the state machine produced.
    pub result: ResultMessage,
    /// The command's log index.
    pub log_index: u64,
}

/// Why a local proposal did not happen.
#[derive(Debug)]
pub enum ProposeError {
    /// This node does not lead; the command was not proposed.
    NotLeader,
    /// The node failed.
    Node(NodeError),
}

/// Status a peer answers a leader-only question with when it does not lead, so
/// the asker knows nothing was done and may ask the leader.
pub fn not_leader() -> tonic::Status {
    tonic::Status::failed_precondition("synod: not leader")
}
