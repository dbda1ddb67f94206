//! What the members think: who leads, whether they answer, what their stores hash
//! to. Every wait is bounded by a deadline.

use std::time::{Duration, Instant};

use etcd_client::Client;

use super::{Cluster, READY_TIMEOUT};
use crate::client::{connect, quick_client};
use crate::error::HarnessError;

/// How long a member may take to reach a revision before its hash is compared.
const HASH_TIMEOUT: Duration = Duration::from_secs(20);

/// A member's view of the cluster, from its Status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its member id.
    pub id: u64,
    /// The leader's member id as it knows it (0: none).
    pub leader: u64,
    /// Its Raft index.
    pub raft_index: u64,
    /// Whether it replicates without voting (its own Raft view).
    pub is_learner: bool,
}

impl Cluster {
    /// A client that talks to member `index` only.
    pub async fn client(&self, index: usize) -> Result<Client, HarnessError> {
        connect(&[self.member(index)?.endpoint()]).await
    }

    /// Member `index`'s view, if it answers within a second.
    pub async fn member_status(&self, index: usize) -> Option<MemberStatus> {
        let endpoint = self.members.get(index)?.endpoint();
        let mut client = quick_client(&endpoint, Duration::from_secs(1)).await?;
        let status = client.status().await.ok()?;
        let header = status.header()?;
        Some(MemberStatus {
            id: header.member_id(),
            leader: status.leader(),
            raft_index: status.raft_index(),
            is_learner: status.is_learner(),
        })
    }

    /// Member `index`'s view: (its member id, the leader id it knows, its raft
    /// index).
    pub async fn status(&self, index: usize) -> Option<(u64, u64, u64)> {
        let status = self.member_status(index).await?;
        Some((status.id, status.leader, status.raft_index))
    }

    /// The index of the member every running member agrees is leader, waiting for
    /// one (up to [`READY_TIMEOUT`]).
    pub async fn leader(&self) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::timeout(
                    "no leader agreed on by every running member",
                    READY_TIMEOUT,
                    "",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader, if every running member answers and names the same one.
    pub async fn agreed_leader(&self) -> Option<usize> {
        let mut leader_id = None;
        let mut ids = Vec::new();
        for index in 0..self.members.len() {
            if !self.members[index].is_running() {
                ids.push(None);
                continue;
            }
            let status = self.member_status(index).await?;
            if status.leader == 0 || leader_id.is_some_and(|known| known != status.leader) {
                return None;
            }
            leader_id = Some(status.leader);
            ids.push(Some(status.id));
        }
        let leader_id = leader_id?;
        ids.iter().position(|id| *id == Some(leader_id))
    }

    /// The leader among `group` as those members see it, if they all answer and
    /// agree (the others may be cut off).
    pub async fn leader_among(&self, group: &[usize]) -> Option<usize> {
        let mut views = Vec::new();
        for index in group {
            views.push((*index, self.member_status(*index).await?));
        }
        let leader = views.first()?.1.leader;
        if leader == 0 || views.iter().any(|(_, status)| status.leader != leader) {
            return None;
        }
        views
            .iter()
            .find(|(_, status)| status.id == leader)
            .map(|(index, _)| *index)
    }

    /// Waits until every running member agrees on a leader and answers a
    /// linearizable read (up to [`READY_TIMEOUT`] in all).
    pub async fn wait_ready(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        self.leader().await?;
        for index in 0..self.members.len() {
            if !self.members[index].is_running() {
                continue;
            }
            let endpoint = self.members[index].endpoint();
            loop {
                let error = match quick_client(&endpoint, Duration::from_secs(2)).await {
                    Some(mut client) => match client.get("synod-test-ready", None).await {
                        Ok(_) => break,
                        Err(error) => error.to_string(),
                    },
                    None => "cannot connect".to_string(),
                };
                if Instant::now() >= deadline {
                    return Err(HarnessError::timeout(
                        format!("member {index} did not answer a linearizable read"),
                        READY_TIMEOUT,
                        error,
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The index of some running member that is not the leader.
    pub async fn follower(&self) -> Result<usize, HarnessError> {
        let leader = self.leader().await?;
        (0..self.members.len())
            .find(|index| *index != leader && self.members[*index].is_running())
            .ok_or_else(|| HarnessError::Malformed("no running follower".into()))
    }

    /// The HashKV of member `index` at `revision`, waiting (bounded) until it has
    /// applied that revision.
    pub async fn hash_at(&self, index: usize, revision: i64) -> Result<u32, HarnessError> {
        let client = self.client(index).await?;
        let deadline = Instant::now() + HASH_TIMEOUT;
        loop {
            match client.maintenance_client().hash_kv(revision).await {
                Ok(response) => return Ok(response.hash()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(HarnessError::timeout(
                        format!("member {index} did not hash revision {revision}"),
                        HASH_TIMEOUT,
                        error,
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Checks that every running member's store hashes the same up to `revision`.
    pub async fn check_replicas_agree(&self, revision: i64) -> Result<(), HarnessError> {
        let mut hashes = Vec::new();
        for index in 0..self.members.len() {
            if self.members[index].is_running() {
                hashes.push((index, self.hash_at(index, revision).await?));
            }
        }
        if hashes.windows(2).all(|pair| pair[0].1 == pair[1].1) {
            Ok(())
        } else {
            Err(HarnessError::ReplicasDisagree { revision, hashes })
        }
    }
}
