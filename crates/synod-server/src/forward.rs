//! Writes that reach a follower travel to the leader, which alone can propose them.
//! A follower sends the writes that arrive while its previous forward is under way
//! together, in one peer RPC (see [`crate::batch`]): a forward then costs about as
//! much as one write of its own, whatever it carries, as the leader's log entries
//! do. The leader proposes each command as if a client had sent it there, so its
//! own proposal batching gathers them with everything else.
//!
//! Every command gets its own outcome. A command is retried elsewhere only when it
//! certainly never reached a leader's log, so no write is applied twice.

use std::sync::Arc;

use openraft::Raft;
use synod_proto::synodpb::Command as CommandMessage;
use synod_proto::synodpeer::{ForwardRequest, ForwardedResult};
use synod_storage::{GroupId, NodeId, TypeConfig};
use tokio::time::Instant;

use crate::batch::{Batcher, Limit};
use crate::forward_link::ForwardLinks;
use crate::leadership::leader_elsewhere;
use crate::limits::{
    COMMANDS_PER_FORWARD_MAX, FORWARDS_IN_FLIGHT, PEER_MESSAGE_BYTES_MAX, REQUEST_TIMEOUT,
};
use crate::outcome::{not_leader, Committed, NodeError, ProposeError};
use crate::proposal::Proposals;
use crate::raft::network::PeerClients;

/// What became of one forwarded command.
pub type Forwarded = Result<Committed, ForwardError>;

/// Why a forwarded command was not committed.
#[derive(Debug)]
pub enum ForwardError {
    /// It never reached a leader's log; it may be sent again.
    NotProposed,
    /// It failed, or its outcome is unknown.
    Failed(NodeError),
}

/// Commands forwarded to the leader, gathered into one RPC per round.
pub type Forwards = Batcher<CommandMessage, Forwarded>;

/// The forwards of member `me`, to whichever member `raft` says leads.
pub fn forwards(
    raft: Raft<TypeConfig>,
    group: GroupId,
    peers: PeerClients,
    me: NodeId,
) -> Arc<Forwards> {
    use prost::Message;
    let limit = Limit {
        in_flight: FORWARDS_IN_FLIGHT,
        items: COMMANDS_PER_FORWARD_MAX,
        weight: |command: &CommandMessage| command.encoded_len(),
        // Leave room for the framing of each command and of the request.
        weight_max: PEER_MESSAGE_BYTES_MAX / 2,
    };
    let links = Arc::new(ForwardLinks::default());
    Batcher::new(limit, move |commands| {
        forward(
            raft.clone(),
            group,
            peers.clone(),
            links.clone(),
            me,
            commands,
        )
    })
}

/// One round: sends `commands` to the leader and answers each.
async fn forward(
    raft: Raft<TypeConfig>,
    group: GroupId,
    peers: PeerClients,
    links: Arc<ForwardLinks>,
    me: NodeId,
    commands: Vec<CommandMessage>,
) -> Vec<Forwarded> {
    let count = commands.len();
    let failed_all = |error: &dyn Fn() -> ForwardError| (0..count).map(|_| Err(error())).collect();
    let Some(leader) = leader_elsewhere(&raft, me) else {
        return failed_all(&|| ForwardError::NotProposed);
    };
    let client = match peers.for_node(&leader) {
        Ok(client) => client,
        Err(error) => {
            return failed_all(&|| ForwardError::Failed(NodeError::Internal(error.to_string())))
        }
    };
    let request = ForwardRequest {
        group_id: group,
        commands,
    };
    let url = leader.peer_urls.first().map_or("", String::as_str);
    let results = match links.send(url, client, request, REQUEST_TIMEOUT).await {
        Ok(results) => results,
        Err(status) => return failed_all(&|| link_failure(&status)),
    };
    if results.len() != count {
        let reason = format!(
            "leader answered {} of {count} forwarded commands",
            results.len()
        );
        return failed_all(&|| ForwardError::Failed(NodeError::Internal(reason.clone())));
    }
    results.into_iter().map(forwarded).collect()
}

fn forwarded(answer: ForwardedResult) -> Forwarded {
    let ForwardedResult {
        result,
        log_index,
        code,
        message,
        not_proposed,
    } = answer;
    // A leader of an earlier version marks nothing: its refusal is known by its
    // status alone (kept so a rolling upgrade loses no safe retry).
    let refusal = not_leader();
    let refused_by_older_leader = code == refusal.code() as i32 && message == refusal.message();
    if not_proposed || refused_by_older_leader {
        return Err(ForwardError::NotProposed);
    }
    if code != tonic::Code::Ok as i32 {
        return Err(failure(tonic::Status::new(
            tonic::Code::from(code),
            message,
        )));
    }
    match result {
        Some(result) => Ok(Committed { result, log_index }),
        None => Err(ForwardError::Failed(NodeError::Internal(
            "leader answered a forwarded command without a result".into(),
        ))),
    }
}

