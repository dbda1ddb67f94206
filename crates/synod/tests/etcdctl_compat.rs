#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// Black-box compatibility: Debian's `etcdctl` 3.4 against a FOLLOWER of a 3-node synod
// cluster. Every expected output is etcd 3.4.23's, as recorded from a real etcd (exact
// stdout, stderr and exit codes); revisions are taken relative to
// the cluster's revision when the test starts. Mismatches are collected (soft checks)
// and reported together at the end of each test.

use std::panic::Location;

use common::{finish_checks, soft_fail, Cluster, CmdOutput, Etcdctl};
use serde_json::{json, Map, Value};

/// A 3-node cluster, an etcdctl pointed at one follower, and that follower's id.
async fn setup() -> (Cluster, Etcdctl, u64) {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let (follower_id, _, _) = cluster.status(follower).await.expect("follower status");
    let ctl = Etcdctl::new(&[cluster.members[follower].endpoint()]);
    (cluster, ctl, follower_id)
}

fn describe(out: &CmdOutput) -> String {
    format!(
        "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.code,
        truncate(&out.stdout),
        truncate(&out.stderr)
    )
}

fn truncate(text: &str) -> String {
    if text.len() > 2000 {
        format!("{}... ({} bytes)", &text[..2000], text.len())
    } else {
        text.to_string()
    }
}

/// Records a mismatch at the caller's line.
#[track_caller]
fn mismatch(message: String) {
    let caller = Location::caller();
    soft_fail(format!("{}:{}: {message}", caller.file(), caller.line()));
}

/// Checks a successful command with exactly `stdout` and nothing on stderr.
#[track_caller]
fn expect_ok(out: &CmdOutput, stdout: &str) {
    if !(out.code == 0 && out.stdout == stdout && out.stderr.is_empty()) {
        mismatch(format!(
            "expected exit 0 with stdout {:?} and empty stderr, got {}",
            truncate(stdout),
            describe(out)
        ));
    }
}

/// Checks etcdctl's report of a server error: the retry interceptor's warn line with
/// the gRPC code, then `Error: <message>`, exit code 1, nothing on stdout.
#[track_caller]
fn expect_server_error(out: &CmdOutput, code: &str, message: &str) {
    let wire = format!("rpc error: code = {code} desc = {message}");
    let last = format!("Error: {message}\n");
    if !(out.code == 1
        && out.stdout.is_empty()
        && out.stderr.contains(&wire)
        && out.stderr.ends_with(&last))
    {
        mismatch(format!(
            "expected exit 1, {wire:?} and a final {last:?} on stderr, got {}",
            describe(out)
        ));
    }
}

const EMPTY_KEY: &str = "etcdserver: key is not provided";
const TOO_LARGE: &str = "etcdserver: request is too large";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
const LEASE_PROVIDED: &str = "etcdserver: lease is provided";

/// Parses a successful command's JSON output (`null` after recording a mismatch if the
/// command failed).
#[track_caller]
fn json_of(out: &CmdOutput) -> Value {
    if !(out.code == 0 && out.stderr.is_empty()) {
        mismatch(format!("expected success, got {}", describe(out)));
        return Value::Null;
    }
    match serde_json::from_str(out.stdout.trim_end()) {
        Ok(value) => value,
        Err(error) => {
            mismatch(format!("stdout is not JSON ({error}): {}", describe(out)));
            Value::Null
        }
    }
}

/// Checks a top-level response header (all four fields present, the follower's id, the
/// expected revision) and returns the rest of the response.
#[track_caller]
fn body(value: &Value, member_id: u64, revision: i64) -> Value {
    let Some(mut object) = value.as_object().cloned() else {
        mismatch(format!("expected a JSON object, got {value}"));
        return Value::Null;
    };
    let Some(Value::Object(header)) = object.remove("header") else {
        mismatch(format!("no header object in {value}"));
        return Value::Object(object);
    };
    let mut keys: Vec<&str> = header.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // etcdctl omits zero fields, so a revision of 0 (which etcd never reports: a fresh
    // store is at revision 1) shows as a missing field.
    let expected: &[&str] = if revision == 0 {
        &["cluster_id", "member_id", "raft_term"]
    } else {
        &["cluster_id", "member_id", "raft_term", "revision"]
    };
    let problems = [
        (
            keys != expected,
            format!("header fields {keys:?}, want {expected:?}"),
        ),
        (
            header["cluster_id"].as_u64().unwrap_or_default() == 0,
            "cluster_id is 0".into(),
        ),
        (
            header["member_id"].as_u64() != Some(member_id),
            format!(
                "member_id {:?} is not the follower's {member_id}",
                header["member_id"]
            ),
        ),
        (
            header["raft_term"].as_u64().unwrap_or_default() == 0,
            "raft_term is 0".into(),
        ),
        (
            header_revision(value) != revision,
            format!(
                "header revision {}, want {revision}",
                header_revision(value)
            ),
        ),
    ];
    for (failed, problem) in problems {
        if failed {
            mismatch(format!("{problem} in {value}"));
        }
    }
    Value::Object(object)
}

