//! Getting a client request committed: the size and space checks etcd applies to
//! proposals, then the round trip through the log.

use prost::Message;
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::{AlarmRequest, AlarmType};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::command_result::Result as Outcome;
use synod_proto::synodpb::Command;
use synod_storage::alarm;

use super::error::ApiError;
use crate::limits::PROPOSAL_HEADER_BYTES;
use crate::node::Node;

/// Proposes `op` and returns what the state machine produced for it; refusals by the
/// state machine come back as their API errors.
pub async fn commit(node: &Node, op: Op) -> Result<Outcome, ApiError> {
    check_quota(node, &op).await?;
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

/// Refuses a write that would grow the database past `--quota-backend-bytes`, and
/// raises the NOSPACE alarm so every member refuses writes until it is disarmed (as
/// etcd's quota does). Reads and deletes cost nothing and always pass.
async fn check_quota(node: &Node, op: &Op) -> Result<(), ApiError> {
    let cost = alarm::write_cost(op);
    let Some(quota) = node.limits.backend_quota_bytes else {
        return Ok(());
    };
    if cost == 0 || node.db.file_size().saturating_add(cost) < quota {
        return Ok(());
    }
    let raised = node
        .reader
        .alarms()
        .map(|alarms| alarm::no_space(&alarms))
        .unwrap_or(false);
    if !raised {
        let activate = Op::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: node.member.id,
            alarm: AlarmType::Nospace as i32,
        });
        if let Err(error) = node.propose(Command { op: Some(activate) }).await {
            tracing::warn!(%error, "could not raise the NOSPACE alarm");
        }
    }
    Err(ApiError::NoSpace)
}

/// The error for a result of the wrong kind (a bug, not a client error).
pub fn unexpected(outcome: &Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected command result {outcome:?}"))
}