/// What a command whose leader answered with `status` came to.
fn failure(status: tonic::Status) -> ForwardError {
    if was_not_sent(&status) {
        ForwardError::NotProposed
    } else if status.code() == tonic::Code::DeadlineExceeded {
        ForwardError::Failed(NodeError::Timeout)
    } else {
        ForwardError::Failed(NodeError::Forwarded(status))
    }
}

/// What the commands of a round whose exchange with the leader failed came to. A
/// failure after the round left may follow their commit, so unless the round
/// certainly never reached a leader, the client is told the outcome is unknown,
/// never that the command failed.
fn link_failure(status: &tonic::Status) -> ForwardError {
    match failure(status.clone()) {
        ForwardError::Failed(NodeError::Forwarded(_)) => {
            tracing::debug!(%status, "a forward to the leader failed; its outcome is unknown");
            ForwardError::Failed(NodeError::ConnectionLost)
        }
        known => known,
    }
}

/// Whether a forward whose exchange failed with `status` certainly never reached
/// the leader: the connection was never made. tonic says so only in the text of
/// the status it makes (its transport error kinds are private), hence the match.
fn was_not_sent(status: &tonic::Status) -> bool {
    (status.code() == tonic::Code::Unknown && status.message().starts_with("Service was not ready"))
        || (status.code() == tonic::Code::Unavailable
            && status.message().contains("tcp connect error"))
}

/// The leader's half: proposes every forwarded command as if a client had sent it
/// here, all at once so they share entries, and answers each.
pub async fn serve(
    proposals: &Arc<Proposals>,
    commands: Vec<CommandMessage>,
) -> Vec<ForwardedResult> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let proposals = commands
        .into_iter()
        .map(|command| proposals.propose(command, deadline));
    futures::future::join_all(proposals)
        .await
        .into_iter()
        .map(|outcome| match outcome {
            Ok(committed) => ForwardedResult {
                result: Some(committed.result),
                log_index: committed.log_index,
                ..Default::default()
            },
            Err(error) => {
                let not_proposed = matches!(error, ProposeError::NotLeader);
                let status = match error {
                    ProposeError::NotLeader => not_leader(),
                    ProposeError::Node(NodeError::Timeout) => {
                        tonic::Status::deadline_exceeded(NodeError::Timeout.to_string())
                    }
                    ProposeError::Node(error) => tonic::Status::unavailable(error.to_string()),
                };
                ForwardedResult {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                    not_proposed,
                    ..Default::default()
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_exchange_with_the_leader_leaves_the_outcome_unknown() {
        let unknown = |status: tonic::Status| {
            matches!(
                link_failure(&status),
                ForwardError::Failed(NodeError::ConnectionLost)
            )
        };
        assert!(unknown(tonic::Status::internal(
            "failed to decode Protobuf message: ResponseOp.response"
        )));
        assert!(unknown(tonic::Status::unavailable(
            "the leader ended the forward stream"
        )));
        assert!(matches!(
            link_failure(&tonic::Status::unavailable("tcp connect error")),
            ForwardError::NotProposed
        ));
        assert!(matches!(
            link_failure(&tonic::Status::deadline_exceeded("late")),
            ForwardError::Failed(NodeError::Timeout)
        ));
        // A command the leader did not propose may go again: marked so, or (from a
        // leader of an earlier version) refused as "not leader".
        let answer = |message: &str, not_proposed| ForwardedResult {
            code: tonic::Code::FailedPrecondition as i32,
            message: message.into(),
            not_proposed,
            ..Default::default()
        };
        assert!(matches!(
            forwarded(answer("anything", true)),
            Err(ForwardError::NotProposed)
        ));
        assert!(matches!(
            forwarded(answer(not_leader().message(), false)),
            Err(ForwardError::NotProposed)
        ));
        assert!(matches!(
            forwarded(answer("etcdserver: some other refusal", false)),
            Err(ForwardError::Failed(NodeError::Forwarded(_)))
        ));
        // A command the leader itself answered with an error keeps that error.
        assert!(matches!(
            failure(tonic::Status::unavailable("etcdserver: server stopped")),
            ForwardError::Failed(NodeError::Forwarded(_))
        ));
    }
}