/// The header revision of a JSON response.
fn header_revision(value: &Value) -> i64 {
    // Omitted when zero.
    value["header"]
        .get("revision")
        .and_then(Value::as_i64)
        .unwrap_or_default()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// etcdctl's JSON form of a key-value: zero and empty fields are omitted.
fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Value {
    let mut object = Map::new();
    object.insert("key".into(), json!(base64(key.as_bytes())));
    object.insert("create_revision".into(), json!(create));
    object.insert("mod_revision".into(), json!(modified));
    object.insert("version".into(), json!(version));
    if !value.is_empty() {
        object.insert("value".into(), json!(base64(value.as_bytes())));
    }
    Value::Object(object)
}

/// The store's current revision, as a read through the follower reports it.
fn current_revision(ctl: &Etcdctl) -> i64 {
    header_revision(&json_of(&ctl.run(&[
        "get",
        "synod-compat-probe",
        "-w",
        "json",
    ])))
}

/// `key\nvalue\n` lines of etcdctl's simple output.
fn lines(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}\n{value}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_del_against_a_follower() {
    let (_cluster, ctl, me) = setup().await;
    let base = current_revision(&ctl);
    let r = |n: i64| base + n;

    // Missing keys: empty output, and only a header in JSON.
    expect_ok(&ctl.run(&["get", "nonexistent"]), "");
    let value = json_of(&ctl.run(&["get", "nonexistent", "-w", "json"]));
    check_eq!(body(&value, me, r(0)), json!({}));

    expect_ok(&ctl.run(&["put", "foo", "bar"]), "OK\n");
    expect_ok(&ctl.run(&["get", "foo"]), "foo\nbar\n");
    expect_ok(&ctl.run(&["del", "foo"]), "1\n");
    expect_ok(&ctl.run(&["del", "foo"]), "0\n");
    let value = json_of(&ctl.run(&["del", "foo", "-w", "json"]));
    check_eq!(
        body(&value, me, r(2)),
        json!({}),
        "deleting nothing: no 'deleted', no revision"
    );
    let value = json_of(&ctl.run(&["get", "foo", "-w", "json"]));
    check_eq!(body(&value, me, r(2)), json!({}));

    for (key, val) in [
        ("p/a", "1"),
        ("p/b", "2"),
        ("p/c", "3"),
        ("q", "4"),
        ("a0", "x"),
    ] {
        expect_ok(&ctl.run(&["put", key, val]), "OK\n");
    }
    // p/a=r3 p/b=r4 p/c=r5 q=r6 a0=r7
    expect_ok(
        &ctl.run(&["get", "--prefix", "p/"]),
        &lines(&[("p/a", "1"), ("p/b", "2"), ("p/c", "3")]),
    );
    let everything = lines(&[
        ("a0", "x"),
        ("p/a", "1"),
        ("p/b", "2"),
        ("p/c", "3"),
        ("q", "4"),
    ]);
    expect_ok(&ctl.run(&["get", "--prefix", ""]), &everything);
    expect_ok(&ctl.run(&["get", "--from-key", ""]), &everything);
    expect_ok(
        &ctl.run(&["get", "--from-key", "p/b"]),
        &lines(&[("p/b", "2"), ("p/c", "3"), ("q", "4")]),
    );
    expect_ok(
        &ctl.run(&["get", "--limit", "2", "--prefix", "p/"]),
        &lines(&[("p/a", "1"), ("p/b", "2")]),
    );
    let value = json_of(&ctl.run(&["get", "--limit", "2", "--prefix", "p/", "-w", "json"]));
    check_eq!(
        body(&value, me, r(7)),
        json!({"kvs": [kv("p/a", "1", r(3), r(3), 1), kv("p/b", "2", r(4), r(4), 1)],
               "more": true, "count": 3})
    );
    let value = json_of(&ctl.run(&["get", "--limit", "3", "--prefix", "p/", "-w", "json"]));
    check_eq!(
        body(&value, me, r(7)),
        json!({"kvs": [kv("p/a", "1", r(3), r(3), 1), kv("p/b", "2", r(4), r(4), 1),
                       kv("p/c", "3", r(5), r(5), 1)],
               "count": 3}),
        "no 'more' when the limit does not truncate"
    );
    // Two arguments: the half-open range [key, range_end).
    expect_ok(
        &ctl.run(&["get", "p/a", "p/c"]),
        &lines(&[("p/a", "1"), ("p/b", "2")]),
    );
    let value = json_of(&ctl.run(&["get", "p/a", "p/c", "-w", "json"]));
    check_eq!(
        body(&value, me, r(7)),
        json!({"kvs": [kv("p/a", "1", r(3), r(3), 1), kv("p/b", "2", r(4), r(4), 1)], "count": 2})
    );

    // Give the p/ keys distinct create, mod, version and value orders.
    for (key, val) in [
        ("p/a", "9"),
        ("p/a", "8"),
        ("p/b", "0"),
        ("p/0", "5"),
        ("p/0", "6"),
        ("p/0", "4"),
        ("p/0", "5"),
    ] {
        expect_ok(&ctl.run(&["put", key, val]), "OK\n");
    }
    // p/0: 5, create r11, mod r14, version 4     p/a: 8, create r3, mod r9, version 3
    // p/b: 0, create r4, mod r10, version 2      p/c: 3, create r5, mod r5, version 1
    let p0 = kv("p/0", "5", r(11), r(14), 4);
    let pa = kv("p/a", "8", r(3), r(9), 3);
    let pb = kv("p/b", "0", r(4), r(10), 2);
    let pc = kv("p/c", "3", r(5), r(5), 1);
    let value = json_of(&ctl.run(&["get", "--prefix", "p/", "-w", "json"]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [p0.clone(), pa.clone(), pb.clone(), pc.clone()], "count": 4})
    );
    let simple = |keys: &[&str]| -> String {
        keys.iter()
            .map(|key| {
                let value = match *key {
                    "p/0" => "5",
                    "p/a" => "8",
                    "p/b" => "0",
                    _ => "3",
                };
                format!("{key}\n{value}\n")
            })
            .collect()
    };
    let sorts: &[(&[&str], &[&str])] = &[
        (
            &["--sort-by=KEY", "--order=ASCEND"],
            &["p/0", "p/a", "p/b", "p/c"],
        ),
        (
            &["--sort-by=KEY", "--order=DESCEND"],
            &["p/c", "p/b", "p/a", "p/0"],
        ),
        (
            &["--sort-by=CREATE", "--order=ASCEND"],
            &["p/a", "p/b", "p/c", "p/0"],
        ),
        (
            &["--sort-by=CREATE", "--order=DESCEND"],
            &["p/0", "p/c", "p/b", "p/a"],
        ),
        (
            &["--sort-by=MODIFY", "--order=ASCEND"],
            &["p/c", "p/a", "p/b", "p/0"],
        ),
        (
            &["--sort-by=MODIFY", "--order=DESCEND"],
            &["p/0", "p/b", "p/a", "p/c"],
        ),
        (
            &["--sort-by=VERSION", "--order=ASCEND"],
            &["p/c", "p/b", "p/a", "p/0"],
        ),
        (
            &["--sort-by=VERSION", "--order=DESCEND"],
            &["p/0", "p/a", "p/b", "p/c"],
        ),
        (
            &["--sort-by=VALUE", "--order=ASCEND"],
            &["p/b", "p/c", "p/0", "p/a"],
        ),
        (
            &["--sort-by=VALUE", "--order=DESCEND"],
            &["p/a", "p/0", "p/c", "p/b"],
        ),
        // A target without an order sorts ascending; an order without a target sorts by key.
        (&["--sort-by=MODIFY"], &["p/c", "p/a", "p/b", "p/0"]),
        (&["--sort-by=VALUE"], &["p/b", "p/c", "p/0", "p/a"]),
        (&["--order=DESCEND"], &["p/c", "p/b", "p/a", "p/0"]),
        (&["--sort-by=key"], &["p/0", "p/a", "p/b", "p/c"]),
    ];
    for (flags, order) in sorts {
        let mut args = vec!["get", "--prefix", "p/"];
        args.extend_from_slice(flags);
        let out = ctl.run(&args);
        check!(
            out.code == 0 && out.stdout == simple(order),
            "{flags:?}: expected order {order:?}, got {}",
            describe(&out)
        );
    }
    // Sorting happens over the whole range before the limit; count ignores the limit.
    let value = json_of(&ctl.run(&[
        "get",
        "--prefix",
        "p/",
        "--sort-by=VALUE",
        "--order=DESCEND",
        "--limit",
        "2",
        "-w",
        "json",
    ]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [pa.clone(), p0.clone()], "more": true, "count": 4})
    );
    let value = json_of(&ctl.run(&[
        "get",
        "--prefix",
        "p/",
        "--limit",
        "2",
        "--sort-by=CREATE",
        "--order=DESCEND",
        "-w",
        "json",
    ]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [p0.clone(), pc.clone()], "more": true, "count": 4})
    );
    let value = json_of(&ctl.run(&[
        "get",
        "--prefix",
        "p/",
        "--limit",
        "2",
        "--sort-by=MODIFY",
        "--order=ASCEND",
        "-w",
        "json",
    ]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [pc.clone(), pa.clone()], "more": true, "count": 4})
    );

    // --keys-only: a key then an empty line; no values in JSON.
    expect_ok(
        &ctl.run(&["get", "--prefix", "p/", "--keys-only"]),
        "p/0\n\np/a\n\np/b\n\np/c\n\n",
    );
    let no_value = |kv: &Value| {
        let mut kv = kv.clone();
        kv.as_object_mut().unwrap().remove("value");
        kv
    };
    let value = json_of(&ctl.run(&["get", "--prefix", "p/", "--keys-only", "-w", "json"]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [no_value(&p0), no_value(&pa), no_value(&pb), no_value(&pc)], "count": 4})
    );
    let value = json_of(&ctl.run(&[
        "get",
        "--prefix",
        "p/",
        "--keys-only",
        "--limit",
        "1",
        "-w",
        "json",
    ]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [no_value(&p0)], "more": true, "count": 4})
    );
    expect_ok(
        &ctl.run(&["get", "--prefix", "p/", "--print-value-only"]),
        "5\n8\n0\n3\n",
    );
    // --keys-only still sorts by the values it does not return.
    expect_ok(
        &ctl.run(&[
            "get",
            "--prefix",
            "p/",
            "--keys-only",
            "--sort-by=VALUE",
            "--order=DESCEND",
        ]),
        "p/a\n\np/0\n\np/c\n\np/b\n\n",
    );
    // A sort target without --order is sent as order NONE: etcd then reads limit+1 keys
    // in key order (p/0, p/a) and sorts only those, instead of sorting the whole range.
    let value = json_of(&ctl.run(&[
        "get",
        "--prefix",
        "p/",
        "--sort-by=MODIFY",
        "--limit",
        "1",
        "-w",
        "json",
    ]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [pa.clone()], "more": true, "count": 4}),
        "--sort-by=MODIFY --limit 1 (no --order)"
    );
    expect_ok(
        &ctl.run(&["get", "--prefix", "p/", "--hex"]),
        "\\x70\\x2f\\x30\n\\x35\n\\x70\\x2f\\x61\n\\x38\n\\x70\\x2f\\x62\n\\x30\n\\x70\\x2f\\x63\n\\x33\n",
    );

    // Limits: 1 truncates, 4 does not, 0 and -1 mean no limit.
    let value = json_of(&ctl.run(&["get", "--prefix", "p/", "--limit", "1", "-w", "json"]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [p0.clone()], "more": true, "count": 4})
    );
    let all_p = json!({"kvs": [p0.clone(), pa.clone(), pb.clone(), pc.clone()], "count": 4});
    for limit in ["4", "0", "-1"] {
        let value = json_of(&ctl.run(&["get", "--prefix", "p/", "--limit", limit, "-w", "json"]));
        check_eq!(body(&value, me, r(14)), all_p, "--limit {limit}");
    }
    let value = json_of(&ctl.run(&["get", "--from-key", "p/b", "--limit", "1", "-w", "json"]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [pb.clone()], "more": true, "count": 3})
    );

    // --rev reads history; 0 and negative revisions mean "current".
    let rev3 = r(3).to_string();
    expect_ok(
        &ctl.run(&["get", "p/a", &format!("--rev={rev3}")]),
        "p/a\n1\n",
    );
    let value = json_of(&ctl.run(&["get", "p/a", &format!("--rev={rev3}"), "-w", "json"]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [kv("p/a", "1", r(3), r(3), 1)], "count": 1})
    );
    let value = json_of(&ctl.run(&["get", "p/a", &format!("--rev={}", r(2)), "-w", "json"]));
    check_eq!(body(&value, me, r(14)), json!({}), "p/a did not exist yet");
    let value = json_of(&ctl.run(&["get", "p/a", "--rev=0", "-w", "json"]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [pa.clone()], "count": 1})
    );
    expect_ok(&ctl.run(&["get", "p/a", "--rev=-1"]), "p/a\n8\n");
    let value = json_of(&ctl.run(&[
        "get",
        "--prefix",
        "p/",
        "--rev",
        &r(10).to_string(),
        "-w",
        "json",
    ]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [kv("p/a", "8", r(3), r(9), 3), kv("p/b", "0", r(4), r(10), 2), pc.clone()],
               "count": 3}),
        "the whole range as of a past revision"
    );
    let value = json_of(&ctl.run(&["get", "p/a", "--consistency=s", "-w", "json"]));
    check_eq!(
        body(&value, me, r(14)),
        json!({"kvs": [pa.clone()], "count": 1})
    );

    // del --prefix and --prev-kv.
    let put_d = |values: &[(&str, &str)]| {
        for (key, val) in values {
            expect_ok(&ctl.run(&["put", key, val]), "OK\n");
        }
    };
    put_d(&[("d/1", "a"), ("d/2", "b"), ("d/3", "c")]); // r15..r17
    expect_ok(&ctl.run(&["del", "--prefix", "d/"]), "3\n"); // r18
    expect_ok(&ctl.run(&["del", "--prefix", "d/"]), "0\n");
    put_d(&[("d/1", "a"), ("d/2", "b"), ("d/3", "c")]); // r19..r21
    let value = json_of(&ctl.run(&["del", "--prefix", "d/", "-w", "json"])); // r22
    check_eq!(body(&value, me, r(22)), json!({"deleted": 3}));
    put_d(&[("d/1", "a"), ("d/2", "b"), ("d/3", "c")]); // r23..r25
    expect_ok(
        &ctl.run(&["del", "--prefix", "d/", "--prev-kv"]),
        "3\nd/1\na\nd/2\nb\nd/3\nc\n",
    ); // r26
    put_d(&[("d/1", "a"), ("d/2", "b")]); // r27, r28
    let value = json_of(&ctl.run(&["del", "--prefix", "d/", "--prev-kv", "-w", "json"])); // r29
    check_eq!(
        body(&value, me, r(29)),
        json!({"deleted": 2,
               "prev_kvs": [kv("d/1", "a", r(27), r(27), 1), kv("d/2", "b", r(28), r(28), 1)]})
    );
    expect_ok(&ctl.run(&["del", "d/1", "d/3"]), "0\n");

    // put --prev-kv.
    expect_ok(&ctl.run(&["put", "x", "1"]), "OK\n"); // r30
    expect_ok(&ctl.run(&["put", "x", "2", "--prev-kv"]), "OK\nx\n1\n"); // r31
    let value = json_of(&ctl.run(&["put", "x", "3", "--prev-kv", "-w", "json"])); // r32
    check_eq!(
        body(&value, me, r(32)),
        json!({"prev_kv": kv("x", "2", r(30), r(31), 2)})
    );
    expect_ok(&ctl.run(&["put", "newkey", "1", "--prev-kv"]), "OK\n"); // r33
    let value = json_of(&ctl.run(&["put", "newkey2", "1", "--prev-kv", "-w", "json"])); // r34
    check_eq!(
        body(&value, me, r(34)),
        json!({}),
        "no prev_kv for a new key"
    );
    let value = json_of(&ctl.run(&["put", "x", "4", "-w", "json"])); // r35
    check_eq!(
        body(&value, me, r(35)),
        json!({}),
        "no prev_kv unless asked"
    );
    expect_ok(&ctl.run(&["del", "x", "--prev-kv"]), "1\nx\n4\n"); // r36
    expect_ok(&ctl.run(&["del", "x", "--prev-kv"]), "0\n");
    expect_ok(&ctl.run(&["del", "--from-key", "zz"]), "0\n");

    // Empty values, --ignore-value, values from stdin, keys that look like flags.
    expect_ok(&ctl.run(&["put", "x", ""]), "OK\n"); // r37
    let value = json_of(&ctl.run(&["get", "x", "-w", "json"]));
    check_eq!(
        body(&value, me, r(37)),
        json!({"kvs": [kv("x", "", r(37), r(37), 1)], "count": 1})
    );
    expect_ok(&ctl.run_with_stdin(&["put", "x"], "from-stdin"), "OK\n"); // r38
    expect_ok(&ctl.run(&["get", "x"]), "x\nfrom-stdin\n");
    expect_ok(&ctl.run(&["put", "x", "--ignore-value"]), "OK\n"); // r39
    let value = json_of(&ctl.run(&["get", "x", "-w", "json"]));
    check_eq!(
        body(&value, me, r(39)),
        json!({"kvs": [kv("x", "from-stdin", r(37), r(39), 3)], "count": 1}),
        "--ignore-value keeps the value and bumps version and mod_revision"
    );
    let out = ctl.run(&["put", "x2", "--ignore-value"]);
    expect_server_error(&out, "InvalidArgument", KEY_NOT_FOUND);
    let out = ctl.run(&["put", "x", "v2", "--ignore-lease", "--lease=1234"]);
    expect_server_error(&out, "InvalidArgument", LEASE_PROVIDED);
    expect_ok(&ctl.run(&["put", "--", "-dash", "v"]), "OK\n"); // r40
    expect_ok(&ctl.run(&["get", "--", "-dash"]), "-dash\nv\n");

    // range_end before key: an empty result, not an error.
    expect_ok(&ctl.run(&["put", "a", "1"]), "OK\n"); // r41
    expect_ok(&ctl.run(&["put", "b", "2"]), "OK\n"); // r42
    expect_ok(&ctl.run(&["get", "b", "a"]), "");
    let value = json_of(&ctl.run(&["get", "b", "a", "-w", "json"]));
    check_eq!(body(&value, me, r(42)), json!({}));
    let value = json_of(&ctl.run(&["get", "b", "b", "-w", "json"]));
    check_eq!(body(&value, me, r(42)), json!({}));
    expect_ok(&ctl.run(&["del", "b", "a"]), "0\n");
    let value = json_of(&ctl.run(&["del", "b", "a", "-w", "json"]));
    check_eq!(body(&value, me, r(42)), json!({}));
    expect_ok(&ctl.run(&["get", "b"]), "b\n2\n");

    // Bad requests: the right error, and nothing changes.
    expect_server_error(
        &ctl.run(&["put", "lk", "v", "--lease=1234"]),
        "NotFound",
        LEASE_NOT_FOUND,
    );
    expect_ok(&ctl.run(&["get", "lk"]), "");
    expect_server_error(&ctl.run(&["put", "", "v"]), "InvalidArgument", EMPTY_KEY);
    expect_server_error(&ctl.run(&["get", ""]), "InvalidArgument", EMPTY_KEY);
    expect_server_error(
        &ctl.run(&["get", "", "-w", "json"]),
        "InvalidArgument",
        EMPTY_KEY,
    );
    expect_server_error(&ctl.run(&["del", ""]), "InvalidArgument", EMPTY_KEY);
    check_eq!(
        current_revision(&ctl),
        r(42),
        "failed requests created no revision"
    );

    // --prefix "" is the whole key space.
    let value = json_of(&ctl.run(&["get", "--prefix", "", "--limit", "1", "-w", "json"]));
    check_eq!(
        body(&value, me, r(42)),
        json!({"kvs": [kv("-dash", "v", r(40), r(40), 1)], "more": true, "count": 12})
    );

    // Checked last so that a mismatch here hides nothing above.
    check_eq!(
        base,
        1,
        "a fresh etcd store is at revision 1 (its first write is revision 2)"
    );

    finish_checks();
}

