#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// Debian's etcdctl 3.4 against a FOLLOWER of a 3-node synod cluster: lease, watch,
// lock and elect. etcdctl's lock and elect are etcd's client-side recipes (sessions,
// transactions, watches), so they exercise leases, Txn and Watch together. Expected
// outputs are etcd 3.4.23's exactly (recorded against a real etcd).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::panic::Location;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{finish_checks, run_command, soft_fail, Cluster, CmdOutput};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Records a mismatch at the caller's line and goes on.
#[track_caller]
fn mismatch(message: String) {
    let caller = Location::caller();
    soft_fail(format!("{}:{}: {message}", caller.file(), caller.line()));
}

fn describe(out: &CmdOutput) -> String {
    format!(
        "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.code, out.stdout, out.stderr
    )
}

/// Checks a finished command's exit code and exact stdout.
#[track_caller]
fn expect_out(out: &CmdOutput, code: i32, stdout: &str) {
    if out.code != code || out.stdout != stdout {
        mismatch(format!(
            "expected exit {code} with stdout {stdout:?}, got {}",
            describe(out)
        ));
    }
}

/// `etcdctl <args>` (API v3) for `endpoint`, optionally under coreutils' `timeout`.
fn etcdctl(endpoint: &str, timeout_seconds: Option<u32>, args: &[&str]) -> Command {
    assert!(
        std::path::Path::new("/usr/bin/etcdctl").exists(),
        "/usr/bin/etcdctl is missing: run scripts/install-test-deps.sh"
    );
    let mut command = match timeout_seconds {
        Some(seconds) => {
            let mut command = Command::new("timeout");
            command.arg(seconds.to_string()).arg("/usr/bin/etcdctl");
            command
        }
        None => Command::new("/usr/bin/etcdctl"),
    };
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCD") {
            command.env_remove(name);
        }
    }
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=15s")
        .args(args);
    command
}

/// Runs a command to completion (bounded).
fn run(command: Command) -> CmdOutput {
    run_command(command, None, Duration::from_secs(30))
}

/// A command running in the background whose stdout lines are collected as they
/// come (with the time each arrived). Dropping it kills the process (so it must be
/// etcdctl itself, not a wrapper such as `timeout` whose child would survive).
struct Background {
    name: String,
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
}

