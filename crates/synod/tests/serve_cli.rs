//! `synod serve` as a person runs it: defaults, clean shutdown, refusal of a data dir
//! that belongs to another cluster or holds an earlier format, and errors that say
//! what to do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect, free_port, synod_binary, Cluster};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Runs `synod` with `args` to completion (bounded) and returns (success, stderr).
fn run_to_exit(args: &[String], cwd: &std::path::Path) -> (bool, String) {
    let mut child = Command::new(synod_binary())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn synod");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let output = child.wait_with_output().expect("output");
            return (
                status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("synod {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_cluster_is_refused() {
    let mut cluster = Cluster::start(1, &[]).await;
    let mut client = cluster.client(0).await;
    client.put("kept", "yes", None).await.expect("put");
    assert!(cluster.terminate(0));

    let mut args = cluster.serve_args(0);
    let token = args
        .iter()
        .position(|arg| arg == "--initial-cluster-token")
        .unwrap();
    args[token + 1] = "another-cluster".into();
    let (success, stderr) = run_to_exit(&args, cluster.dir());
    assert!(!success, "synod accepted a data dir from another cluster");
    assert!(
        stderr.contains("data dir belongs to cluster"),
        "unclear error: {stderr}"
    );
    assert!(
        stderr.contains("fresh --data-dir"),
        "error does not say what to do: {stderr}"
    );

    // The data is untouched: the original cluster restarts with it.
    cluster.spawn(0);
    cluster.wait_ready().await;
    let mut client = cluster.client(0).await;
    let response = client.get("kept", None).await.expect("get");
    assert_eq!(response.kvs()[0].value(), b"yes");
}

#[test]
fn data_dir_of_an_earlier_log_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("raft-log.redb"), b"").unwrap();
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "serve",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &format!("default={peer}"),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let (success, stderr) = run_to_exit(&args, dir.path());
    assert!(!success, "synod accepted a data dir of an earlier format");
    assert!(stderr.contains("raft-log.redb"), "unclear error: {stderr}");
    assert!(
        stderr.contains("synod snapshot save"),
        "error does not say what to do: {stderr}"
    );
    // Nothing was written next to the old file.
    let entries: Vec<_> = std::fs::read_dir(&data_dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "the refused data dir was changed");
}

#[test]
fn bad_flags_get_actionable_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["serve", "--initial-cluster-state", "old"],
            "must be \"new\" or \"existing\"",
        ),
        (
            &["serve", "--listen-client-urls", "https://127.0.0.1:1"],
            "only plain http",
        ),
        (
            &[
                "serve",
                "--name",
                "x",
                "--initial-cluster",
                "y=http://127.0.0.1:1",
            ],
            "no member named \"x\"",
        ),
        (
            &["serve", "--initial-cluster", "default"],
            "name=http://IP:PORT",
        ),
        (
            &["serve", "--worker-threads", "0"],
            "invalid value '0' for '--worker-threads",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let (success, stderr) = run_to_exit(&args, dir.path());
        assert!(!success, "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_port_in_use_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let peer = free_port();
    let args: Vec<String> = [
        "serve".to_string(),
        "--listen-client-urls".into(),
        format!("http://127.0.0.1:{port}"),
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
    ]
    .to_vec();
    let (success, stderr) = run_to_exit(&args, dir.path());
    assert!(!success);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// With no flags at all: one member, data in ./synod-data, clients on
/// 127.0.0.1:2379. (Needs those ports free, as a fresh machine has them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_flags_runs_a_single_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(synod_binary())
        .arg("serve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn synod");
    let mut client = connect(&["127.0.0.1:2379".to_string()]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.put("hello", "world", None).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("default member never served a write on 127.0.0.1:2379");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = client.get("hello", None).await.expect("get");
    assert_eq!(response.kvs()[0].value(), b"world");
    assert!(dir.path().join("synod-data").join("synod.redb").exists());

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "SIGTERM exit status {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("synod did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
