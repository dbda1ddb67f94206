//! Test harness: real `synod` processes on free loopback ports.
//!
//! A [`Cluster`] owns its processes and its temporary data dirs; dropping it kills
//! every process it started and, if the test is failing, prints the tail of each
//! member's log. Every wait is bounded by a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;

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
/// only very likely (not certain) to stay free. The kernel may hand the same port
/// out again once it is released, so ports already given to this test process are
/// never returned twice.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind an ephemeral port")
            .local_addr()
            .expect("local addr")
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// One member of a test cluster.
pub struct Member {
    /// `--name`.
    pub name: String,
    /// Client port.
    pub client_port: u16,
    /// Peer port, as advertised to the other members.
    pub peer_port: u16,
    /// Peer port the member listens on: the advertised one, or behind the proxy.
    pub peer_listen_port: u16,
    /// Address the member sends peer traffic from, when behind the proxy.
    pub peer_source: Option<std::net::IpAddr>,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Log file (stdout and stderr).
    pub log: PathBuf,
    /// Joins a running cluster (`--initial-cluster-state existing`) rather than
    /// bootstrapping one.
    pub joins_existing: bool,
    /// Removed from the cluster: left out of `--initial-cluster`.
    pub removed: bool,
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

    pub fn peer_url(&self) -> String {
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
    /// The peer-traffic proxy, for clusters started with [`Cluster::start_behind_proxy`].
    pub proxy: Option<proxy::PeerProxy>,
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
                    peer_listen_port: 0,
                    peer_source: None,
                    joins_existing: false,
                    removed: false,
                    child: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            members,
            proxy: None,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// Starts `size` members whose peer traffic goes through a [`proxy::PeerProxy`]
    /// the test controls, and waits for a leader.
    pub async fn start_behind_proxy(size: usize, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("synod-test-")
            .tempdir()
            .expect("temp dir");
        let mut listeners = Vec::new();
        let mut targets = Vec::new();
        let members = (0..size)
            .map(|index| {
                let name = format!("m{index}");
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
                let peer_port = listener.local_addr().expect("proxy addr").port();
                listeners.push(listener);
                let peer_listen_port = free_port();
                targets.push(peer_listen_port);
                Member {
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    peer_port,
                    peer_listen_port,
                    peer_source: Some(proxy::member_source_address(index)),
                    joins_existing: false,
                    removed: false,
                    child: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            members,
            proxy: Some(proxy::PeerProxy::start(listeners, targets)),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// The peer-traffic proxy (for clusters started behind one).
    pub fn proxy(&self) -> &proxy::PeerProxy {
        self.proxy.as_ref().expect("cluster started behind a proxy")
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a member that will join the running cluster (after a MemberAdd); returns
    /// its index. It is not started.
    pub fn add_member(&mut self) -> usize {
        let index = self.members.len();
        let name = format!("m{index}");
        self.members.push(Member {
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            name,
            client_port: free_port(),
            peer_port: free_port(),
            peer_listen_port: 0,
            peer_source: None,
            joins_existing: true,
            removed: false,
            child: None,
        });
        index
    }

    /// Marks member `index` removed from the cluster and reaps its process.
    pub fn forget(&mut self, index: usize) {
        self.kill(index);
        self.members[index].removed = true;
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .filter(|member| !member.removed)
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
            format!(
                "http://127.0.0.1:{}",
                if member.peer_listen_port == 0 {
                    member.peer_port
                } else {
                    member.peer_listen_port
                }
            ),
            "--initial-advertise-peer-urls".into(),
            member.peer_url(),
            "--initial-cluster".into(),
            self.initial_cluster(),
            "--initial-cluster-token".into(),
            "synod-test".into(),
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

/// What a finished command printed and how it exited.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Runs `command` with `stdin` fed to it, and waits at most `timeout` for it to exit
/// (then kills it and fails the test). Output pipes are drained on their own threads,
/// so a chatty command never blocks on a full pipe.
pub fn run_command(mut command: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> CmdOutput {
    use std::io::{Read, Write};
    let description = format!("{command:?}");
    let description = if description.len() > 300 {
        format!("{}...", &description[..300])
    } else {
        description
    };
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {description}: {error}"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        std::thread::spawn(move || {
            // The command may exit without reading everything; that is not our error.
            let _ = pipe.write_all(&bytes);
        })
    });
    let mut stdout_pipe = child.stdout.take().expect("stdout pipe");
    let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
    let stdout_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut bytes);
        bytes
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout_reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().expect("stderr reader");
    CmdOutput {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Debian's `etcdctl` (3.4), talking v3 to fixed endpoints with bounded timeouts.
pub struct Etcdctl {
    endpoints: String,
}

impl Etcdctl {
    /// How long one etcdctl invocation may run before the test fails.
    pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

    /// An etcdctl for `endpoints` (`host:port`).
    pub fn new(endpoints: &[String]) -> Etcdctl {
        assert!(
            Path::new("/usr/bin/etcdctl").exists(),
            "/usr/bin/etcdctl is missing: run the project's install script \
             scripts/install-test-deps.sh (it installs Debian's etcd-client package)"
        );
        Etcdctl {
            endpoints: endpoints.join(","),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("/usr/bin/etcdctl");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCDCTL_") {
                command.env_remove(name);
            }
        }
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=15s")
            .args(args);
        command
    }

    /// Runs `etcdctl <args>` with no input.
    pub fn run(&self, args: &[&str]) -> CmdOutput {
        run_command(self.command(args), None, Self::PROCESS_TIMEOUT)
    }

    /// Runs `etcdctl <args>` with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: impl Into<Vec<u8>>) -> CmdOutput {
        run_command(
            self.command(args),
            Some(input.into()),
            Self::PROCESS_TIMEOUT,
        )
    }
}

/// A real single-node etcd (Debian's etcd 3.4) on free loopback ports with its data in
/// a temporary directory; dropping it kills the process.
pub struct EtcdServer {
    dir: tempfile::TempDir,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// How long a fresh etcd may take to answer.
pub const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);

impl EtcdServer {
    /// The etcd binary; fails the test (never skips it) when it is not installed.
    pub fn binary() -> PathBuf {
        let path = PathBuf::from("/usr/bin/etcd");
        assert!(
            path.exists(),
            "/usr/bin/etcd is missing: the differential tests need a real etcd 3.4. Run the \
             project's install script scripts/install-test-deps.sh (it installs Debian's \
             etcd-server and etcd-client packages)"
        );
        path
    }

    /// Starts etcd and waits (bounded) until it answers a read.
    pub async fn start() -> EtcdServer {
        let binary = Self::binary();
        let mut last_log = String::new();
        // A port taken between free_port() and etcd's bind makes etcd exit at once; try
        // again on fresh ports a few times.
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("etcd-test-")
                .tempdir()
                .expect("temp dir");
            let mut server = EtcdServer {
                log: dir.path().join("etcd.log"),
                dir,
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            };
            server.spawn(&binary);
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start within {ETCD_READY_TIMEOUT:?}; last log:\n{last_log}");
    }

    fn spawn(&mut self, binary: &Path) {
        let client_url = self.url();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::create(&self.log).expect("create etcd log");
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["--name", "etcd0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("etcd0={peer_url}")])
            .args(["--initial-cluster-token", "synod-differential"])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
    }

    /// Waits until etcd answers; on failure kills it and returns its log.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + ETCD_READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return Err(self.log_text());
                }
            }
            if let Ok(mut client) = Client::connect(
                [self.endpoint()],
                Some(
                    ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_secs(2)),
                ),
            )
            .await
            {
                if client.get("etcd-test-ready", None).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `127.0.0.1:port` of the client API.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:port` of the client API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A client for this etcd.
    pub async fn client(&self) -> Client {
        connect(&[self.endpoint()]).await
    }

    /// The text of etcd's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            eprintln!(
                "---- log of etcd ({}) ----\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

// Soft checks: a compatibility test keeps going after a mismatch, so that one run lists
// every difference it finds; `finish_checks` then fails the test with all of them. Each
// mismatch is also printed at once, so it shows even if the test later panics.
// The list is per thread: a test's body (its `block_on` future) runs on its own thread.
thread_local! {
    static SOFT_FAILURES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records one mismatch without stopping the test.
pub fn soft_fail(message: String) {
    eprintln!("MISMATCH {message}");
    SOFT_FAILURES.with(|failures| failures.borrow_mut().push(message));
}

/// Fails the test if any soft check failed, listing every mismatch.
pub fn finish_checks() {
    let failures = SOFT_FAILURES.with(|failures| std::mem::take(&mut *failures.borrow_mut()));
    if !failures.is_empty() {
        panic!(
            "{} mismatch(es):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

/// Like `assert_eq!`, but records the mismatch (see [`soft_fail`]) and goes on.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::check_eq!($left, $right, "values differ")
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            $crate::common::soft_fail(format!(
                "{}:{}: {}\n  got:  {:?}\n  want: {:?}",
                file!(),
                line!(),
                format!($($arg)+),
                left,
                right
            ));
        }
    }};
}

/// Like `assert!`, but records the failure (see [`soft_fail`]) and goes on.
#[macro_export]
macro_rules! check {
    ($condition:expr, $($arg:tt)+) => {{
        if !$condition {
            $crate::common::soft_fail(format!("{}:{}: {}", file!(), line!(), format!($($arg)+)));
        }
    }};
}

/// Records a mismatch at the caller's line.
#[track_caller]
pub fn mismatch(message: String) {
    let caller = std::panic::Location::caller();
    soft_fail(format!("{}:{}: {message}", caller.file(), caller.line()));
}

/// Unwraps a result that must succeed (a failure stops the test: what follows depends
/// on it).
#[track_caller]
pub fn must<T>(what: &str, result: Result<T, etcd_client::Error>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: unexpected error {error}"),
    }
}

/// Checks that `result` is the gRPC error `code` with exactly `message`.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, etcd_client::Error>,
    code: tonic::Code,
    message: &str,
) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status))
            if status.code() == code && status.message() == message => {}
        Err(etcd_client::Error::GRpcStatus(status)) => mismatch(format!(
            "{what}: got status {:?} {:?}, want {code:?} {message:?}",
            status.code(),
            status.message()
        )),
        Err(other) => mismatch(format!(
            "{what}: got error {other}, want {code:?} {message:?}"
        )),
        Ok(value) => mismatch(format!(
            "{what}: succeeded ({}), want {code:?} {message:?}",
            truncate(&format!("{value:?}"))
        )),
    }
}

pub fn truncate(text: &str) -> String {
    if text.len() > 600 {
        format!("{}...", &text[..600])
    } else {
        text.to_string()
    }
}

/// A client of one member whose requests may wait up to `timeout` (a lock or a
/// campaign waits for its turn; a partitioned member may answer only by timing out).
pub async fn patient_client(endpoint: &str, timeout: Duration) -> Client {
    Client::connect(
        [endpoint],
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(timeout),
        ),
    )
    .await
    .expect("connect")
}

impl Cluster {
    /// The HashKV of member `index` at `revision`, waiting (bounded) until it has
    /// applied that revision.
    pub async fn hash_at(&self, index: usize, revision: i64) -> u32 {
        let client = self.client(index).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.maintenance_client().hash_kv(revision).await {
                Ok(response) => return response.hash(),
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "member {index} never reached revision {revision}: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Checks that every running member's store hashes the same up to `revision`.
    pub async fn assert_replicas_agree(&self, revision: i64) {
        let mut hashes = Vec::new();
        for index in 0..self.members.len() {
            if self.members[index].is_running() {
                hashes.push((index, self.hash_at(index, revision).await));
            }
        }
        assert!(
            hashes.windows(2).all(|pair| pair[0].1 == pair[1].1),
            "replicas disagree at revision {revision}: {hashes:?}"
        );
    }
}
