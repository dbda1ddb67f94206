//! The leader's lease clock: keeps the keeper ([`crate::lease::LeaseKeeper`]) in
//! step with this member's leadership and the replicated lease table, and revokes
//! each lease whose deadline passes through the log, so every replica deletes its
//! keys at the same revision.

use std::sync::Arc;

use openraft::ServerState;
use synod_proto::etcdserverpb::LeaseRevokeRequest;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::Command;
use synod_storage::Applied;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::node::Node;

/// Keeps the keeper in step with leadership and the lease table, and revokes
/// expired leases, until `stop` fires.
pub async fn run_keeper(
    node: Arc<Node>,
    mut applied: watch::Receiver<Applied>,
    mut stop: watch::Receiver<bool>,
) {
    // The server metrics change with the role and the term only, not on every
    // append as Raft's full metrics do.
    let mut server = node.raft.server_metrics();
    let mut led_term = None;
    let mut lease_changes_seen = applied.borrow().lease_changes;
    loop {
        let (state, term, leader) = {
            let current = server.borrow_and_update();
            (
                current.state,
                current.vote.leader_id().get_term(),
                current.current_leader,
            )
        };
        let leading = state == ServerState::Leader && leader == Some(node.member.id);
        match (leading, led_term) {
            (true, Some(term_led)) if term_led == term => {}
            (true, _) => match node.reader.leases() {
                Ok(leases) => {
                    node.leases.lead(term, &leases);
                    led_term = Some(term);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read leases to take over their deadlines")
                }
            },
            (false, Some(_)) => {
                node.leases.follow();
                led_term = None;
            }
            (false, None) => {}
        }

        for id in node.leases.take_expired(Instant::now()) {
            let node = node.clone();
            tokio::spawn(async move {
                let command = Command {
                    op: Some(Op::LeaseRevoke(LeaseRevokeRequest { id })),
                };
                let deadline = Instant::now() + crate::limits::REQUEST_TIMEOUT;
                match node.proposals.propose(command, deadline).await {
                    Ok(_) => tracing::debug!(lease = id, "revoked expired lease"),
                    Err(_) => node.leases.revocation_failed(id),
                }
            });
        }

        let wake = node.leases.next_deadline();
        let sleep = async {
            match wake {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            changed = server.changed() => if changed.is_err() { return },
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
                let lease_changes = applied.borrow_and_update().lease_changes;
                if led_term.is_some() && lease_changes != lease_changes_seen {
                    lease_changes_seen = lease_changes;
                    match node.reader.leases() {
                        Ok(leases) => node.leases.sync(&leases),
                        Err(error) => tracing::warn!(%error, "cannot read leases"),
                    }
                }
            }
            () = node.leases.changed.notified() => {}
            () = sleep => {}
        }
    }
}
