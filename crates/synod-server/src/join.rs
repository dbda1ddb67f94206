//! Joining a running cluster (`--initial-cluster-state existing` on a fresh data
//! dir): the member was added with MemberAdd, so the cluster already knows its id;
//! the new member asks its peers for the membership and finds itself by its peer
//! URLs.

use std::time::Duration;

use synod_proto::synodpeer::raft_peer_client::RaftPeerClient;
use synod_proto::synodpeer::MembershipRequest;
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::group::DEFAULT_GROUP;
use crate::identity::Identity;
use crate::limits::{JOIN_TIMEOUT, NOT_ADDED_GRACE};

/// Why a member could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// A peer answered, but the cluster has no member with this member's peer URLs.
    #[error(
        "the cluster has no member with peer URLs {peer_urls:?}; add this member first \
         (etcdctl member add {name} --peer-urls={first_url}), then start it with \
         --initial-cluster-state existing"
    )]
    NotAdded {
        /// `--name`.
        name: String,
        /// This member's peer URLs.
        peer_urls: Vec<String>,
        /// The first of them, for the suggested command.
        first_url: String,
    },
    /// No peer in `--initial-cluster` answered.
    #[error("no member of --initial-cluster answered within {JOIN_TIMEOUT:?} ({last_error}); check that the cluster is running and reachable")]
    Unreachable {
        /// The last failure seen.
        last_error: String,
    },
}

/// Asks the peers of `--initial-cluster` who this member is.
pub async fn discover(config: &ServerConfig) -> Result<Identity, JoinError> {
    let mut own_urls = config.advertise_peer_urls.clone();
    own_urls.sort();
    let peer_urls: Vec<&String> = config
        .initial_cluster
        .values()
        .flatten()
        .filter(|url| !own_urls.contains(url))
        .collect();
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut last_error = String::from("no peer URL other than this member's own");
    let mut not_added_since: Option<Instant> = None;
    loop {
        for url in &peer_urls {
            let connect = tokio::time::timeout(
                Duration::from_secs(2),
                RaftPeerClient::connect(url.to_string()),
            );
            let mut client = match connect.await {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => {
                    last_error = format!("{url}: {error}");
                    continue;
                }
                Err(_) => {
                    last_error = format!("{url}: connect timed out");
                    continue;
                }
            };
            let response = match client
                .membership(MembershipRequest {
                    group_id: DEFAULT_GROUP,
                })
                .await
            {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    last_error = format!("{url}: {}", status.message());
                    continue;
                }
            };
            let me = response.members.iter().find(|member| {
                let mut urls = member.peer_urls.clone();
                urls.sort();
                urls == own_urls
            });
            match me {
                Some(member) => {
                    return Ok(Identity {
                        cluster_id: response.cluster_id,
                        member_id: member.id,
                    })
                }
                None => {
                    not_added_since.get_or_insert_with(Instant::now);
                }
            }
        }
        if not_added_since.is_some_and(|since| since.elapsed() >= NOT_ADDED_GRACE) {
            return Err(JoinError::NotAdded {
                name: config.name.clone(),
                first_url: own_urls.first().cloned().unwrap_or_default(),
                peer_urls: own_urls,
            });
        }
        if Instant::now() >= deadline {
            return Err(JoinError::Unreachable { last_error });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
