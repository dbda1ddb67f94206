//! Getting a client request committed: the size check etcd applies to proposals,
//! then the round trip through the log.

use prost::Message;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::command_result::Result as Outcome;
use synod_proto::synodpb::Command;

use super::error::ApiError;
use crate::limits::PROPOSAL_HEADER_BYTES;
use crate::node::Node;

/// Proposes `op` and returns what the state machine produced for it; refusals by the
/// state machine come back as their API errors.
pub async fn commit(node: &Node, op: Op) -> Result<Outcome, ApiError> {
    let command = Command { op: Some(op) };
    if command.encoded_len() + PROPOSAL_HEADER_BYTES > node.limits.request_bytes_max {
        return Err(ApiError::RequestTooLarge);
    }
    let result = node.propose(command).await?;
    match result.result {
        Some(Outcome::Error(error)) => Err(ApiError::from_apply(error.kind)),
        Some(outcome) => Ok(outcome),
        None => Err(ApiError::Internal("command produced no result".into())),
    }
}

/// The error for a result of the wrong kind (a bug, not a client error).
pub fn unexpected(outcome: &Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected command result {outcome:?}"))
}
