//! Test harness: real `synod` processes on free loopback ports.
//!
//! A [`Cluster`] owns its processes and its temporary data dirs; dropping it kills
//! every process it started and, if the test is failing, prints the tail of each
//! member's log. Every wait is bounded by a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a cluster may take to elect a leader and answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reserves a free loopback port. The listener is dropped at once, so the port is
/// only very likely (not certain) to stay free; ports are taken from the kernel's
/// ephemeral range, which makes collisions between tests rare.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// One member of a test cluster.
pub struct Member {
    /// `--name`.
    pub name: String,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Log file (stdout and stderr).
    pub log: PathBuf,
    child: Option<Child>,
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

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The process id, if running.
    pub fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .map(|child| Pid::from_raw(child.id() as i32))
    }

    /// Whether the member's process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster of real synod processes.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The members, in `--initial-cluster` order.
    pub members: Vec<Member>,
    extra_args: Vec<String>,
}

/// The `synod` binary under test.
pub fn synod_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_synod"))
}

impl Cluster {
    /// Starts `size` members with extra `serve` flags and waits for a leader.
    pub async fn start(size: usize, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("synod-test-")
            .tempdir()
            .expect("temp dir");
        let members = (0..size)
            .map(|index| {
                let name = format!("m{index}");
                Member {
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            members,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("{}={}", member.name, member.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `synod serve` arguments of member `index`.
    pub fn serve_args(&self, index: usize) -> Vec<String> {
        let member = &self.members[index];
        let mut args = vec![
            "serve".to_string(),
            "--name".into(),
            member.name.clone(),
            "--data-dir".into(),
            member.data_dir.display().to_string(),
            "--listen-client-urls".into(),
            member.url(),
            "--advertise-client-urls".into(),
            member.url(),
            "--listen-peer-urls".into(),
            member.peer_url(),
            "--initial-advertise-peer-urls".into(),
            member.peer_url(),
            "--initial-cluster".into(),
            self.initial_cluster(),
            "--initial-cluster-token".into(),
            "synod-test".into(),
            "--log-level".into(),
            "info".into(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts member `index`'s process (again).
    pub fn spawn(&mut self, index: usize) {
        assert!(
            self.members[index].child.is_none(),
            "member {index} is already running"
        );
        let args = self.serve_args(index);
        let member = &mut self.members[index];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("open member log");
        let child = Command::new(synod_binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .env("NO_COLOR", "1")
            .spawn()
            .expect("spawn synod");
        member.child = Some(child);
    }

    /// SIGKILLs member `index` and reaps it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs member `index` and waits (bounded) for it to exit; returns its exit
    /// status success.
    pub fn terminate(&mut self, index: usize) -> bool {
        let Some(mut child) = self.members[index].child.take() else {
            return true;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to member `index`.
    pub fn signal(&self, index: usize, signal: Signal) {
        if let Some(pid) = self.members[index].pid() {
            kill(pid, signal).expect("send signal");
        }
    }

    /// Restarts member `index` after a kill or stop.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.spawn(index);
    }

    /// Client endpoints of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// A client that talks to member `index` only.
    pub async fn client(&self, index: usize) -> Client {
        connect(&[self.members[index].endpoint()]).await
    }

    /// Member `index`'s view: (its member id, the leader id it knows, its raft index).
    pub async fn status(&self, index: usize) -> Option<(u64, u64, u64)> {
        let mut client = Client::connect(
            [self.members[index].endpoint()],
            Some(
                ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(1)),
            ),
        )
        .await
        .ok()?;
        let status = client.status().await.ok()?;
        let header = status.header()?;
        Some((header.member_id(), status.leader(), status.raft_index()))
    }

    /// The index of the member every running member agrees is leader, waiting for
    /// one (bounded).
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut leader_id = None;
        let mut ids = Vec::new();
        for index in 0..self.members.len() {
            if !self.members[index].is_running() {
                ids.push(None);
                continue;
            }
            let (id, leader, _) = self.status(index).await?;
            if leader == 0 || leader_id.is_some_and(|known| known != leader) {
                return None;
            }
            leader_id = Some(leader);
            ids.push(Some(id));
        }
        let leader_id = leader_id?;
        ids.iter().position(|id| *id == Some(leader_id))
    }

    /// Waits until every running member agrees on a leader and answers a
    /// linearizable read.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        self.leader().await;
        for index in 0..self.members.len() {
            if !self.members[index].is_running() {
                continue;
            }
            loop {
                let mut client = self.client(index).await;
                if client.get("synod-test-ready", None).await.is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "member {index} not ready within {READY_TIMEOUT:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The index of some running member that is not the leader.
    pub async fn follower(&self) -> usize {
        let leader = self.leader().await;
        (0..self.members.len())
            .find(|index| *index != leader && self.members[*index].is_running())
            .expect("a running follower")
    }

    /// The text of member `index`'s log.
    pub fn log_text(&self, index: usize) -> String {
        std::fs::read_to_string(&self.members[index].log).unwrap_or_default()
    }
}

/// A client for `endpoints` with bounded connect and request timeouts.
pub async fn connect(endpoints: &[String]) -> Client {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match Client::connect(
            endpoints,
            Some(
                ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(10)),
            ),
        )
        .await
        {
            Ok(client) => return client,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot connect to {endpoints:?}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for member in &self.members {
                let text = std::fs::read_to_string(&member.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!(
                    "---- log of {} ({}) ----\n{}",
                    member.name,
                    member.log.display(),
                    tail.join("\n")
                );
            }
        }
    }
}
