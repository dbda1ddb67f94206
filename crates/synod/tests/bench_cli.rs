//! `synod bench` as the comparison script runs it: every workload for about a second
//! against a one-member cluster, with `--json`, must do work and see no error; a
//! sequential fill writes exactly the keys it says; an unreachable endpoint is an
//! error that names it. These check the load generator, not the speed of anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, run_command, synod_binary, Cluster, CmdOutput};
use serde_json::Value;

/// How long one bench process may run: a 1 s measurement plus setup and drain.
const BENCH_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `synod bench <args>` and returns its output.
fn bench(args: &[&str]) -> CmdOutput {
    let mut command = Command::new(synod_binary());
    command
        .arg("bench")
        .args(args)
        .env_remove("SYNOD_ENDPOINTS");
    run_command(command, None, BENCH_TIMEOUT)
}

/// Runs `synod bench <args> --json` and parses its one result line.
fn bench_json(args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = bench(&with_json);
    assert_eq!(
        out.code, 0,
        "synod bench {args:?} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.stdout, out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "synod bench {args:?} printed {} lines, want one JSON line:\n{}",
        lines.len(),
        out.stdout
    );
    serde_json::from_str(lines[0])
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", lines[0]))
}

fn number(result: &Value, field: &str) -> u64 {
    result[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field} missing or not a count in {result}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_without_errors() {
    let cluster = Cluster::start(1, &[]).await;
    let endpoint = cluster.members[0].endpoint();
    let runs: &[(&str, &[&str])] = &[
        ("put", &[]),
        ("get-lin", &[]),
        ("get-ser", &[]),
        ("txn-cas", &["--key-space", "16"]),
        ("lock", &[]),
        ("lock", &["--lock-mode", "shared"]),
        ("lease", &[]),
        ("watch-latency", &["--watchers", "2"]),
    ];
    for (workload, extra) in runs {
        let mut args = vec![
            *workload,
            "--endpoints",
            &endpoint,
            "--clients",
            "4",
            "--duration",
            "1s",
            "--label",
            "bench_cli",
        ];
        args.extend_from_slice(extra);
        let result = bench_json(&args);
        let what = format!("{workload} {extra:?}: {result}");
        assert_eq!(result["workload"], *workload, "{what}");
        assert_eq!(number(&result, "clients"), 4, "{what}");
        assert_eq!(number(&result, "conns"), 4, "{what}");
        assert_eq!(result["label"], "bench_cli", "{what}");
        assert!(number(&result, "ops") > 0, "no operation done: {what}");
        assert_eq!(number(&result, "errors"), 0, "errors: {what}");
        assert!(result["first_error"].is_null(), "{what}");
        assert!(result["ops_per_sec"].as_f64().unwrap() > 0.0, "{what}");
        let duration = result["duration_s"].as_f64().unwrap();
        assert!(
            (0.9..10.0).contains(&duration),
            "measured {duration}s: {what}"
        );
        let (p50, p99, p999, max) = (
            number(&result, "p50_us"),
            number(&result, "p99_us"),
            number(&result, "p999_us"),
            number(&result, "max_us"),
        );
        assert!(
            0 < p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "percentiles out of order: {what}"
        );
        // Lost compare-and-swap races are answered operations, counted apart.
        let failures = number(&result, "failures");
        if *workload == "txn-cas" {
            assert!(failures <= number(&result, "ops"), "{what}");
        } else {
            assert_eq!(failures, 0, "{what}");
        }
        if *workload == "watch-latency" {
            assert_eq!(
                number(&result, "events"),
                2 * number(&result, "ops"),
                "each of the 2 watchers sees every acknowledged put: {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_fill_writes_each_key_once() {
    let cluster = Cluster::start(1, &[]).await;
    let endpoint = cluster.members[0].endpoint();
    let result = bench_json(&[
        "put",
        "--endpoints",
        &endpoint,
        "--clients",
        "8",
        "--total",
        "300",
        "--key-space",
        "300",
        "--sequential-keys",
        "--value-size",
        "64",
        "--key-prefix",
        "fill/",
    ]);
    assert_eq!(number(&result, "ops"), 300, "{result}");
    assert_eq!(number(&result, "errors"), 0, "{result}");

    let mut client = cluster.client(0).await;
    let keys = client
        .get(
            "fill/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("read the filled keys");
    assert_eq!(keys.count(), 300, "every key written once");
    assert_eq!(keys.kvs()[0].key(), b"fill/000");
    assert_eq!(keys.kvs()[299].key(), b"fill/299");
    let value = client.get("fill/123", None).await.expect("get");
    assert_eq!(value.kvs()[0].value().len(), 64, "--value-size");
}

#[test]
fn an_unreachable_endpoint_is_named_in_the_error() {
    let endpoint = format!("127.0.0.1:{}", free_port());
    let out = bench(&["put", "--endpoints", &endpoint, "--duration", "1s"]);
    assert_ne!(
        out.code, 0,
        "bench against nothing succeeded: {}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains(&format!("cannot connect to http://{endpoint}")),
        "unclear error: {}",
        out.stderr
    );
    let out = bench(&["put", "--clients", "0"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("--clients"),
        "unclear error: {}",
        out.stderr
    );
}
