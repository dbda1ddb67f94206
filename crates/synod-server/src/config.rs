//! A node's configuration, as resolved from etcd-compatible flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::Limits;

/// Whether the node bootstraps a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// `--initial-cluster-state new`: the members of `--initial-cluster` form the cluster.
    New,
    /// `--initial-cluster-state existing`: the node was added to a running cluster.
    Existing,
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Addresses the client API listens on (`--listen-client-urls`).
    pub listen_client: Vec<SocketAddr>,
    /// URLs clients are told to use (`--advertise-client-urls`).
    pub advertise_client_urls: Vec<String>,
    /// Addresses the peer API listens on (`--listen-peer-urls`).
    pub listen_peer: Vec<SocketAddr>,
    /// URLs peers use to reach this node (`--initial-advertise-peer-urls`).
    pub advertise_peer_urls: Vec<String>,
    /// Members at bootstrap, by name (`--initial-cluster`).
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    /// `--initial-cluster-state`.
    pub cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub cluster_token: String,
    /// Applied entries between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers catch
    /// up from the log rather than by snapshot (`--snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    /// Leader heartbeat period (`--heartbeat-interval`).
    pub heartbeat_interval: Duration,
    /// Time without a leader before a follower campaigns (`--election-timeout`).
    pub election_timeout: Duration,
    /// Whether a member asks the voters before it campaigns (`--pre-vote`), so a
    /// member that cannot win does not raise its term and depose the leader.
    pub pre_vote: bool,
    /// How often an idle watcher that asked for progress notifications gets one
    /// (`--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval: Duration,
    /// Request bounds.
    pub limits: Limits,
    /// Local address outgoing peer connections are bound to (`--peer-source-address`),
    /// so a network (or a test's proxy) can tell members apart by source address.
    pub peer_source_address: Option<std::net::IpAddr>,
    /// Bytes of page cache for the database (`--backend-cache-bytes`).
    pub backend_cache_bytes: usize,
    /// Breaks linearizable reads on purpose (they skip the read index), so tests can
    /// show that the linearizability checker catches stale reads. Never for use.
    pub unsafe_skip_read_index: bool,
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL flag holds something that is not `http://host:port`.
    #[error("{flag}: {url:?} is not a URL of the form http://IP:PORT ({reason})")]
    BadUrl {
        /// The flag.
        flag: &'static str,
        /// The value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--initial-cluster` is malformed.
    #[error("--initial-cluster: {0}")]
    BadInitialCluster(String),
    /// `--initial-cluster` does not list this node under its `--name`.
    #[error(
        "--initial-cluster has no member named {name:?} (it lists {listed}); add \
         {name}=<peer url> or set --name to one of them"
    )]
    NotInInitialCluster {
        /// `--name`.
        name: String,
        /// Names it does list.
        listed: String,
    },
    /// This node's entry in `--initial-cluster` disagrees with its advertised peer URLs.
    #[error(
        "--initial-cluster gives {name} the peer URLs {listed:?} but \
         --initial-advertise-peer-urls is {advertised:?}; they must match"
    )]
    PeerUrlMismatch {
        /// `--name`.
        name: String,
        /// URLs in `--initial-cluster`.
        listed: Vec<String>,
        /// URLs in `--initial-advertise-peer-urls`.
        advertised: Vec<String>,
    },
    /// `--initial-cluster-state` is neither `new` nor `existing`.
    #[error("--initial-cluster-state must be \"new\" or \"existing\", not {0:?}")]
    BadClusterState(String),
}

/// Splits a comma-separated URL flag and resolves each URL to a socket address.
pub fn parse_listen_urls(flag: &'static str, value: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    split_list(value)
        .into_iter()
        .map(|url| parse_socket_url(flag, &url))
        .collect()
}

/// Splits a comma-separated list, dropping empty items.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// Resolves `http://IP:PORT` (or `IP:PORT`) to a socket address.
pub fn parse_socket_url(flag: &'static str, url: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        flag,
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") || url.starts_with("unix://") {
        return Err(bad("only plain http is supported"));
    } else if url.contains("://") {
        return Err(bad("unknown scheme"));
    } else {
        url
    };
    let host_port = rest.trim_end_matches('/');
    let host_port = host_port.replace("localhost:", "127.0.0.1:");
    host_port
        .parse::<SocketAddr>()
        .map_err(|error| bad(&error.to_string()))
}

/// Parses `--initial-cluster` (`name=url,name=url,...`; a name may repeat to give a
/// member several URLs).
pub fn parse_initial_cluster(value: &str) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in split_list(value) {
        let (name, url) = item.split_once('=').ok_or_else(|| {
            ConfigError::BadInitialCluster(format!(
                "{item:?} is not of the form name=http://IP:PORT"
            ))
        })?;
        parse_socket_url("--initial-cluster", url)?;
        members
            .entry(name.to_string())
            .or_default()
            .push(url.to_string());
    }
    if members.is_empty() {
        return Err(ConfigError::BadInitialCluster("no members given".into()));
    }
    Ok(members)
}

/// Parses `--initial-cluster-state`.
pub fn parse_cluster_state(value: &str) -> Result<ClusterState, ConfigError> {
    match value {
        "new" => Ok(ClusterState::New),
        "existing" => Ok(ClusterState::Existing),
        other => Err(ConfigError::BadClusterState(other.to_string())),
    }
}

impl ServerConfig {
    /// Checks the flags against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(listed) = self.initial_cluster.get(&self.name) else {
            return Err(ConfigError::NotInInitialCluster {
                name: self.name.clone(),
                listed: self
                    .initial_cluster
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        let mut advertised = self.advertise_peer_urls.clone();
        advertised.sort();
        if listed_sorted != advertised {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                listed: listed.clone(),
                advertised: self.advertise_peer_urls.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcd_style_flags() -> Result<(), ConfigError> {
        let cluster = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2")?;
        assert_eq!(cluster.len(), 2);
        assert_eq!(cluster["a"], vec!["http://127.0.0.1:1".to_string()]);
        assert_eq!(
            parse_listen_urls("--x", "http://127.0.0.1:2379,http://localhost:2381")?.len(),
            2
        );
        assert!(parse_socket_url("--x", "https://127.0.0.1:1").is_err());
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_cluster_state("old").is_err());
        Ok(())
    }
}