impl Background {
    fn spawn(name: &str, mut command: Command) -> Background {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        let stdout = child.stdout.take().expect("stdout pipe");
        let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr_pipe.read_to_string(&mut text);
                stderr.lock().unwrap().push_str(&text);
            });
        }
        Background {
            name: name.to_string(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn pull(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// The lines printed so far.
    fn text(&mut self) -> Vec<String> {
        self.pull();
        self.seen.iter().map(|(_, line)| line.clone()).collect()
    }

    /// Waits (bounded) until at least `count` lines have been printed.
    async fn wait_lines(&mut self, count: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            self.pull();
            if self.seen.len() >= count {
                return self.text();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let text = self.text();
                panic!(
                    "{} printed {} of {count} lines within {within:?}: {text:?}\nstderr: {}",
                    self.name,
                    text.len(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the last line printed is `line`; returns how many lines
    /// have been printed.
    async fn wait_last(&mut self, line: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text();
            if text.last().is_some_and(|last| last == line) {
                return text.len();
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not print {line:?} within {within:?}: {text:?}\nstderr: {}",
                    self.name,
                    self.stderr.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When line `index` was printed.
    fn printed_at(&mut self, index: usize) -> Instant {
        self.pull();
        self.seen[index].0
    }

    fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Waits (bounded) for the process to exit; returns its exit code and every
    /// line it printed.
    async fn wait_exit(&mut self, within: Duration) -> (i32, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader thread drain the pipe.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (status.code().unwrap_or(-1), self.text());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let text = self.text();
                panic!(
                    "{} did not exit within {within:?}; printed {text:?}\nstderr: {}",
                    self.name,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lease id (hex) from `lease <id> granted with TTL(<ttl>s)`.
#[track_caller]
fn granted_id(out: &CmdOutput, ttl: i64) -> String {
    let line = out.stdout.trim_end();
    let id = line
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(&format!(" granted with TTL({ttl}s)")))
        .unwrap_or_else(|| panic!("unexpected lease grant output: {}", describe(out)));
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "lease id {id:?} is not 16 hex digits"
    );
    id.to_string()
}

async fn put(client: &mut etcd_client::Client, key: &str, value: &str) -> i64 {
    client
        .put(key, value, None)
        .await
        .expect("put")
        .header()
        .map_or(0, |header| header.revision())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_commands_against_a_follower() {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let endpoint = cluster.members[follower].endpoint();
    let ctl = |args: &[&str]| run(etcdctl(&endpoint, None, args));

    // grant, put with the lease, timetolive (with and without --keys).
    let out = ctl(&["lease", "grant", "60"]);
    let id = granted_id(&out, 60);
    for key in ["lk2", "lk1"] {
        expect_out(
            &ctl(&["put", key, "v", &format!("--lease={id}")]),
            0,
            "OK\n",
        );
    }
    let out = ctl(&["lease", "timetolive", &id, "--keys"]);
    let prefix = format!("lease {id} granted with TTL(60s), remaining(");
    match out
        .stdout
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("\n"))
        .and_then(|rest| rest.split_once("s), attached keys(["))
        .and_then(|(remaining, keys)| Some((remaining, keys.strip_suffix("])")?)))
    {
        Some((remaining, keys)) if out.code == 0 => {
            let remaining: i64 = remaining.parse().unwrap_or(-1);
            check!(
                (57..=60).contains(&remaining),
                "remaining TTL {remaining} of a fresh 60 s lease"
            );
            let keys: BTreeSet<&str> = keys.split(' ').collect();
            check_eq!(keys, BTreeSet::from(["lk1", "lk2"]), "attached keys");
        }
        _ => mismatch(format!(
            "lease timetolive --keys: expected \"{prefix}N s), attached keys([lk1 lk2])\", got {}",
            describe(&out)
        )),
    }
    let out = ctl(&["lease", "timetolive", &id]);
    check!(
        out.code == 0
            && out.stdout.starts_with(&prefix)
            && out.stdout.ends_with("s)\n")
            && !out.stdout.contains("attached"),
        "lease timetolive: {}",
        describe(&out)
    );

    // list.
    let out = ctl(&["lease", "grant", "30"]);
    let second = granted_id(&out, 30);
    let out = ctl(&["lease", "list"]);
    let mut lines = out.stdout.lines();
    check_eq!(
        (out.code, lines.next()),
        (0, Some("found 2 leases")),
        "lease list header: {}",
        describe(&out)
    );
    let listed: BTreeSet<&str> = lines.collect();
    check_eq!(
        listed,
        BTreeSet::from([id.as_str(), second.as_str()]),
        "lease list ids"
    );

    // keep-alive, for 3 s of a 3 s lease: one renewal a second.
    let out = ctl(&["lease", "grant", "3"]);
    let short = granted_id(&out, 3);
    let out = run(etcdctl(
        &endpoint,
        Some(3),
        &["lease", "keep-alive", &short],
    ));
    let line = format!("lease {short} keepalived with TTL(3)");
    let lines: Vec<&str> = out.stdout.lines().collect();
    check!(
        out.code == 124 && (2..=4).contains(&lines.len()) && lines.iter().all(|l| *l == line),
        "lease keep-alive for 3 s: expected 2 to 4 lines {line:?}, got {}",
        describe(&out)
    );
    // The lease is alive after its keep-alives (renewed within the last second).
    let out = ctl(&["lease", "timetolive", &short]);
    check!(
        out.stdout
            .starts_with(&format!("lease {short} granted with TTL(3s), remaining(")),
        "a kept-alive lease: {}",
        describe(&out)
    );

    // revoke: keys go; timetolive, keep-alive and a second revoke see no lease.
    expect_out(
        &ctl(&["lease", "revoke", &id]),
        0,
        &format!("lease {id} revoked\n"),
    );
    expect_out(&ctl(&["get", "lk", "--prefix"]), 0, "");
    expect_out(
        &ctl(&["lease", "timetolive", &id, "--keys"]),
        0,
        &format!("lease {id} already expired\n"),
    );
    let out = ctl(&["lease", "revoke", &id]);
    check!(
        out.code == 1
            && out.stdout.is_empty()
            && out.stderr.ends_with(
                "Error: failed to revoke lease (etcdserver: requested lease not found)\n"
            )
            && out
                .stderr
                .contains("code = NotFound desc = etcdserver: requested lease not found"),
        "revoking a revoked lease: {}",
        describe(&out)
    );
    expect_out(
        &run(etcdctl(&endpoint, Some(10), &["lease", "keep-alive", &id])),
        0,
        &format!("lease {id} expired or revoked.\n"),
    );
    let out = ctl(&["put", "lk3", "v", &format!("--lease={id}")]);
    check!(
        out.code == 1
            && out
                .stderr
                .ends_with("Error: etcdserver: requested lease not found\n"),
        "put with a revoked lease: {}",
        describe(&out)
    );
    // keep-alive ends by itself when its lease is revoked under it (it notices at
    // its next renewal, a third of the TTL later).
    let out = ctl(&["lease", "grant", "3"]);
    let second = granted_id(&out, 3);
    let mut keeper = Background::spawn(
        "lease keep-alive",
        etcdctl(&endpoint, None, &["lease", "keep-alive", &second]),
    );
    keeper.wait_lines(1, Duration::from_secs(10)).await;
    expect_out(
        &ctl(&["lease", "revoke", &second]),
        0,
        &format!("lease {second} revoked\n"),
    );
    let (code, lines) = keeper.wait_exit(Duration::from_secs(5)).await;
    check_eq!(
        (code, lines.last().cloned()),
        (0, Some(format!("lease {second} expired or revoked."))),
        "keep-alive of a lease revoked under it; stderr: {}",
        keeper.stderr()
    );
    finish_checks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_against_a_follower() {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let endpoint = cluster.members[follower].endpoint();
    let mut client = cluster.client(follower).await;

    // watch --prefix, live: wait until the watch is in place (a probe key shows up),
    // then write.
    let mut watch = Background::spawn(
        "watch --prefix",
        etcdctl(&endpoint, None, &["watch", "--prefix", "w/"]),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watch.text().iter().any(|line| line == "w/probe") {
        assert!(
            Instant::now() < deadline,
            "etcdctl watch never saw the probe"
        );
        put(&mut client, "w/probe", "p").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every probe's event comes before this one's.
    put(&mut client, "w/sync", "synced").await;
    let synced = watch.wait_last("synced", Duration::from_secs(5)).await;
    put(&mut client, "w/a", "1").await;
    put(&mut client, "x/outside", "1").await;
    put(&mut client, "w/b", "two words").await;
    client.delete("w/a", None).await.expect("delete");
    let lines = watch.wait_lines(synced + 9, Duration::from_secs(5)).await;
    check_eq!(
        lines[synced..].to_vec(),
        [
            "PUT",
            "w/a",
            "1",
            "PUT",
            "w/b",
            "two words",
            "DELETE",
            "w/a",
            ""
        ]
        .map(String::from)
        .to_vec(),
        "etcdctl watch --prefix output"
    );
    watch.signal(Signal::SIGINT);
    let (_, lines) = watch.wait_exit(Duration::from_secs(10)).await;
    check_eq!(lines.len(), synced + 9, "no more output: {lines:?}");

    // watch --rev N replays history written before it started.
    let first = put(&mut client, "h", "1").await;
    put(&mut client, "h", "2").await;
    client.delete("h", None).await.expect("delete");
    put(&mut client, "h", "3").await;
    let out = run(etcdctl(
        &endpoint,
        Some(3),
        &["watch", "h", &format!("--rev={}", first + 1)],
    ));
    expect_out(&out, 124, "PUT\nh\n2\nDELETE\nh\n\nPUT\nh\n3\n");

    // watch --prev-kv (replayed, then live).
    let first = put(&mut client, "pk", "old").await;
    put(&mut client, "pk", "new").await;
    put(&mut client, "pk2", "x").await;
    client.delete("pk", None).await.expect("delete");
    let out = run(etcdctl(
        &endpoint,
        Some(3),
        &[
            "watch",
            "pk",
            "--prefix",
            "--prev-kv",
            &format!("--rev={}", first + 1),
        ],
    ));
    expect_out(
        &out,
        124,
        "PUT\npk\nold\npk\nnew\nPUT\npk2\nx\nDELETE\npk\nnew\npk\n\n",
    );
    let mut live = Background::spawn(
        "watch --prev-kv",
        etcdctl(&endpoint, None, &["watch", "pk2", "--prev-kv"]),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.text().is_empty() {
        assert!(
            Instant::now() < deadline,
            "etcdctl watch --prev-kv saw nothing"
        );
        put(&mut client, "pk2", "y").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    put(&mut client, "pk2", "synced").await;
    let synced = live.wait_last("synced", Duration::from_secs(5)).await;
    client.delete("pk2", None).await.expect("delete");
    let lines = live.wait_lines(synced + 5, Duration::from_secs(5)).await;
    check_eq!(
        lines[synced - 5..].to_vec(),
        ["PUT", "pk2", "y", "pk2", "synced", "DELETE", "pk2", "synced", "pk2", ""]
            .map(String::from)
            .to_vec(),
        "etcdctl watch --prev-kv, live"
    );
    drop(live);

    // A watch from a compacted revision is canceled by the server.
    let now = put(&mut client, "c", "1").await;
    client.compact(now, None).await.expect("compact");
    client.get("c", None).await.expect("read barrier");
    let out = run(etcdctl(&endpoint, Some(5), &["watch", "c", "--rev=2"]));
    check!(
        out.code == 5
            && out.stdout.is_empty()
            && out.stderr.contains(
                "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
            )
            && out
                .stderr
                .ends_with("Error: watch is canceled by the server\n"),
        "watch from a compacted revision: {}",
        describe(&out)
    );
    finish_checks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_against_a_follower() {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let endpoint = cluster.members[follower].endpoint();

    // lock NAME -- COMMAND, two contenders: the second runs only after the first's
    // command has finished.
    let mut first = Background::spawn(
        "lock (first)",
        etcdctl(
            &endpoint,
            None,
            &[
                "lock",
                "L1",
                "--",
                "sh",
                "-c",
                "echo one-start $ETCD_LOCK_KEY $ETCD_LOCK_REV; sleep 2; echo one-end",
            ],
        ),
    );
    let started = first.wait_lines(1, Duration::from_secs(10)).await;
    let mut second = Background::spawn(
        "lock (second)",
        etcdctl(
            &endpoint,
            None,
            &[
                "lock",
                "L1",
                "--",
                "sh",
                "-c",
                "echo two-start $ETCD_LOCK_KEY $ETCD_LOCK_REV; echo two-end",
            ],
        ),
    );
    let (code, first_lines) = first.wait_exit(Duration::from_secs(15)).await;
    check_eq!(code, 0, "first lock holder's exit code: {}", first.stderr());
    let first_done = first.printed_at(1);
    let (code, second_lines) = second.wait_exit(Duration::from_secs(15)).await;
    check_eq!(
        code,
        0,
        "second lock holder's exit code: {}",
        second.stderr()
    );
    check!(
        second_lines.len() == 2 && second.printed_at(0) >= first_done,
        "the second holder ran before the first finished: {first_lines:?} {second_lines:?}"
    );
    let fields = |line: &str, tag: &str| -> Option<(String, i64)> {
        let mut words = line.split(' ');
        (words.next()? == tag).then_some(())?;
        let key = words.next()?.to_string();
        let revision = words.next()?.parse().ok()?;
        Some((key, revision))
    };
    let one = fields(&started[0], "one-start");
    let two = second_lines
        .first()
        .and_then(|line| fields(line, "two-start"));
    match (&one, &two) {
        (Some((key1, rev1)), Some((key2, rev2))) => {
            for key in [key1, key2] {
                check!(
                    key.strip_prefix("L1/")
                        .is_some_and(|lease| !lease.is_empty()
                            && lease.chars().all(|c| c.is_ascii_hexdigit())),
                    "ETCD_LOCK_KEY {key:?} is not L1/<lease id in hex>"
                );
            }
            check!(key1 != key2, "both holders had the key {key1}");
            check!(
                rev2 > rev1,
                "ETCD_LOCK_REV did not grow: {rev1} then {rev2}"
            );
        }
        _ => mismatch(format!(
            "lock commands' output: {first_lines:?} then {second_lines:?}"
        )),
    }
    check_eq!(
        first_lines.get(1).map(String::as_str),
        Some("one-end"),
        "first command's output"
    );
    check_eq!(
        second_lines.get(1).map(String::as_str),
        Some("two-end"),
        "second command's output"
    );
    // Both released the lock: nothing left under L1/.
    expect_out(
        &run(etcdctl(&endpoint, None, &["get", "L1/", "--prefix"])),
        0,
        "",
    );

    // elect: a listener, a leader, and a candidate that takes over on resignation.
    let mut listener =
        Background::spawn("elect -l", etcdctl(&endpoint, None, &["elect", "-l", "E1"]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut alpha = Background::spawn(
        "elect alpha",
        etcdctl(&endpoint, None, &["elect", "E1", "alpha"]),
    );
    let alpha_lines = alpha.wait_lines(2, Duration::from_secs(10)).await;
    let alpha_key = alpha_lines[0].clone();
    check!(
        alpha_key
            .strip_prefix("E1/")
            .is_some_and(|lease| !lease.is_empty() && lease.chars().all(|c| c.is_ascii_hexdigit())),
        "elected key {alpha_key:?} is not E1/<lease id in hex>"
    );
    check_eq!(alpha_lines[1].as_str(), "alpha", "elected value");
    let heard = listener.wait_lines(2, Duration::from_secs(10)).await;
    check_eq!(
        heard,
        vec![alpha_key.clone(), "alpha".to_string()],
        "elect -l hears the leader"
    );
    let mut beta = Background::spawn(
        "elect beta",
        etcdctl(&endpoint, None, &["elect", "E1", "beta"]),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    check!(
        beta.text().is_empty(),
        "a second candidate was elected while the first leads: {:?}",
        beta.text()
    );
    // SIGINT: etcdctl resigns and exits.
    alpha.signal(Signal::SIGINT);
    let (code, _) = alpha.wait_exit(Duration::from_secs(10)).await;
    check_eq!(code, 0, "elect exit code after SIGINT: {}", alpha.stderr());
    let beta_lines = beta.wait_lines(2, Duration::from_secs(10)).await;
    check!(
        beta_lines[0].starts_with("E1/") && beta_lines[0] != alpha_key,
        "second leader's key {:?}",
        beta_lines[0]
    );
    check_eq!(beta_lines[1].as_str(), "beta", "second leader's value");
    let heard = listener.wait_lines(4, Duration::from_secs(10)).await;
    check_eq!(
        heard,
        vec![
            alpha_key,
            "alpha".to_string(),
            beta_lines[0].clone(),
            "beta".to_string()
        ],
        "elect -l hears the succession"
    );
    beta.signal(Signal::SIGINT);
    beta.wait_exit(Duration::from_secs(10)).await;
    drop(listener);
    finish_checks();
}
