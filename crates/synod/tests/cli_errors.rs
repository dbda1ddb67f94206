//! The common ways a command fails, each held to the one line it prints: what
//! failed, why, and what to do; the chain of causes only under `--debug`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{free_port, run_command, synod_binary, Cluster};

/// Runs `synod` with `args` (and `env`) to its end, bounded; returns (exit code,
/// stderr).
fn run(args: &[String], env: &[(&'static str, String)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(synod_binary());
    command
        .args(args)
        .env_remove("SYNOD_ENDPOINTS")
        .current_dir(dir.path());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = run_command(command, None, Duration::from_secs(30));
    (output.code, output.stderr)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|arg| (*arg).to_string()).collect()
}

/// Environment variables a case sets.
type Env = Vec<(&'static str, String)>;

/// What a case expects of stderr: the whole line, or its start and end.
enum Line {
    Exactly(String),
    Around(String, String),
}

#[test]
fn each_common_failure_prints_one_line_that_says_what_to_do() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_url = format!("http://{}", taken.local_addr().unwrap());
    let unreachable = format!(
        "synod: cannot reach {nobody} (connection refused): is a member running there? set --endpoints or SYNOD_ENDPOINTS"
    );
    let cases: Vec<(&str, Vec<String>, Env, Line)> = vec![
        (
            "no member at the endpoint",
            args(&["get", "foo", "--endpoints", &nobody]),
            vec![],
            Line::Exactly(unreachable.clone()),
        ),
        (
            "no member at the endpoint named by SYNOD_ENDPOINTS",
            args(&["put", "foo", "bar"]),
            vec![("SYNOD_ENDPOINTS", nobody.clone())],
            Line::Exactly(unreachable),
        ),
        (
            "an empty key to put",
            args(&["put", "", "x", "--endpoints", &nobody]),
            vec![],
            Line::Exactly("synod: the key is empty: give a key".into()),
        ),
        (
            "an empty key to get",
            args(&["get", "", "--endpoints", &nobody]),
            vec![],
            Line::Exactly("synod: the key is empty: give a key".into()),
        ),
        (
            "an endpoint that is not a URL",
            args(&["del", "foo", "--endpoints", "http://[bad"]),
            vec![],
            Line::Exactly(
                "synod: bad endpoint \"http://[bad\": invalid URI: set --endpoints (or SYNOD_ENDPOINTS) to host:port or http://host:port, comma-separated".into(),
            ),
        ),
        (
            "a client port already taken",
            args(&[
                "serve",
                "--listen-client-urls",
                &taken_url,
                "--advertise-client-urls",
                &taken_url,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", free_port()),
            ]),
            vec![],
            Line::Around(
                format!(
                    "synod: cannot listen on {}: ",
                    taken_url.trim_start_matches("http://")
                ),
                ": is another member or etcd running on it? choose another address with --listen-client-urls or --listen-peer-urls".into(),
            ),
        ),
    ];
    for (case, args, env, expected) in cases {
        let (code, stderr) = run(&args, &env);
        assert_eq!(code, 1, "{case}: exit code; stderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{case}: not one line: {stderr}");
        let line = lines[0];
        match expected {
            Line::Exactly(text) => assert_eq!(line, text, "{case}"),
            Line::Around(start, end) => assert!(
                line.starts_with(&start) && line.ends_with(&end),
                "{case}: {line:?} should start with {start:?} and end with {end:?}"
            ),
        }
        assert!(!line.contains("tonic"), "{case}: {line}");
    }
}

#[test]
fn debug_prints_the_chain_of_causes() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, stderr) = run(
        &args(&["get", "foo", "--endpoints", &nobody, "--debug"]),
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("Caused by"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

/// An error the cluster answers with reads as etcd's message, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_by_the_cluster_is_its_message_alone() {
    let cluster = Cluster::start(1, &[]).await;
    let endpoints = cluster.endpoints().join(",");
    let (code, stderr) = run(
        &args(&["lease", "revoke", "1234", "--endpoints", &endpoints]),
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "synod: etcdserver: requested lease not found"
    );
}
