//! One member of a test cluster: its ports, data dir and log, and its process
//! while it runs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Child;

use nix::unistd::Pid;

/// One member of a cluster, running or not.
#[derive(Debug)]
pub struct Member {
    /// `--name`.
    pub name: String,
    /// Client port.
    pub client_port: u16,
    /// Peer port, as advertised to the other members (the proxy's, if behind one).
    pub peer_port: u16,
    /// Peer port the member listens on: the advertised one, or behind the proxy.
    pub peer_listen_port: u16,
    /// Address the member sends peer traffic from, when behind the proxy.
    pub peer_source: Option<IpAddr>,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Log file (stdout and stderr, appended across restarts).
    pub log: PathBuf,
    /// Joins a running cluster (`--initial-cluster-state existing`) rather than
    /// bootstrapping one.
    pub joins_existing: bool,
    /// Removed from the cluster: left out of `--initial-cluster`, never restarted.
    pub removed: bool,
    pub(crate) child: Option<Child>,
}

impl Member {
    /// `127.0.0.1:port` of the client API.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:port` of the client API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The peer URL the other members use.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The process id, if running.
    pub fn pid(&self) -> Option<Pid> {
        let id = self.child.as_ref()?.id();
        i32::try_from(id).ok().map(Pid::from_raw)
    }

    /// Whether the harness started the member's process and has not stopped it
    /// (it may have exited on its own; see [`crate::Cluster::exited_members`]).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last `lines` lines of the member's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
