//! What the black-box tests share. The cluster, process and proxy harness lives in
//! the `synod-harness` crate; this module is the tests' thin layer over it: the
//! synod binary under test is this crate's, and a harness error fails the test
//! (panics with the error) instead of being returned. Also the test-only helpers:
//! soft checks, running commands, etcdctl and a real etcd.

// Each test binary uses only some of what is here.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

mod command;
mod etcd;
mod soft_checks;

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::Client;
use nix::sys::signal::Signal;
use synod_harness::{HarnessError, PeerProxy};

pub use command::{run_command, CmdOutput};
pub use etcd::{EtcdServer, Etcdctl, ETCD_READY_TIMEOUT};
pub use soft_checks::{expect_error, finish_checks, mismatch, must, soft_fail, truncate};
pub use synod_harness::{Member, READY_TIMEOUT};

/// The `synod` binary under test: this crate's, or the one `SYNOD_TEST_BIN`
/// names (to measure a case against a release build).
pub fn synod_binary() -> PathBuf {
    std::env::var_os("SYNOD_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_synod")))
}

/// The value of a harness call that must succeed; fails the test otherwise.
#[track_caller]
fn ok<T>(what: &str, result: Result<T, HarnessError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: {error}"),
    }
}

/// A free loopback port, never one handed out before in this test process.
pub fn free_port() -> u16 {
    ok("reserve a port", synod_harness::free_port())
}

/// A client for `endpoints` with bounded connect and request timeouts.
pub async fn connect(endpoints: &[String]) -> Client {
    ok("connect", synod_harness::connect(endpoints).await)
}

/// A client of one member whose requests may wait up to `timeout` (a lock or a
/// campaign waits for its turn; a partitioned member may answer only by timing out).
pub async fn patient_client(endpoint: &str, timeout: Duration) -> Client {
    ok(
        "connect",
        synod_harness::patient_client(endpoint, timeout).await,
    )
}

/// A [`synod_harness::Cluster`] of this crate's binary whose fallible calls fail
/// the test; everything else is the harness's, through `Deref`.
pub struct Cluster(synod_harness::Cluster);

impl Deref for Cluster {
    type Target = synod_harness::Cluster;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Cluster {
    /// Starts `size` members with extra `serve` flags and waits for a leader.
    pub async fn start(size: usize, extra_args: &[&str]) -> Cluster {
        let started = synod_harness::Cluster::start(synod_binary(), size, extra_args).await;
        Cluster(ok("start the cluster", started))
    }

    /// Starts `size` members whose peer traffic goes through a proxy the test
    /// controls, and waits for a leader.
    pub async fn start_behind_proxy(size: usize, extra_args: &[&str]) -> Cluster {
        let started =
            synod_harness::Cluster::start_behind_proxy(synod_binary(), size, extra_args).await;
        Cluster(ok("start the cluster behind a proxy", started))
    }

    /// The peer-traffic proxy (for clusters started behind one).
    pub fn proxy(&self) -> &PeerProxy {
        self.0.proxy().expect("cluster started behind a proxy")
    }

    /// Adds a member that will join the running cluster; returns its index.
    pub fn add_member(&mut self) -> usize {
        ok("add a member", self.0.add_member())
    }

    /// Starts member `index`'s process (again).
    pub fn spawn(&mut self, index: usize) {
        ok("start a member", self.0.spawn(index));
    }

    /// Restarts member `index` after a kill or stop.
    pub fn restart(&mut self, index: usize) {
        ok("restart a member", self.0.restart(index));
    }

    /// Sends `signal` to member `index`.
    pub fn signal(&self, index: usize, signal: Signal) {
        ok("signal a member", self.0.signal(index, signal));
    }

    /// A client that talks to member `index` only.
    pub async fn client(&self, index: usize) -> Client {
        ok("connect to a member", self.0.client(index).await)
    }

    /// The index of the member every running member agrees is leader.
    pub async fn leader(&self) -> usize {
        ok("find the leader", self.0.leader().await)
    }

    /// The index of some running member that is not the leader.
    pub async fn follower(&self) -> usize {
        ok("find a follower", self.0.follower().await)
    }

    /// Waits until every running member agrees on a leader and answers a
    /// linearizable read.
    pub async fn wait_ready(&self) {
        ok("wait for the cluster", self.0.wait_ready().await);
    }

    /// The HashKV of member `index` at `revision`.
    pub async fn hash_at(&self, index: usize, revision: i64) -> u32 {
        ok(
            "hash a member's store",
            self.0.hash_at(index, revision).await,
        )
    }

    /// Checks that every running member's store hashes the same up to `revision`.
    pub async fn assert_replicas_agree(&self, revision: i64) {
        ok(
            "compare the replicas",
            self.0.check_replicas_agree(revision).await,
        );
    }
}
