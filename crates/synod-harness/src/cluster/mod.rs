//! A cluster of real `synod` processes on free loopback ports.
//!
//! A [`Cluster`] owns its processes and its temporary directory (data dirs and
//! logs). Dropping it kills every process it started; if the thread is panicking
//! (a failing test), it first prints the tail of each member's log. The binary
//! under test is the caller's: tests pass `env!("CARGO_BIN_EXE_synod")`, the soak
//! command a path from its flags.
//!
//! This module starts, stops and signals processes; [`status`] asks members
//! what they think (leader, readiness, hashes); [`membership`] changes who the
//! members are.

pub mod membership;
pub mod status;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};

use crate::error::HarnessError;
use crate::member::Member;
use crate::ports::{free_port, reserve_port};
use crate::proxy::{member_source_address, PeerProxy};

/// How long a cluster may take to elect a leader and answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a member may take to exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(15);

/// `--initial-cluster-token` of every test cluster.
const CLUSTER_TOKEN: &str = "synod-test";

/// Lines of each member's log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// A cluster of real synod processes.
pub struct Cluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    /// The members, in the order they were created (`m0`, `m1`, ...); removed
    /// members stay, marked [`Member::removed`], so indices never change.
    pub members: Vec<Member>,
    proxy: Option<PeerProxy>,
    extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `size` members of `binary` with extra `serve` flags and waits for a
    /// leader.
    pub async fn start(
        binary: impl Into<PathBuf>,
        size: usize,
        extra_args: &[&str],
    ) -> Result<Cluster, HarnessError> {
        Self::launch(binary.into(), size, extra_args, false).await
    }

    /// Starts `size` members whose peer traffic goes through a [`PeerProxy`] the
    /// caller controls, and waits for a leader.
    pub async fn start_behind_proxy(
        binary: impl Into<PathBuf>,
        size: usize,
        extra_args: &[&str],
    ) -> Result<Cluster, HarnessError> {
        Self::launch(binary.into(), size, extra_args, true).await
    }

    async fn launch(
        binary: PathBuf,
        size: usize,
        extra_args: &[&str],
        behind_proxy: bool,
    ) -> Result<Cluster, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("synod-test-")
            .tempdir()
            .map_err(|source| HarnessError::Setup {
                what: "create a temporary directory".into(),
                source,
            })?;
        let mut cluster = Cluster {
            binary,
            dir,
            members: Vec::new(),
            proxy: behind_proxy.then(PeerProxy::new),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        };
        for _ in 0..size {
            cluster.push_member(false)?;
        }
        for index in 0..size {
            cluster.spawn(index)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// The binary the members run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The peer-traffic proxy, for clusters started behind one.
    pub fn proxy(&self) -> Option<&PeerProxy> {
        self.proxy.as_ref()
    }

    /// The cluster's temporary directory (data dirs and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the temporary directory after the cluster is dropped (to read the
    /// logs of a failed run); returns its path.
    pub fn keep_files(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }

    /// Member `index`.
    pub fn member(&self, index: usize) -> Result<&Member, HarnessError> {
        self.members
            .get(index)
            .ok_or(HarnessError::NoSuchMember { index })
    }

    fn member_mut(&mut self, index: usize) -> Result<&mut Member, HarnessError> {
        self.members
            .get_mut(index)
            .ok_or(HarnessError::NoSuchMember { index })
    }

    /// Adds a member that will join the running cluster (after a MemberAdd); returns
    /// its index. It is not started. Behind a proxy, its peer traffic goes through
    /// the proxy too.
    pub fn add_member(&mut self) -> Result<usize, HarnessError> {
        self.push_member(true)
    }

    fn push_member(&mut self, joins_existing: bool) -> Result<usize, HarnessError> {
        let index = self.members.len();
        let name = format!("m{index}");
        let (peer_port, peer_listen_port, peer_source) = match &self.proxy {
            None => (free_port()?, 0, None),
            Some(proxy) => {
                let source = member_source_address(index).ok_or_else(|| {
                    HarnessError::Proxy(format!(
                        "no loopback source address left for member {index}"
                    ))
                })?;
                let (listener, peer_port) = reserve_port()?;
                let peer_listen_port = free_port()?;
                proxy.route(index, listener, peer_listen_port)?;
                (peer_port, peer_listen_port, Some(source))
            }
        };
        self.members.push(Member {
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            name,
            client_port: free_port()?,
            peer_port,
            peer_listen_port,
            peer_source,
            joins_existing,
            removed: false,
            child: None,
        });
        Ok(index)
    }

    /// Marks member `index` removed from the cluster and reaps its process.
    pub fn forget(&mut self, index: usize) {
        self.kill(index);
        if let Some(member) = self.members.get_mut(index) {
            member.removed = true;
        }
    }

    /// `name=peer-url,...` of every member not removed.
    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .filter(|member| !member.removed)
            .map(|member| format!("{}={}", member.name, member.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `synod serve` arguments of member `index` (empty if there is none).
    pub fn serve_args(&self, index: usize) -> Vec<String> {
        let Some(member) = self.members.get(index) else {
            return Vec::new();
        };
        let listen_peer_port = if member.peer_listen_port == 0 {
            member.peer_port
        } else {
            member.peer_listen_port
        };
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
            format!("http://127.0.0.1:{listen_peer_port}"),
            "--initial-advertise-peer-urls".into(),
            member.peer_url(),
            "--initial-cluster".into(),
            self.initial_cluster(),
            "--initial-cluster-token".into(),
            CLUSTER_TOKEN.into(),
            "--log-level".into(),
            "info".into(),
        ];
        if member.joins_existing {
            args.extend(["--initial-cluster-state".into(), "existing".into()]);
        }
        if let Some(source) = member.peer_source {
            args.extend(["--peer-source-address".into(), source.to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts member `index`'s process (again), appending to its log.
    pub fn spawn(&mut self, index: usize) -> Result<(), HarnessError> {
        let args = self.serve_args(index);
        let binary = self.binary.clone();
        let member = self.member_mut(index)?;
        if member.child.is_some() {
            return Err(HarnessError::AlreadyRunning { index });
        }
        let setup = |source| HarnessError::Setup {
            what: "open a member's log".into(),
            source,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&member.log)
            .map_err(setup)?;
        let child = Command::new(&binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(setup)?)
            .stderr(log)
            .env("NO_COLOR", "1")
            .spawn()
            .map_err(|source| HarnessError::Spawn { binary, source })?;
        member.child = Some(child);
        Ok(())
    }

    /// SIGKILLs member `index` (if running) and reaps it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self
            .members
            .get_mut(index)
            .and_then(|member| member.child.take())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs several members before reaping any, so that none outlives the
    /// others by the time it takes to reap one.
    pub fn kill_all_at_once(&mut self, indices: &[usize]) {
        for index in indices {
            if let Some(pid) = self.members.get(*index).and_then(Member::pid) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        for index in indices {
            self.kill(*index);
        }
    }

    /// SIGTERMs member `index` and waits (bounded) for it to exit; returns whether
    /// it exited successfully in time (it is SIGKILLed otherwise).
    pub fn terminate(&mut self, index: usize) -> bool {
        let Some(mut child) = self
            .members
            .get_mut(index)
            .and_then(|member| member.child.take())
        else {
            return true;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
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

    /// Sends `signal` to member `index`, if it runs.
    pub fn signal(&self, index: usize, signal: Signal) -> Result<(), HarnessError> {
        let Some(pid) = self.member(index)?.pid() else {
            return Ok(());
        };
        kill(pid, signal).map_err(|source| HarnessError::Signal {
            index,
            signal: signal.to_string(),
            source,
        })
    }

    /// Restarts member `index` after a kill or stop.
    pub fn restart(&mut self, index: usize) -> Result<(), HarnessError> {
        self.kill(index);
        self.spawn(index)
    }

    /// Client endpoints of every member, removed ones included (so positions match
    /// member indices).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// Indices of the members not removed from the cluster.
    pub fn live_members(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|index| !self.members[*index].removed)
            .collect()
    }

    /// Client endpoints of the members not removed from the cluster.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.live_members()
            .into_iter()
            .map(|index| self.members[index].endpoint())
            .collect()
    }

    /// The text of member `index`'s log.
    pub fn log_text(&self, index: usize) -> String {
        self.members
            .get(index)
            .and_then(|member| std::fs::read_to_string(&member.log).ok())
            .unwrap_or_default()
    }

    /// Members the harness started that have since exited on their own, with
    /// how they exited; they are reaped (no longer running).
    pub fn exited_members(&mut self) -> Vec<(usize, String)> {
        let mut exited = Vec::new();
        for (index, member) in self.members.iter_mut().enumerate() {
            let status = match member.child.as_mut().map(|child| child.try_wait()) {
                Some(Ok(Some(status))) => status.to_string(),
                Some(Err(error)) => format!("cannot be waited for: {error}"),
                Some(Ok(None)) | None => continue,
            };
            member.child = None;
            exited.push((index, status));
        }
        exited
    }

    /// A [`HarnessError::Exited`] for member `index`, with its log's tail.
    pub fn exited_error(&self, index: usize, status: String) -> HarnessError {
        HarnessError::Exited {
            index,
            status,
            log_tail: self
                .members
                .get(index)
                .map(|member| member.log_tail(LOG_TAIL_LINES))
                .unwrap_or_default(),
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
                eprintln!(
                    "---- log of {} ({}) ----\n{}",
                    member.name,
                    member.log.display(),
                    member.log_tail(LOG_TAIL_LINES)
                );
            }
        }
    }
}
