//! Debian's etcd 3.4 for the compatibility and differential tests: `etcdctl` with
//! bounded timeouts, and a real single-node etcd on free loopback ports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

use super::{connect, free_port, run_command, CmdOutput};

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