/// Input for `etcdctl txn`: compares, success ops, failure ops, each section ended by
/// an empty line (the last one is mandatory).
fn txn_input(compares: &[&str], success: &[&str], failure: &[&str]) -> String {
    let mut input = String::new();
    for section in [compares, success, failure] {
        for line in section {
            input.push_str(line);
            input.push('\n');
        }
        input.push('\n');
    }
    input
}

const PROMPTS: &str =
    "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";

/// etcdctl's JSON of one txn op response, whose header carries only the revision.
fn op_response(kind: &str, revision: i64, rest: Value) -> Value {
    let mut inner = rest.as_object().cloned().unwrap_or_default();
    inner.insert("header".into(), json!({"revision": revision}));
    json!({"Response": {kind: Value::Object(inner)}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_txn_against_a_follower() {
    let (_cluster, ctl, me) = setup().await;
    let base = current_revision(&ctl);
    let r = |n: i64| base + n;
    let txn = |input: String, json: bool| {
        if json {
            ctl.run_with_stdin(&["txn", "-w", "json"], input)
        } else {
            ctl.run_with_stdin(&["txn"], input)
        }
    };

    expect_ok(&ctl.run(&["put", "k", "v"]), "OK\n"); // r1

    // Interactive mode prints its prompts, then the outcome.
    let out = ctl.run_with_stdin(
        &["txn", "-i"],
        txn_input(&[r#"value("k") = "v""#], &["put k2 v2"], &["put k3 v3"]),
    );
    expect_ok(&out, &format!("{PROMPTS}SUCCESS\n\nOK\n")); // r2
    expect_ok(&ctl.run(&["get", "k2"]), "k2\nv2\n");
    expect_ok(&ctl.run(&["get", "k3"]), "");
    let out = ctl.run_with_stdin(
        &["txn", "-i"],
        txn_input(&[r#"value("k") = "nope""#], &["put k2 v2"], &["put k3 v3"]),
    );
    expect_ok(&out, &format!("{PROMPTS}FAILURE\n\nOK\n")); // r3
    expect_ok(&ctl.run(&["get", "k3"]), "k3\nv3\n");
    expect_ok(&ctl.run(&["get", "k2"]), "k2\nv2\n");
    // Without the final empty line etcdctl stops at EOF and sends nothing.
    let out = ctl.run_with_stdin(
        &["txn", "-i"],
        "value(\"k\") = \"v\"\n\nput k2 v9\n\nput k3 v9\n",
    );
    check!(
        out.code == 3 && out.stdout == PROMPTS && out.stderr == "Error: EOF\n",
        "{}",
        describe(&out)
    );
    check_eq!(current_revision(&ctl), r(3));

    // Several ops of each kind; reads inside the txn see its earlier writes.
    let out = txn(
        txn_input(
            &[r#"value("k") = "v""#],
            &["put k2 v2b", "get k", "get --prefix k", "del k3"],
            &["put k3 v3"],
        ),
        false,
    );
    expect_ok(
        &out,
        "SUCCESS\n\nOK\n\nk\nv\n\nk\nv\nk2\nv2b\nk3\nv3\n\n1\n",
    ); // r4
    let value = json_of(&txn(
        txn_input(
            &[r#"value("k") = "v""#],
            &["put k2 v2c", "get k", "del k3"],
            &["put k3 v3"],
        ),
        true,
    )); // r5
    check_eq!(
        body(&value, me, r(5)),
        json!({"succeeded": true, "responses": [
            op_response("ResponsePut", r(5), json!({})),
            op_response("ResponseRange", r(5), json!({"kvs": [kv("k", "v", r(1), r(1), 1)], "count": 1})),
            op_response("ResponseDeleteRange", r(5), json!({})),
        ]})
    );
    let value = json_of(&txn(
        txn_input(
            &[r#"value("k") = "nope""#],
            &["put k2 v2c"],
            &["put k3 v3", "get k3"],
        ),
        true,
    )); // r6
    check_eq!(
        body(&value, me, r(6)),
        json!({"responses": [
            op_response("ResponsePut", r(6), json!({})),
            op_response("ResponseRange", r(6), json!({"kvs": [kv("k3", "v3", r(6), r(6), 1)], "count": 1})),
        ]}),
        "a failed txn has no 'succeeded'"
    );

    // No compares: the success branch (here empty) runs.
    expect_ok(
        &txn(txn_input(&[], &[], &["put k4 v4"]), false),
        "SUCCESS\n",
    );
    expect_ok(&ctl.run(&["get", "k4"]), "");
    let value = json_of(&txn(txn_input(&[], &[], &[]), true));
    check_eq!(body(&value, me, r(6)), json!({"succeeded": true}));
    let out = txn(
        txn_input(
            &[
                r#"value("k") = "v""#,
                r#"version("k") > "0""#,
                r#"create("k") != "0""#,
                r#"mod("k") < "1000000""#,
            ],
            &["get k"],
            &[],
        ),
        false,
    );
    expect_ok(&out, "SUCCESS\n\nk\nv\n");

    // --prev-kv and --keys-only inside a txn.
    let value = json_of(&txn(
        txn_input(&[], &["put k5 v5 --prev-kv", "put k6 v6 --prev-kv"], &[]),
        true,
    )); // r7
    check_eq!(
        body(&value, me, r(7)),
        json!({"succeeded": true, "responses": [
            op_response("ResponsePut", r(7), json!({})),
            op_response("ResponsePut", r(7), json!({})),
        ]})
    );
    let value = json_of(&txn(
        txn_input(
            &[],
            &[
                "put k5 v5b --prev-kv",
                "del k6 --prev-kv",
                "get k --keys-only",
            ],
            &[],
        ),
        true,
    )); // r8
    check_eq!(
        body(&value, me, r(8)),
        json!({"succeeded": true, "responses": [
            op_response("ResponsePut", r(8), json!({"prev_kv": kv("k5", "v5", r(7), r(7), 1)})),
            op_response("ResponseDeleteRange", r(8),
                json!({"deleted": 1, "prev_kvs": [kv("k6", "v6", r(7), r(7), 1)]})),
            op_response("ResponseRange", r(8), json!({"kvs": [kv("k", "", r(1), r(1), 1)], "count": 1})),
        ]})
    );
    let out = txn(
        txn_input(&[], &["put k5 v5c --prev-kv", "del k6 --prev-kv"], &[]),
        false,
    ); // r9
    expect_ok(&out, "SUCCESS\n\nOK\nk5\nv5b\n\n0\n");

    // Compares on a missing key: version/create/mod compare against 0, a value compare
    // always fails.
    let missing: &[(&str, bool)] = &[
        (r#"version("missing") = "0""#, true),
        (r#"version("missing") != "0""#, false),
        (r#"version("missing") < "1""#, true),
        (r#"create("missing") = "0""#, true),
        (r#"create("missing") > "0""#, false),
        (r#"mod("missing") = "0""#, true),
        (r#"mod("missing") > "0""#, false),
        (r#"mod("missing") < "1""#, true),
        (r#"value("missing") = "x""#, false),
        (r#"value("missing") = """#, false),
        (r#"value("missing") != "x""#, false),
        (r#"value("missing") > """#, false),
        (r#"value("missing") < "x""#, false),
    ];
    for (compare, succeeds) in missing {
        let value = json_of(&txn(txn_input(&[compare], &[], &[]), true));
        let expected = if *succeeds {
            json!({"succeeded": true})
        } else {
            json!({})
        };
        check_eq!(body(&value, me, r(9)), expected, "{compare}");
    }
    let out = txn(
        txn_input(
            &[
                r#"version("missing") = "0""#,
                r#"value("missing") = "x""#,
                r#"create("missing") = "0""#,
                r#"mod("missing") > "0""#,
            ],
            &["put s ok"],
            &["put f ok"],
        ),
        false,
    ); // r10
    expect_ok(&out, "FAILURE\n\nOK\n");
    expect_ok(&ctl.run(&["get", "s"]), "");
    expect_ok(&ctl.run(&["get", "f"]), "f\nok\n");
    expect_ok(&ctl.run(&["put", "emptyv", ""]), "OK\n"); // r11
    expect_ok(
        &txn(txn_input(&[r#"value("emptyv") = """#], &[], &[]), false),
        "SUCCESS\n",
    );
    expect_ok(
        &txn(
            txn_input(&[r#"value("k") = "v""#, r#"value("p/") = "1""#], &[], &[]),
            false,
        ),
        "FAILURE\n",
    );

    // Revisions: only a txn that changes something creates one, and exactly one.
    let value = json_of(&txn(
        txn_input(
            &[r#"value("k") = "v""#],
            &["get k", "get --prefix k5 --keys-only"],
            &[],
        ),
        true,
    ));
    check_eq!(
        body(&value, me, r(11)),
        json!({"succeeded": true, "responses": [
            op_response("ResponseRange", r(11), json!({"kvs": [kv("k", "v", r(1), r(1), 1)], "count": 1})),
            op_response("ResponseRange", r(11), json!({"kvs": [kv("k5", "", r(7), r(9), 3)], "count": 1})),
        ]}),
        "a read-only txn"
    );
    let value = json_of(&txn(txn_input(&[], &[], &["del nosuchkey"]), true));
    check_eq!(body(&value, me, r(11)), json!({"succeeded": true}));
    let value = json_of(&txn(txn_input(&[], &["del nosuchkey"], &[]), true));
    check_eq!(
        body(&value, me, r(11)),
        json!({"succeeded": true, "responses": [op_response("ResponseDeleteRange", r(11), json!({}))]}),
        "deleting nothing in a txn creates no revision"
    );
    let value = json_of(&txn(
        txn_input(&[r#"value("k") = "zzz""#], &["put r3a 1", "put r3b 2"], &[]),
        true,
    ));
    check_eq!(body(&value, me, r(11)), json!({}));
    let value = json_of(&txn(
        txn_input(&[], &["put r4a 1", "put r4b 2", "put r4c 3"], &[]),
        true,
    )); // r12
    check_eq!(header_revision(&value), r(12));
    let value = json_of(&ctl.run(&["get", "--prefix", "r4", "-w", "json"]));
    check_eq!(
        body(&value, me, r(12)),
        json!({"kvs": [kv("r4a", "1", r(12), r(12), 1), kv("r4b", "2", r(12), r(12), 1),
                       kv("r4c", "3", r(12), r(12), 1)], "count": 3}),
        "three puts in one txn share one revision"
    );
    let value = json_of(&ctl.run(&["put", "r4a", "1", "-w", "json"])); // r13
    check_eq!(
        body(&value, me, r(13)),
        json!({}),
        "the same value again still makes a revision"
    );
    let value = json_of(&ctl.run(&["get", "r4a", "-w", "json"]));
    check_eq!(
        body(&value, me, r(13)),
        json!({"kvs": [kv("r4a", "1", r(12), r(13), 2)], "count": 1})
    );
    let value = json_of(&txn(txn_input(&[], &["put r5 1", "get r5"], &[]), true)); // r14
    check_eq!(
        body(&value, me, r(14)),
        json!({"succeeded": true, "responses": [
            op_response("ResponsePut", r(14), json!({})),
            op_response("ResponseRange", r(14), json!({"kvs": [kv("r5", "1", r(14), r(14), 1)], "count": 1})),
        ]})
    );
    let value = json_of(&txn(txn_input(&[], &["get r6", "put r6 1"], &[]), true)); // r15
    check_eq!(
        body(&value, me, r(15)),
        json!({"succeeded": true, "responses": [
            op_response("ResponseRange", r(14), json!({})),
            op_response("ResponsePut", r(15), json!({})),
        ]}),
        "a get before the txn's first write reports the previous revision"
    );

    // An unknown lease fails the txn only in the branch that runs.
    let value = json_of(&txn(txn_input(&[], &[], &["put tl v --lease=1234"]), true));
    check_eq!(body(&value, me, r(15)), json!({"succeeded": true}));
    let out = txn(txn_input(&[], &["put tl v --lease=1234"], &[]), false);
    expect_server_error(&out, "NotFound", LEASE_NOT_FOUND);

    // Duplicate keys: per branch, checked in both branches before evaluation.
    let out = txn(txn_input(&[], &["put dup 1", "put dup 2"], &[]), false);
    expect_server_error(&out, "InvalidArgument", DUPLICATE_KEY);
    expect_ok(
        &txn(txn_input(&[], &["put dup 1"], &["put dup 2"]), false),
        "SUCCESS\n\nOK\n",
    ); // r16
    expect_ok(
        &txn(txn_input(&[], &["put dup 1"], &["del dup"]), false),
        "SUCCESS\n\nOK\n",
    ); // r17
    expect_ok(
        &txn(txn_input(&[], &["del dup", "del dup"], &[]), false),
        "SUCCESS\n\n1\n\n0\n",
    ); // r18
    let out = txn(
        txn_input(&[], &["put dup/a 1", "del --prefix dup/"], &[]),
        false,
    );
    expect_server_error(&out, "InvalidArgument", DUPLICATE_KEY);
    let out = txn(
        txn_input(&[], &["del --prefix dup/", "put dup/a 1"], &[]),
        false,
    );
    expect_server_error(&out, "InvalidArgument", DUPLICATE_KEY);
    expect_ok(
        &txn(
            txn_input(&[], &["del --prefix dup/", "del dup/a"], &[]),
            false,
        ),
        "SUCCESS\n\n0\n\n0\n",
    );
    expect_ok(
        &txn(
            txn_input(&[], &["get dup", "get dup", "put dup 1"], &[]),
            false,
        ),
        "SUCCESS\n\n\n\nOK\n",
    ); // r19
    let out = txn(
        txn_input(
            &[r#"value("dup") = "1""#, r#"version("dup") > "0""#],
            &["put dup 2"],
            &[],
        ),
        false,
    );
    expect_ok(&out, "SUCCESS\n\nOK\n"); // r20
                                        // A duplicate in the failure branch fails the txn even when the success branch runs.
    let out = txn(
        txn_input(&[], &["put okey 1"], &["put dup 1", "put dup 2"]),
        false,
    );
    expect_server_error(&out, "InvalidArgument", DUPLICATE_KEY);
    let out = txn(
        txn_input(
            &[r#"value("k") = "v""#],
            &["put okey 1"],
            &["put dup 1", "del dup"],
        ),
        false,
    );
    expect_server_error(&out, "InvalidArgument", DUPLICATE_KEY);
    expect_ok(&ctl.run(&["get", "okey"]), "");
    expect_ok(&ctl.run(&["get", "dup"]), "dup\n2\n");

    // Empty keys, checked before duplicates.
    let out = txn(txn_input(&[r#"version("") = "0""#], &[], &[]), false);
    expect_server_error(&out, "InvalidArgument", EMPTY_KEY);
    let out = txn(txn_input(&[], &[r#"put "" v"#], &[]), false);
    expect_server_error(&out, "InvalidArgument", EMPTY_KEY);
    let out = txn(
        txn_input(&[], &["put dupy 1", "put dupy 2", r#"put "" v"#], &[]),
        false,
    );
    expect_server_error(&out, "InvalidArgument", EMPTY_KEY);
    check_eq!(
        current_revision(&ctl),
        r(20),
        "failed txns created no revision"
    );

    // At most 128 operations per list (compares, success, failure), checked first.
    let puts = |prefix: &str, count: usize| -> Vec<String> {
        (1..=count).map(|i| format!("put {prefix}{i} v")).collect()
    };
    let as_strs = |lines: &[String]| -> String {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        txn_input(&[], &lines, &[])
    };
    let out = txn(as_strs(&puts("t/", 129)), false);
    expect_server_error(&out, "InvalidArgument", TOO_MANY_OPS);
    let mut with_dup = puts("t/", 128);
    with_dup.push("put t/1 again".into());
    let out = txn(as_strs(&with_dup), false);
    expect_server_error(&out, "InvalidArgument", TOO_MANY_OPS);
    let compares: Vec<&str> = (0..129).map(|_| r#"version("c") = "0""#).collect();
    let out = txn(txn_input(&compares, &[], &[]), false);
    expect_server_error(&out, "InvalidArgument", TOO_MANY_OPS);
    check_eq!(current_revision(&ctl), r(20));
    let out = txn(as_strs(&puts("t/", 128)), false); // r21
    expect_ok(&out, &format!("SUCCESS\n{}", "\nOK\n".repeat(128)));
    let success = puts("t/", 100);
    let failure = puts("u/", 100);
    let success: Vec<&str> = success.iter().map(String::as_str).collect();
    let failure: Vec<&str> = failure.iter().map(String::as_str).collect();
    let out = txn(txn_input(&[], &success, &failure), false); // r22
    expect_ok(&out, &format!("SUCCESS\n{}", "\nOK\n".repeat(100)));
    expect_ok(&ctl.run(&["del", "--prefix", "t/"]), "128\n"); // r23
    expect_ok(&ctl.run(&["get", "--prefix", "u/"]), "");
    check_eq!(current_revision(&ctl), r(23));

    finish_checks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_compaction_and_size_limits_against_a_follower() {
    let (_cluster, ctl, me) = setup().await;
    let base = current_revision(&ctl);
    let r = |n: i64| base + n;
    let rev = |n: i64| format!("--rev={}", r(n));

    for val in ["1", "2", "3"] {
        expect_ok(&ctl.run(&["put", "ck", val]), "OK\n"); // r1..r3
    }
    let value = json_of(&ctl.run(&["get", "ck", "-w", "json"]));
    check_eq!(
        body(&value, me, r(3)),
        json!({"kvs": [kv("ck", "3", r(1), r(3), 3)], "count": 1})
    );

    expect_ok(
        &ctl.run(&["compaction", &r(2).to_string()]),
        &format!("compacted revision {}\n", r(2)),
    );
    for target in [r(2), r(1)] {
        let out = ctl.run(&["compaction", &target.to_string()]);
        expect_server_error(&out, "OutOfRange", COMPACTED);
    }
    let out = ctl.run(&["compaction", &r(2).to_string(), "-w", "json"]);
    expect_server_error(&out, "OutOfRange", COMPACTED);
    expect_server_error(&ctl.run(&["get", "ck", &rev(1)]), "OutOfRange", COMPACTED);
    expect_server_error(
        &ctl.run(&["get", "ck", &rev(1), "-w", "json"]),
        "OutOfRange",
        COMPACTED,
    );
    let out = ctl.run(&["get", "--prefix", "", "--limit", "2", &rev(1), "-w", "json"]);
    expect_server_error(&out, "OutOfRange", COMPACTED);
    // Reading exactly at the compacted revision still works.
    expect_ok(&ctl.run(&["get", "ck", &rev(2)]), "ck\n2\n");
    expect_ok(&ctl.run(&["get", "ck", &rev(3)]), "ck\n3\n");
    expect_server_error(&ctl.run(&["get", "ck", &rev(4)]), "OutOfRange", FUTURE_REV);
    expect_server_error(
        &ctl.run(&["get", "ck", &rev(1000), "-w", "json"]),
        "OutOfRange",
        FUTURE_REV,
    );
    expect_server_error(
        &ctl.run(&["compaction", &r(1000).to_string()]),
        "OutOfRange",
        FUTURE_REV,
    );
    expect_server_error(
        &ctl.run(&["compaction", &r(4).to_string()]),
        "OutOfRange",
        FUTURE_REV,
    );

    // A get at a bad revision fails a txn only in the branch that runs.
    let out = ctl.run_with_stdin(&["txn"], format!("\nget ck {}\n\n\n", rev(1)));
    expect_server_error(&out, "OutOfRange", COMPACTED);
    let out = ctl.run_with_stdin(&["txn"], format!("\nget ck {}\n\n\n", rev(100_000)));
    expect_server_error(&out, "OutOfRange", FUTURE_REV);
    expect_ok(
        &ctl.run_with_stdin(&["txn"], format!("\n\nget ck {}\n\n", rev(1))),
        "SUCCESS\n",
    );

    // Compacting the current revision is allowed; 0 and negatives are "compacted".
    expect_ok(
        &ctl.run(&["compaction", &r(3).to_string(), "--physical"]),
        &format!("compacted revision {}\n", r(3)),
    );
    expect_server_error(&ctl.run(&["get", "ck", &rev(2)]), "OutOfRange", COMPACTED);
    expect_server_error(&ctl.run(&["compaction", "0"]), "OutOfRange", COMPACTED);
    expect_server_error(
        &ctl.run(&["compaction", "--", "-5"]),
        "OutOfRange",
        COMPACTED,
    );
    check_eq!(
        current_revision(&ctl),
        r(3),
        "compaction creates no revision"
    );
    expect_ok(&ctl.run(&["get", "ck"]), "ck\n3\n");

    // --max-request-bytes (1.5 MiB): values come from stdin, as argv cannot carry them.
    for size in [2_000_000, 1_572_864] {
        let out = ctl.run_with_stdin(&["put", "big"], vec![b'a'; size]);
        expect_server_error(&out, "InvalidArgument", TOO_LARGE);
    }
    let out = ctl.run_with_stdin(&["put", "big", "-w", "json"], vec![b'a'; 2_000_000]);
    expect_server_error(&out, "InvalidArgument", TOO_LARGE);
    let value = json_of(&ctl.run(&["get", "big", "-w", "json"]));
    check_eq!(
        body(&value, me, r(3)),
        json!({}),
        "a refused put stores nothing"
    );
    expect_ok(
        &ctl.run_with_stdin(&["put", "big"], vec![b'a'; 1_500_000]),
        "OK\n",
    ); // r4
    let value = json_of(&ctl.run(&["get", "big", "--keys-only", "-w", "json"]));
    check_eq!(
        body(&value, me, r(4)),
        json!({"kvs": [kv("big", "", r(4), r(4), 1)], "count": 1})
    );
    let out = ctl.run(&["get", "big", "--print-value-only"]);
    check!(
        out.code == 0 && out.stdout.len() == 1_500_001,
        "{}",
        describe(&out)
    );
    expect_ok(&ctl.run(&["del", "big"]), "1\n"); // r5
                                                 // Keys have no limit of their own.
    let long_key = "k".repeat(100_000);
    expect_ok(&ctl.run(&["put", &long_key, "v"]), "OK\n"); // r6
    expect_ok(&ctl.run(&["del", &long_key]), "1\n"); // r7
    let big_arg = "a".repeat(120_000);
    expect_ok(&ctl.run(&["put", "big", &big_arg]), "OK\n"); // r8
    expect_ok(&ctl.run(&["del", "big"]), "1\n"); // r9
    check_eq!(current_revision(&ctl), r(9));

    finish_checks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_cluster_and_endpoint_commands() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let mut ids = Vec::new();
    for index in 0..3 {
        let (id, leader_id, _) = cluster.status(index).await.expect("status");
        ids.push(id);
        check!(leader_id != 0, "member {index} knows no leader");
    }
    let follower_id = ids[follower];
    let leader_id = ids[leader];
    let endpoint = cluster.members[follower].endpoint();
    let ctl = Etcdctl::new(std::slice::from_ref(&endpoint));

    // member list: one line per member, sorted by id, all started.
    let mut expected: Vec<(u64, String)> = (0..3)
        .map(|index| {
            let member = &cluster.members[index];
            let line = format!(
                "{:x}, started, {}, http://127.0.0.1:{}, {}, false\n",
                ids[index],
                member.name,
                member.peer_port,
                member.url()
            );
            (ids[index], line)
        })
        .collect();
    expected.sort();
    let expected: String = expected.into_iter().map(|(_, line)| line).collect();
    let out = ctl.run(&["member", "list"]);
    expect_ok(&out, &expected);
    let mut names: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.split(", ").nth(2))
        .collect();
    names.sort_unstable();
    check_eq!(names, ["m0", "m1", "m2"], "member names");

    let value = json_of(&ctl.run(&["member", "list", "-w", "json"]));
    let header = value["header"].as_object().cloned().unwrap_or_default();
    let mut keys: Vec<&str> = header.keys().map(String::as_str).collect();
    keys.sort_unstable();
    check_eq!(
        keys,
        ["cluster_id", "member_id", "raft_term"],
        "member list: etcd's Cluster service header has no revision: {header:?}"
    );
    check_eq!(
        header.get("member_id").and_then(Value::as_u64),
        Some(follower_id),
        "member_id"
    );
    let mut by_id: Vec<(u64, usize)> = ids.iter().copied().zip(0..3).collect();
    by_id.sort_unstable();
    let wanted: Vec<Value> = by_id
        .iter()
        .map(|(id, index)| {
            let m = &cluster.members[*index];
            json!({"ID": id, "name": m.name, "peerURLs": [format!("http://127.0.0.1:{}", m.peer_port)],
                   "clientURLs": [m.url()]})
        })
        .collect();
    check_eq!(
        value["members"],
        Value::Array(wanted),
        "member list -w json, sorted by ID"
    );

    // endpoint status: the follower, not leader, knows the leader.
    let out = ctl.run(&["endpoint", "status"]);
    check!(
        out.code == 0 && out.stderr.is_empty(),
        "endpoint status: {}",
        describe(&out)
    );
    let fields: Vec<&str> = out.stdout.trim_end_matches('\n').split(", ").collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    check_eq!(
        fields.len(),
        10,
        "endpoint status fields in {:?}",
        out.stdout
    );
    check_eq!(field(0), endpoint, "endpoint");
    check_eq!(field(1), format!("{follower_id:x}"), "member id");
    check!(field(2).starts_with("3."), "version {:?}", field(2));
    check_eq!(field(4), "false", "is leader");
    check_eq!(field(5), "false", "is learner");
    check!(
        field(6).parse::<u64>().unwrap_or_default() > 0,
        "raft term {:?}",
        field(6)
    );
    check!(
        field(7).parse::<u64>().unwrap_or_default() > 0,
        "raft index {:?}",
        field(7)
    );
    check_eq!(field(9), "", "errors");
    let value = json_of(&ctl.run(&["endpoint", "status", "-w", "json"]));
    check_eq!(
        value.as_array().map(Vec::len),
        Some(1),
        "one endpoint: {value}"
    );
    check_eq!(value[0]["Endpoint"], json!(endpoint), "Endpoint");
    let status = &value[0]["Status"];
    check_eq!(
        status["header"]["member_id"].as_u64(),
        Some(follower_id),
        "member_id"
    );
    check!(
        status["header"]["cluster_id"].as_u64().unwrap_or_default() != 0,
        "cluster_id"
    );
    check_eq!(status["leader"].as_u64(), Some(leader_id), "leader id");
    check!(leader_id != follower_id, "the follower is not the leader");
    let version = status["version"].as_str().unwrap_or_default();
    check!(version.starts_with("3."), "version {version:?}");
    check!(
        status["raftTerm"].as_u64().unwrap_or_default() > 0,
        "raftTerm"
    );
    check!(
        status["raftIndex"].as_u64().unwrap_or_default() > 0,
        "raftIndex"
    );
    check!(status["dbSize"].as_i64().unwrap_or_default() > 0, "dbSize");

    // endpoint health: the simple form goes to stderr.
    let out = ctl.run(&["endpoint", "health"]);
    let prefix = format!("{endpoint} is healthy: successfully committed proposal: took = ");
    check!(
        out.code == 0
            && out.stdout.is_empty()
            && out.stderr.starts_with(&prefix)
            && out.stderr.lines().count() == 1,
        "endpoint health: {}",
        describe(&out)
    );
    let value = json_of(&ctl.run(&["endpoint", "health", "-w", "json"]));
    check_eq!(
        value.as_array().map(Vec::len),
        Some(1),
        "one endpoint: {value}"
    );
    check_eq!(value[0]["endpoint"], json!(endpoint), "endpoint");
    check_eq!(value[0]["health"], json!(true), "health");
    check!(value[0].get("error").is_none(), "no error in {value}");

    // All three endpoints at once.
    let ctl_all = Etcdctl::new(&cluster.endpoints());
    let out = ctl_all.run(&["endpoint", "health"]);
    check!(
        out.code == 0 && out.stderr.matches(" is healthy: ").count() == 3,
        "endpoint health of all members: {}",
        describe(&out)
    );
    expect_ok(&ctl_all.run(&["put", "everyone", "1"]), "OK\n");
    for member in &cluster.members {
        let ctl = Etcdctl::new(&[member.endpoint()]);
        expect_ok(&ctl.run(&["get", "everyone"]), "everyone\n1\n");
    }
    // Now that the store has a non-zero revision: still none in member list's header.
    let value = json_of(&ctl.run(&["member", "list", "-w", "json"]));
    let header = value["header"].as_object().cloned().unwrap_or_default();
    check!(
        !header.contains_key("revision"),
        "member list: etcd's Cluster service header has no revision: {header:?}"
    );

    // etcdctl 3.4 dials an endpoint given with a scheme (`--endpoints=http://...`,
    // and every `--cluster` form, which uses the published client URLs) with the
    // whole URL as the HTTP/2 :authority.
    let url = format!("http://{endpoint}");
    let out = Etcdctl::new(std::slice::from_ref(&url)).run(&["endpoint", "status"]);
    check!(
        out.code == 0 && out.stdout.starts_with(&format!("{url}, {follower_id:x}, ")),
        "endpoint status of a URL: {}",
        describe(&out)
    );
    let out = ctl.run(&["endpoint", "status", "--cluster"]);
    let mut urls: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.split(", ").next())
        .collect();
    urls.sort_unstable();
    let mut wanted: Vec<String> = cluster.members.iter().map(|m| m.url()).collect();
    wanted.sort_unstable();
    check!(
        out.code == 0 && out.stderr.is_empty() && urls == wanted,
        "endpoint status --cluster: {}",
        describe(&out)
    );
    let out = ctl.run(&["endpoint", "hashkv", "--cluster"]);
    let hashes: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.split(", ").nth(1))
        .collect();
    check!(
        out.code == 0 && hashes.len() == 3 && hashes.windows(2).all(|pair| pair[0] == pair[1]),
        "endpoint hashkv --cluster: {}",
        describe(&out)
    );

    finish_checks();
}
