//! Finding the leader, and the one loop that waits for one.
//!
//! Every request that only a leader can carry out (a write, a read index, a lease
//! question, a membership change) is tried here or at the leader, and tried again
//! while no leader is known and nothing was done, until its deadline.

use std::future::Future;

use openraft::Raft;
use synod_storage::{MemberNode, NodeId, TypeConfig};
use tokio::time::Instant;

use crate::limits::LEADER_RETRY_INTERVAL;

/// The member Raft's latest view says leads, if it is another one.
pub fn leader_elsewhere(raft: &Raft<TypeConfig>, me: NodeId) -> Option<MemberNode> {
    let metrics = raft.server_metrics();
    let metrics = metrics.borrow();
    let leader = metrics.current_leader.filter(|id| *id != me)?;
    metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .cloned()
}

/// What one attempt at a leader-only request came to.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// An answer (or a failure) to give the caller.
    Done(Result<T, E>),
    /// Nothing was done (no leader known, or the one asked no longer leads): it
    /// may be tried again.
    NotDone,
}

/// Runs `attempt` until it is done, [`LEADER_RETRY_INTERVAL`] apart, and answers
/// `gave_up()` if it is still not done when the next try would pass `deadline`.
pub async fn until_done<T, E, F>(
    deadline: Instant,
    gave_up: impl FnOnce() -> E,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E>
where
    F: Future<Output = Attempt<T, E>>,
{
    loop {
        if let Attempt::Done(answer) = attempt().await {
            return answer;
        }
        if Instant::now() + LEADER_RETRY_INTERVAL >= deadline {
            return Err(gave_up());
        }
        tokio::time::sleep(LEADER_RETRY_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn an_attempt_not_done_is_tried_again_until_it_is() {
        let tries = Cell::new(0);
        let start = Instant::now();
        let answer: Result<u32, &str> = until_done(
            start + Duration::from_secs(10),
            || "gave up",
            || {
                tries.set(tries.get() + 1);
                let tries = tries.get();
                async move {
                    if tries < 3 {
                        Attempt::NotDone
                    } else {
                        Attempt::Done(Ok(tries))
                    }
                }
            },
        )
        .await;
        assert_eq!(answer, Ok(3));
        assert_eq!(start.elapsed(), LEADER_RETRY_INTERVAL * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_ends_the_loop_at_once() {
        let tries = Cell::new(0);
        let answer: Result<(), &str> = until_done(
            Instant::now() + Duration::from_secs(10),
            || "gave up",
            || {
                tries.set(tries.get() + 1);
                async { Attempt::Done(Err("refused")) }
            },
        )
        .await;
        assert_eq!(answer, Err("refused"));
        assert_eq!(tries.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn it_gives_up_before_the_deadline_would_pass() {
        let start = Instant::now();
        let deadline = start + LEADER_RETRY_INTERVAL * 4;
        let tries = Cell::new(0);
        let answer: Result<(), &str> = until_done(
            deadline,
            || "gave up",
            || {
                tries.set(tries.get() + 1);
                async { Attempt::NotDone }
            },
        )
        .await;
        assert_eq!(answer, Err("gave up"));
        assert_eq!(tries.get(), 4);
        assert!(Instant::now() <= deadline);
    }
}
