//! Membership changes driven through the etcd Cluster API, as an operator would:
//! remove a member (it stops by itself), add a fresh one (a voter once it has
//! caught up, or a learner until promoted). Requests go through another member
//! and are retried on other members until a deadline, since the cluster may be
//! electing a leader at the time.

use std::time::{Duration, Instant};

use etcd_client::{Client, MemberAddOptions};

use super::Cluster;
use crate::client::quick_client;
use crate::error::HarnessError;

/// How long one membership change may take, retries included.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a removed member may take to notice and stop.
const REMOVED_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What a removed member logs as it stops.
const REMOVED_LOG_LINE: &str = "removed from the cluster";

/// etcd's answer to promoting a member that is already a voter.
const NOT_LEARNER: &str = "can only promote a learner member";

/// etcd's answer to adding peer URLs a member already has.
const PEER_URL_EXISTS: &str = "Peer URLs already exists";

impl Cluster {
    /// Member `index`'s id, as it reports it.
    pub async fn member_id(&self, index: usize) -> Result<u64, HarnessError> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            if let Some(status) = self.member_status(index).await {
                return Ok(status.id);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::timeout(
                    format!("member {index} did not report its id"),
                    CHANGE_TIMEOUT,
                    "",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client of some running, live member other than `except`, trying them in
    /// turn from `turn`.
    async fn client_other_than(&self, except: Option<usize>, turn: usize) -> Option<Client> {
        let candidates: Vec<usize> = self
            .live_members()
            .into_iter()
            .filter(|index| Some(*index) != except && self.members[*index].is_running())
            .collect();
        for offset in 0..candidates.len() {
            let index = candidates[(turn + offset) % candidates.len()];
            let endpoint = self.members[index].endpoint();
            if let Some(client) = quick_client(&endpoint, Duration::from_secs(10)).await {
                return Some(client);
            }
        }
        None
    }

    /// Removes member `index` from the cluster through another member, waits
    /// (bounded) until it stops by itself, and forgets it.
    pub async fn remove_member(&mut self, index: usize) -> Result<(), HarnessError> {
        let id = self.member_id(index).await?;
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut turn = 0;
        loop {
            turn += 1;
            let error = match self.client_other_than(Some(index), turn).await {
                Some(mut client) => match client.member_remove(id).await {
                    Ok(_) => break,
                    // A retry of a removal that went through before its answer
                    // was lost.
                    Err(error) if error.to_string().contains("member not found") && turn > 1 => {
                        break
                    }
                    Err(error) => error.to_string(),
                },
                None => "no other member answers".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::timeout(
                    format!("member {index} ({id:x}) was not removed"),
                    CHANGE_TIMEOUT,
                    error,
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A removed member stops by itself, as etcd's do; if it missed its removal
        // (it may have been cut off), it is killed.
        let stop_deadline = Instant::now() + REMOVED_STOP_TIMEOUT;
        while Instant::now() < stop_deadline {
            let exited = self.members[index]
                .child
                .as_mut()
                .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited || self.log_text(index).contains(REMOVED_LOG_LINE) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.forget(index);
        Ok(())
    }

    /// Adds a fresh member through another member (a learner if `learner`, else a
    /// voter once it has caught up), starts it and waits until it answers a
    /// linearizable read. Returns its index and id.
    pub async fn join_new_member(&mut self, learner: bool) -> Result<(usize, u64), HarnessError> {
        let index = self.add_member()?;
        let peer_url = self.members[index].peer_url();
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut turn = 0;
        let id = loop {
            turn += 1;
            let error = match self.client_other_than(Some(index), turn).await {
                Some(mut client) => {
                    let options = learner.then(|| MemberAddOptions::new().with_is_learner());
                    match client.member_add([peer_url.clone()], options).await {
                        Ok(response) => match response.member() {
                            Some(member) => break member.id(),
                            None => "no member in the MemberAdd response".to_string(),
                        },
                        // A retry of an add that went through before its answer
                        // was lost: find the member by its URL.
                        Err(error) if error.to_string().contains(PEER_URL_EXISTS) => {
                            match self.find_member_id(&mut client, &peer_url).await {
                                Some(id) => break id,
                                None => error.to_string(),
                            }
                        }
                        Err(error) => error.to_string(),
                    }
                }
                None => "no other member answers".to_string(),
            };
            if Instant::now() >= deadline {
                // Leave the slot out of every later --initial-cluster.
                self.forget(index);
                return Err(HarnessError::timeout(
                    format!("member {index} was not added"),
                    CHANGE_TIMEOUT,
                    error,
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.spawn(index)?;
        self.wait_member_ready(index).await?;
        Ok((index, id))
    }

    async fn find_member_id(&self, client: &mut Client, peer_url: &str) -> Option<u64> {
        let list = client.member_list().await.ok()?;
        list.members()
            .iter()
            .find(|member| member.peer_urls().iter().any(|url| url == peer_url))
            .map(|member| member.id())
    }

    /// Waits until member `index` answers a linearizable read; fails at once if
    /// its process exits.
    pub async fn wait_member_ready(&mut self, index: usize) -> Result<(), HarnessError> {
        let endpoint = self.member(index)?.endpoint();
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            let exited = self.members[index]
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.members[index].child = None;
                return Err(self.exited_error(index, status.to_string()));
            }
            let error = match quick_client(&endpoint, Duration::from_secs(2)).await {
                Some(mut client) => match client.get("synod-test-ready", None).await {
                    Ok(_) => return Ok(()),
                    Err(error) => error.to_string(),
                },
                None => "cannot connect".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::timeout(
                    format!("the new member {index} did not answer a linearizable read"),
                    CHANGE_TIMEOUT,
                    error,
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Promotes learner `id`, retrying (bounded) while it is not yet caught up.
    pub async fn promote_member(&self, id: u64) -> Result<(), HarnessError> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut turn = 0;
        loop {
            turn += 1;
            let error = match self.client_other_than(None, turn).await {
                Some(mut client) => match client.member_promote(id).await {
                    Ok(_) => return Ok(()),
                    // Already a voter: an earlier attempt went through.
                    Err(error) if error.to_string().contains(NOT_LEARNER) && turn > 1 => {
                        return Ok(())
                    }
                    Err(error) => error.to_string(),
                },
                None => "no member answers".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::timeout(
                    format!("learner {id:x} was not promoted"),
                    CHANGE_TIMEOUT,
                    error,
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until member `id` votes: its own Status says it is no learner. (The
    /// member list shows a member added as a voter as one at once, as etcd's
    /// does, before the leader has promoted it.)
    pub async fn wait_voter(&self, id: u64) -> Result<(), HarnessError> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            for index in self.live_members() {
                if let Some(status) = self.member_status(index).await {
                    if status.id == id && !status.is_learner {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::timeout(
                    format!("member {id:x} did not become a voter"),
                    CHANGE_TIMEOUT,
                    "",
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
