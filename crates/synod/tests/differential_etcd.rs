#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// Differential test: the same scripted requests go to a real single-node etcd 3.4
// (Debian's /usr/bin/etcd, on free loopback ports, data in a temp dir) and to a FOLLOWER
// of a 3-node synod cluster, both through the `etcd-client` crate. Results are
// normalized (header cluster_id, member_id and raft_term ignored; revisions taken
// relative to each store's revision at the start) and must be equal: revisions, kvs,
// count, more, succeeded, deleted, prev kvs, and for errors the gRPC code and message.
// Every difference is collected and the test fails at the end listing all of them.

use std::fmt::Debug;

use common::{finish_checks, soft_fail, Cluster, EtcdServer};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, Error, GetOptions, KeyValue,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tonic::Code;

/// One request of the script.
enum Op {
    Get(Vec<u8>, GetOptions),
    Put(Vec<u8>, Vec<u8>, PutOptions),
    Delete(Vec<u8>, DeleteOptions),
    Txn(Txn),
    Compact(i64, bool),
}

struct Step {
    label: String,
    op: Op,
    /// Compare only the gRPC code of an error (its text comes from the gRPC library).
    code_only: bool,
}

/// A key-value with revisions relative to the store's starting revision.
#[derive(Debug, PartialEq)]
struct NormalKv {
    key: String,
    value: String,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

/// A response with everything compared, revisions relative to the starting revision.
#[derive(Debug, PartialEq)]
enum Outcome {
    Get {
        revision: Option<i64>,
        kvs: Vec<NormalKv>,
        count: i64,
        more: bool,
    },
    Put {
        revision: Option<i64>,
        prev_kv: Option<NormalKv>,
    },
    Delete {
        revision: Option<i64>,
        deleted: i64,
        prev_kvs: Vec<NormalKv>,
    },
    Txn {
        revision: Option<i64>,
        succeeded: bool,
        responses: Vec<Outcome>,
    },
    Compact {
        revision: Option<i64>,
    },
    Error {
        code: Code,
        message: String,
    },
    Other(String),
}

struct Target {
    client: Client,
    /// The store's revision before the script.
    base: i64,
}

impl Target {
    fn relative(&self, revision: i64) -> i64 {
        if revision == 0 {
            0
        } else {
            revision - self.base
        }
    }

    fn kv(&self, kv: &KeyValue) -> NormalKv {
        NormalKv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: if kv.value().len() > 64 {
                format!("<{} bytes>", kv.value().len())
            } else {
                String::from_utf8_lossy(kv.value()).into_owned()
            },
            create_revision: self.relative(kv.create_revision()),
            mod_revision: self.relative(kv.mod_revision()),
            version: kv.version(),
            lease: kv.lease(),
        }
    }

    fn header(&self, header: Option<&etcd_client::ResponseHeader>) -> Option<i64> {
        header.map(|header| self.relative(header.revision()))
    }

    fn txn(&self, response: &TxnResponse) -> Outcome {
        Outcome::Txn {
            revision: self.header(response.header()),
            succeeded: response.succeeded(),
            responses: response
                .op_responses()
                .iter()
                .map(|op| match op {
                    TxnOpResponse::Put(r) => Outcome::Put {
                        revision: self.header(r.header()),
                        prev_kv: r.prev_key().map(|kv| self.kv(kv)),
                    },
                    TxnOpResponse::Get(r) => Outcome::Get {
                        revision: self.header(r.header()),
                        kvs: r.kvs().iter().map(|kv| self.kv(kv)).collect(),
                        count: r.count(),
                        more: r.more(),
                    },
                    TxnOpResponse::Delete(r) => Outcome::Delete {
                        revision: self.header(r.header()),
                        deleted: r.deleted(),
                        prev_kvs: r.prev_kvs().iter().map(|kv| self.kv(kv)).collect(),
                    },
                    TxnOpResponse::Txn(r) => self.txn(r),
                })
                .collect(),
        }
    }

    fn error<T: Debug>(&self, result: Result<T, Error>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
        match result {
            Ok(response) => ok(response),
            Err(Error::GRpcStatus(status)) => Outcome::Error {
                code: status.code(),
                message: status.message().to_string(),
            },
            Err(other) => Outcome::Other(other.to_string()),
        }
    }

    async fn run(&mut self, op: Op) -> Outcome {
        let mut client = self.client.clone();
        match op {
            Op::Get(key, options) => {
                let result = client.get(key, Some(options)).await;
                self.error(result, |r| Outcome::Get {
                    revision: self.header(r.header()),
                    kvs: r.kvs().iter().map(|kv| self.kv(kv)).collect(),
                    count: r.count(),
                    more: r.more(),
                })
            }
            Op::Put(key, value, options) => {
                let result = client.put(key, value, Some(options)).await;
                self.error(result, |r| Outcome::Put {
                    revision: self.header(r.header()),
                    prev_kv: r.prev_key().map(|kv| self.kv(kv)),
                })
            }
            Op::Delete(key, options) => {
                let result = client.delete(key, Some(options)).await;
                self.error(result, |r| Outcome::Delete {
                    revision: self.header(r.header()),
                    deleted: r.deleted(),
                    prev_kvs: r.prev_kvs().iter().map(|kv| self.kv(kv)).collect(),
                })
            }
            Op::Txn(txn) => {
                let result = client.txn(txn).await;
                self.error(result, |r| self.txn(&r))
            }
            Op::Compact(revision, physical) => {
                let options = if physical {
                    CompactionOptions::new().with_physical()
                } else {
                    CompactionOptions::new()
                };
                let result = client.compact(revision, Some(options)).await;
                self.error(result, |r| Outcome::Compact {
                    revision: self.header(r.header()),
                })
            }
        }
    }
}

fn get(label: impl Into<String>, key: &str, options: GetOptions) -> Step {
    Step {
        label: label.into(),
        op: Op::Get(key.into(), options),
        code_only: false,
    }
}

fn put(key: &str, value: &str) -> Step {
    put_with(
        format!("put {key}={value}"),
        key,
        value.as_bytes(),
        PutOptions::new(),
    )
}

fn put_with(label: impl Into<String>, key: &str, value: &[u8], options: PutOptions) -> Step {
    Step {
        label: label.into(),
        op: Op::Put(key.into(), value.to_vec(), options),
        code_only: false,
    }
}

fn delete(label: impl Into<String>, key: &str, options: DeleteOptions) -> Step {
    Step {
        label: label.into(),
        op: Op::Delete(key.into(), options),
        code_only: false,
    }
}

fn txn(label: impl Into<String>, txn: Txn) -> Step {
    Step {
        label: label.into(),
        op: Op::Txn(txn),
        code_only: false,
    }
}

fn compact(label: impl Into<String>, revision: i64, physical: bool) -> Step {
    Step {
        label: label.into(),
        op: Op::Compact(revision, physical),
        code_only: false,
    }
}

fn put_op(key: &str, value: &str) -> TxnOp {
    TxnOp::put(key, value, None)
}

fn puts(prefix: &str, count: usize) -> Vec<TxnOp> {
    (0..count)
        .map(|i| put_op(&format!("{prefix}{i}"), "v"))
        .collect()
}

/// The script, for a store whose starting revision maps through `r` (r(n) is the
/// revision of the n-th write of the script).
fn script(r: &dyn Fn(i64) -> i64) -> Vec<Step> {
    let mut steps = Vec::new();
    steps.push(get("empty store", "a", GetOptions::new()));
    steps.push(get(
        "empty store, all keys",
        "\0",
        GetOptions::new().with_all_keys(),
    ));

    // Five keys whose versions, values, create and mod revisions are all distinct, so
    // that every sort order is fully determined.
    for (key, value) in [
        ("a", "v1"), // r1
        ("b", "z"),  // r2
        ("c", "m"),  // r3
        ("a", "v2"), // r4
        ("d", "b"),  // r5
        ("b", "y"),  // r6
        ("a", "v3"), // r7
        ("e", "q1"), // r8
        ("d", "c"),  // r9
        ("e", "q2"), // r10
        ("b", "x"),  // r11
        ("e", "q3"), // r12
        ("b", "w"),  // r13
        ("e", "q4"), // r14
        ("e", "q5"), // r15
    ] {
        steps.push(put(key, value));
    }

    let ranges: Vec<(&str, &str, GetOptions)> = vec![
        ("key a", "a", GetOptions::new()),
        ("key missing", "zz", GetOptions::new()),
        ("prefix ''", "\0", GetOptions::new().with_all_keys()),
        ("from_key b", "b", GetOptions::new().with_from_key()),
        ("range [b, d)", "b", GetOptions::new().with_range("d")),
        ("range [d, b)", "d", GetOptions::new().with_range("b")),
        ("range [b, b)", "b", GetOptions::new().with_range("b")),
        ("prefix a", "a", GetOptions::new().with_prefix()),
    ];
    let targets = [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ];
    let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
    for (name, key, range) in &ranges {
        let mut variants: Vec<(String, GetOptions)> = vec![
            ("".into(), range.clone()),
            (" limit 1".into(), range.clone().with_limit(1)),
            (" limit 2".into(), range.clone().with_limit(2)),
            (" limit 5".into(), range.clone().with_limit(5)),
            (" limit -1".into(), range.clone().with_limit(-1)),
            (" keys_only".into(), range.clone().with_keys_only()),
            (
                " keys_only limit 2".into(),
                range.clone().with_keys_only().with_limit(2),
            ),
            (" count_only".into(), range.clone().with_count_only()),
            (
                " count_only limit 1".into(),
                range.clone().with_count_only().with_limit(1),
            ),
            (" serializable".into(), range.clone().with_serializable()),
            (" rev r5".into(), range.clone().with_revision(r(5))),
            (
                " rev r5 limit 1".into(),
                range.clone().with_revision(r(5)).with_limit(1),
            ),
            (" rev r1".into(), range.clone().with_revision(r(1))),
            (" rev -1".into(), range.clone().with_revision(-1)),
            (
                " min_mod r7".into(),
                range.clone().with_min_mod_revision(r(7)),
            ),
            (
                " max_mod r9".into(),
                range.clone().with_max_mod_revision(r(9)),
            ),
            (
                " min_create r3".into(),
                range.clone().with_min_create_revision(r(3)),
            ),
            (
                " max_create r3".into(),
                range.clone().with_max_create_revision(r(3)),
            ),
            (
                " mod in [r4, r13] limit 1".into(),
                range
                    .clone()
                    .with_min_mod_revision(r(4))
                    .with_max_mod_revision(r(13))
                    .with_limit(1),
            ),
            (
                " min_mod r7 count_only".into(),
                range.clone().with_min_mod_revision(r(7)).with_count_only(),
            ),
            (
                " min_create r2 keys_only sort value desc limit 2".into(),
                range
                    .clone()
                    .with_min_create_revision(r(2))
                    .with_keys_only()
                    .with_sort(SortTarget::Value, SortOrder::Descend)
                    .with_limit(2),
            ),
        ];
        for target in targets {
            for order in orders {
                variants.push((
                    format!(" sort {target:?} {order:?}"),
                    range.clone().with_sort(target, order),
                ));
                variants.push((
                    format!(" sort {target:?} {order:?} limit 2"),
                    range.clone().with_sort(target, order).with_limit(2),
                ));
            }
        }
        for (variant, options) in variants {
            steps.push(get(format!("get {name}{variant}"), key, options));
        }
    }

    // Puts with options, and refused puts.
    steps.push(put_with(
        "put prev_kv (existing)",
        "c",
        b"m2",
        PutOptions::new().with_prev_key(),
    )); // r16
    steps.push(put_with(
        "put prev_kv (new)",
        "f",
        b"1",
        PutOptions::new().with_prev_key(),
    )); // r17
    steps.push(put_with(
        "put ignore_value",
        "c",
        b"",
        PutOptions::new().with_ignore_value().with_prev_key(),
    )); // r18
    steps.push(put_with(
        "put ignore_lease",
        "c",
        b"m3",
        PutOptions::new().with_ignore_lease(),
    )); // r19
    steps.push(put_with("put empty value", "g", b"", PutOptions::new())); // r20
    steps.push(get("get c", "c", GetOptions::new()));
    steps.push(get("get g (empty value)", "g", GetOptions::new()));
    steps.push(put_with(
        "ignore_value, missing key",
        "zz",
        b"",
        PutOptions::new().with_ignore_value(),
    ));
    steps.push(put_with(
        "ignore_lease, missing key",
        "zz",
        b"v",
        PutOptions::new().with_ignore_lease(),
    ));
    steps.push(put_with(
        "ignore_value with a value",
        "c",
        b"v",
        PutOptions::new().with_ignore_value(),
    ));
    steps.push(put_with(
        "ignore_lease with a lease",
        "c",
        b"v",
        PutOptions::new().with_ignore_lease().with_lease(7),
    ));
    steps.push(put_with(
        "unknown lease",
        "l",
        b"v",
        PutOptions::new().with_lease(12345),
    ));
    steps.push(put_with("empty key", "", b"v", PutOptions::new()));
    steps.push(get("get empty key", "", GetOptions::new()));
    steps.push(delete("delete empty key", "", DeleteOptions::new()));
    steps.push(get(
        "after refusals",
        "\0",
        GetOptions::new().with_all_keys(),
    ));

    // Deletes.
    steps.push(delete("delete missing", "zz", DeleteOptions::new()));
    steps.push(delete(
        "delete [d, b)",
        "d",
        DeleteOptions::new().with_range("b"),
    ));
    steps.push(delete(
        "delete missing prefix",
        "zz",
        DeleteOptions::new().with_prefix().with_prev_key(),
    ));
    for (key, value) in [("p/1", "1"), ("p/2", "2"), ("p/3", "3"), ("q", "q")] {
        steps.push(put(key, value)); // r21..r24
    }
    steps.push(delete(
        "delete range prev_kv",
        "p/1",
        DeleteOptions::new().with_range("p/3").with_prev_key(),
    )); // r25
    steps.push(delete(
        "delete prefix",
        "p/",
        DeleteOptions::new().with_prefix(),
    )); // r26
    steps.push(delete(
        "delete from_key prev_kv",
        "q",
        DeleteOptions::new().with_from_key().with_prev_key(),
    )); // r27
    steps.push(delete(
        "delete again",
        "q",
        DeleteOptions::new().with_from_key(),
    ));
    steps.push(get(
        "after deletes",
        "\0",
        GetOptions::new().with_all_keys(),
    ));

    // Compares, one per txn. Current: a v3 (c1 m7 v3), b w (c2 m13 v4), c m3 (c3 m19
    // v4), d c (c5 m9 v2), e q5 (c8 m15 v5), f 1 (c17), g "" (c20).
    let compares: Vec<(&str, Compare)> = vec![
        ("value a = v3", Compare::value("a", CompareOp::Equal, "v3")),
        (
            "value a != v3",
            Compare::value("a", CompareOp::NotEqual, "v3"),
        ),
        ("value a > v", Compare::value("a", CompareOp::Greater, "v")),
        ("value a < v3", Compare::value("a", CompareOp::Less, "v3")),
        ("value g = ''", Compare::value("g", CompareOp::Equal, "")),
        ("version b = 4", Compare::version("b", CompareOp::Equal, 4)),
        (
            "version b > 4",
            Compare::version("b", CompareOp::Greater, 4),
        ),
        ("version b < 5", Compare::version("b", CompareOp::Less, 5)),
        (
            "create c = r3",
            Compare::create_revision("c", CompareOp::Equal, r(3)),
        ),
        (
            "create c != r3",
            Compare::create_revision("c", CompareOp::NotEqual, r(3)),
        ),
        (
            "mod d = r9",
            Compare::mod_revision("d", CompareOp::Equal, r(9)),
        ),
        (
            "mod d > r9",
            Compare::mod_revision("d", CompareOp::Greater, r(9)),
        ),
        (
            "mod d < r10",
            Compare::mod_revision("d", CompareOp::Less, r(10)),
        ),
        ("lease a = 0", Compare::lease("a", CompareOp::Equal, 0)),
        ("lease a > 0", Compare::lease("a", CompareOp::Greater, 0)),
        (
            "missing version = 0",
            Compare::version("zz", CompareOp::Equal, 0),
        ),
        (
            "missing version != 0",
            Compare::version("zz", CompareOp::NotEqual, 0),
        ),
        (
            "missing create = 0",
            Compare::create_revision("zz", CompareOp::Equal, 0),
        ),
        (
            "missing mod < 1",
            Compare::mod_revision("zz", CompareOp::Less, 1),
        ),
        (
            "missing mod > 0",
            Compare::mod_revision("zz", CompareOp::Greater, 0),
        ),
        (
            "missing lease = 0",
            Compare::lease("zz", CompareOp::Equal, 0),
        ),
        (
            "missing value = ''",
            Compare::value("zz", CompareOp::Equal, ""),
        ),
        (
            "missing value != x",
            Compare::value("zz", CompareOp::NotEqual, "x"),
        ),
        (
            "missing value < x",
            Compare::value("zz", CompareOp::Less, "x"),
        ),
        (
            "missing value > ''",
            Compare::value("zz", CompareOp::Greater, ""),
        ),
        (
            "range [a, e) value > a",
            Compare::value("a", CompareOp::Greater, "a").with_range("e"),
        ),
        (
            "range [a, e) value > d",
            Compare::value("a", CompareOp::Greater, "d").with_range("e"),
        ),
        (
            "range [a, e) version > 1",
            Compare::version("a", CompareOp::Greater, 1).with_range("e"),
        ),
        (
            "range [a, c) version > 2",
            Compare::version("a", CompareOp::Greater, 2).with_range("c"),
        ),
        (
            "range [a, e) mod < r20",
            Compare::mod_revision("a", CompareOp::Less, r(20)).with_range("e"),
        ),
        (
            "range [a, e) create < r5",
            Compare::create_revision("a", CompareOp::Less, r(5)).with_range("e"),
        ),
        (
            "prefix p/ version = 0 (empty)",
            Compare::version("p/", CompareOp::Equal, 0).with_prefix(),
        ),
        (
            "prefix p/ value = '' (empty)",
            Compare::value("p/", CompareOp::Equal, "").with_prefix(),
        ),
        (
            "range [e, a) version = 0",
            Compare::version("e", CompareOp::Equal, 0).with_range("a"),
        ),
        (
            "all keys version > 0",
            Compare::version("\0", CompareOp::Greater, 0).with_range("\0"),
        ),
        ("empty key", Compare::version("", CompareOp::Equal, 0)),
    ];
    for (name, compare) in compares {
        steps.push(txn(
            format!("compare {name}"),
            Txn::new()
                .when([compare])
                .and_then([TxnOp::get("a", None)])
                .or_else([TxnOp::get("b", None)]),
        ));
    }
    steps.push(txn(
        "two compares (AND)",
        Txn::new().when([
            Compare::value("a", CompareOp::Equal, "v3"),
            Compare::version("b", CompareOp::Equal, 1),
        ]),
    ));
    steps.push(txn("empty txn", Txn::new()));

    // Txns with ops: revisions inside, prev kvs, reads of the txn's own writes.
    steps.push(txn(
        "success branch with every op",
        Txn::new()
            .when([Compare::value("a", CompareOp::Equal, "v3")])
            .and_then([
                TxnOp::get("f", None),
                put_op("h", "1"),
                TxnOp::get("a", None),
                TxnOp::delete("f", Some(DeleteOptions::new().with_prev_key())),
                TxnOp::put("b", "w2", Some(PutOptions::new().with_prev_key())),
                TxnOp::get("h", None),
                TxnOp::delete("nothing", None),
                TxnOp::get(
                    "\0",
                    Some(GetOptions::new().with_all_keys().with_count_only()),
                ),
                TxnOp::get(
                    "\0",
                    Some(
                        GetOptions::new()
                            .with_all_keys()
                            .with_limit(2)
                            .with_keys_only(),
                    ),
                ),
            ])
            .or_else([put_op("never", "1")]),
    )); // r28
    steps.push(txn(
        "failure branch, read first",
        Txn::new()
            .when([Compare::value("a", CompareOp::Equal, "nope")])
            .and_then([put_op("never", "1")])
            .or_else([
                TxnOp::get("h", None),
                put_op("i", "1"),
                put_op("j", "1"),
                TxnOp::get("i", None),
            ]),
    )); // r29
    steps.push(txn(
        "read-only txn",
        Txn::new().and_then([
            TxnOp::get("a", None),
            TxnOp::get("\0", Some(GetOptions::new().with_all_keys())),
        ]),
    ));
    steps.push(txn(
        "txn deleting nothing",
        Txn::new().and_then([TxnOp::delete("nothing", None)]),
    ));
    steps.push(txn(
        "txn deleting nothing in a range",
        Txn::new().and_then([TxnOp::delete(
            "x/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )]),
    ));
    steps.push(txn(
        "same key in both branches",
        Txn::new()
            .and_then([put_op("k", "then")])
            .or_else([put_op("k", "else")]),
    )); // r30
    steps.push(txn(
        "overlapping deletes, get + put of one key",
        Txn::new().and_then([
            TxnOp::get("k", None),
            put_op("k", "2"),
            TxnOp::delete("i", Some(DeleteOptions::new().with_range("k"))),
            TxnOp::delete("j", None),
        ]),
    )); // r31
    let inner = |value: &str| {
        Txn::new()
            .when([Compare::value("a", CompareOp::Equal, value)])
            .and_then([
                put_op("n/then", "1"),
                TxnOp::get("n/", Some(GetOptions::new().with_prefix())),
            ])
            .or_else([put_op("n/else", "1")])
    };
    steps.push(txn(
        "nested then",
        Txn::new().and_then([TxnOp::txn(inner("v3")), put_op("n/outer", "1")]),
    )); // r32
    steps.push(txn(
        "nested else",
        Txn::new().and_then([TxnOp::get("a", None), TxnOp::txn(inner("nope"))]),
    )); // r33
    steps.push(txn(
        "nested read-only",
        Txn::new().or_else([TxnOp::txn(Txn::new().and_then([TxnOp::get("a", None)]))]),
    ));
    steps.push(txn(
        "nested same key in both inner branches",
        Txn::new().and_then([TxnOp::txn(
            Txn::new()
                .when([Compare::version("a", CompareOp::Greater, 0)])
                .and_then([put_op("n/same", "then")])
                .or_else([put_op("n/same", "else")]),
        )]),
    )); // r34
    steps.push(get("after txns", "\0", GetOptions::new().with_all_keys()));

    // Refused txns.
    steps.push(txn(
        "129 ops in success",
        Txn::new().and_then(puts("t/", 129)),
    ));
    steps.push(txn(
        "129 ops in failure",
        Txn::new().or_else(puts("t/", 129)),
    ));
    steps.push(txn(
        "129 compares",
        Txn::new().when(
            (0..129)
                .map(|_| Compare::version("a", CompareOp::Greater, 0))
                .collect::<Vec<_>>(),
        ),
    ));
    let mut with_dup = puts("t/", 128);
    with_dup.push(put_op("t/0", "again"));
    steps.push(txn(
        "129 ops with a duplicate",
        Txn::new().and_then(with_dup),
    ));
    let mut outer = puts("o/", 99);
    outer.push(TxnOp::txn(Txn::new().and_then(puts("i/", 29))));
    steps.push(txn(
        "nested ops over the parent's remainder",
        Txn::new().and_then(outer),
    ));
    let mut outer = puts("o/", 99);
    outer.push(TxnOp::txn(Txn::new().or_else(puts("i/", 28))));
    steps.push(txn(
        "nested ops within the parent's remainder",
        Txn::new().and_then(outer),
    )); // r35
    steps.push(txn("128 ops", Txn::new().and_then(puts("t/", 128)))); // r36
    steps.push(txn(
        "100 + 100 ops",
        Txn::new()
            .and_then(puts("t/", 100))
            .or_else(puts("u/", 100)),
    )); // r37
    steps.push(delete(
        "delete t/",
        "t/",
        DeleteOptions::new().with_prefix(),
    )); // r38
    steps.push(delete(
        "delete o/ and i/",
        "i/",
        DeleteOptions::new().with_range("p"),
    )); // r39
    steps.push(txn(
        "duplicate put",
        Txn::new().and_then([put_op("dup", "1"), put_op("dup", "2")]),
    ));
    steps.push(txn(
        "duplicate put in the failure branch",
        Txn::new()
            .and_then([put_op("ok", "1")])
            .or_else([put_op("dup", "1"), put_op("dup", "2")]),
    ));
    steps.push(txn(
        "put inside a deleted range",
        Txn::new().and_then([
            put_op("dup/a", "1"),
            TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
        ]),
    ));
    steps.push(txn(
        "deleted range, then a put inside it",
        Txn::new().or_else([
            TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
            put_op("dup/a", "1"),
        ]),
    ));
    steps.push(txn(
        "put and from-key delete",
        Txn::new().and_then([
            put_op("zzz", "1"),
            TxnOp::delete("z", Some(DeleteOptions::new().with_from_key())),
        ]),
    ));
    steps.push(txn(
        "outer put, nested put",
        Txn::new().and_then([
            put_op("dup", "1"),
            TxnOp::txn(Txn::new().and_then([put_op("dup", "2")])),
        ]),
    ));
    steps.push(txn(
        "outer delete, nested put",
        Txn::new().and_then([
            TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
            TxnOp::txn(Txn::new().or_else([put_op("dup/x", "2")])),
        ]),
    ));
    steps.push(txn(
        "nested put, outer put after it",
        Txn::new().and_then([
            TxnOp::txn(Txn::new().and_then([put_op("dup", "2")])),
            put_op("dup", "1"),
        ]),
    ));
    steps.push(txn(
        "two nested txns putting one key",
        Txn::new().and_then([
            TxnOp::txn(Txn::new().and_then([put_op("dup", "1")])),
            TxnOp::txn(Txn::new().or_else([put_op("dup", "2")])),
        ]),
    ));
    steps.push(txn(
        "nested delete, outer put",
        Txn::new().and_then([
            TxnOp::txn(Txn::new().and_then([TxnOp::delete("dup", None)])),
            put_op("dup", "1"),
        ]),
    ));
    steps.push(txn(
        "empty key in a put",
        Txn::new().and_then([put_op("", "v")]),
    ));
    steps.push(txn(
        "empty key in an untaken get",
        Txn::new().or_else([TxnOp::get("", None)]),
    ));
    steps.push(txn(
        "empty key in a nested delete",
        Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::delete("", None)]))]),
    ));
    steps.push(txn(
        "empty key and a duplicate",
        Txn::new().and_then([put_op("dup", "1"), put_op("dup", "2"), put_op("", "v")]),
    ));
    steps.push(txn(
        "unknown lease, branch taken",
        Txn::new().and_then([TxnOp::put(
            "l",
            "v",
            Some(PutOptions::new().with_lease(12345)),
        )]),
    ));
    steps.push(txn(
        "unknown lease, branch not taken",
        Txn::new().or_else([TxnOp::put(
            "l",
            "v",
            Some(PutOptions::new().with_lease(12345)),
        )]),
    ));
    steps.push(txn(
        "ignore_value on a missing key, branch taken",
        Txn::new().and_then([
            put_op("ok", "1"),
            TxnOp::put("zz", "", Some(PutOptions::new().with_ignore_value())),
        ]),
    ));
    steps.push(txn(
        "ignore_value with a value in a txn",
        Txn::new().or_else([TxnOp::put(
            "a",
            "v",
            Some(PutOptions::new().with_ignore_value()),
        )]),
    ));
    steps.push(txn(
        "a 2,000,000-byte put in a txn",
        Txn::new().and_then([TxnOp::put("big", vec![b'a'; 2_000_000], None)]),
    ));
    steps.push(get(
        "after refused txns",
        "\0",
        GetOptions::new().with_all_keys(),
    ));

    // Compaction and revisions.
    steps.push(get(
        "future revision",
        "a",
        GetOptions::new().with_revision(r(1000)),
    ));
    steps.push(compact("compact r12", r(12), false));
    steps.push(get(
        "get below the compacted revision",
        "a",
        GetOptions::new().with_revision(r(11)),
    ));
    steps.push(get(
        "get at the compacted revision",
        "\0",
        GetOptions::new().with_all_keys().with_revision(r(12)),
    ));
    steps.push(get(
        "get after the compacted revision",
        "b",
        GetOptions::new().with_revision(r(13)),
    ));
    steps.push(compact("compact r12 again", r(12), false));
    steps.push(compact("compact lower", r(3), false));
    steps.push(compact("compact 0", 0, false));
    steps.push(compact("compact -5", -5, false));
    steps.push(compact("compact the future", r(1000), false));
    steps.push(txn(
        "txn get below the compacted revision",
        Txn::new().and_then([TxnOp::get(
            "a",
            Some(GetOptions::new().with_revision(r(11))),
        )]),
    ));
    steps.push(txn(
        "txn get at a future revision",
        Txn::new().and_then([TxnOp::get(
            "a",
            Some(GetOptions::new().with_revision(r(1000))),
        )]),
    ));
    steps.push(txn(
        "txn write with a bad read",
        Txn::new().and_then([
            put_op("ok", "1"),
            TxnOp::get("a", Some(GetOptions::new().with_revision(r(11)))),
        ]),
    ));
    steps.push(txn(
        "txn bad read, branch not taken",
        Txn::new().or_else([TxnOp::get(
            "a",
            Some(GetOptions::new().with_revision(r(11))),
        )]),
    ));
    steps.push(compact("compact r20 physically", r(20), true));
    steps.push(get(
        "history after compaction",
        "c",
        GetOptions::new().with_revision(r(20)),
    ));
    steps.push(compact("compact the current revision", r(39), false));
    steps.push(get(
        "after compactions",
        "\0",
        GetOptions::new().with_all_keys(),
    ));

    // Request size limit (--max-request-bytes 1.5 MiB; gRPC itself refuses 2 MiB + 512 KiB).
    steps.push(put_with(
        "put a 1,572,800-byte value",
        "big",
        &vec![b'a'; 1_572_800],
        PutOptions::new(),
    )); // r40
    steps.push(get(
        "get the big key",
        "big",
        GetOptions::new().with_keys_only(),
    ));
    steps.push(delete("delete the big key", "big", DeleteOptions::new())); // r41
    steps.push(put_with(
        "put a 1,572,850-byte value",
        "big",
        &vec![b'a'; 1_572_850],
        PutOptions::new(),
    ));
    steps.push(put_with(
        "put a 2,000,000-byte value",
        "big",
        &vec![b'a'; 2_000_000],
        PutOptions::new(),
    ));
    steps.push(txn(
        "two 900,000-byte puts in a txn",
        Txn::new().and_then([
            TxnOp::put("big1", vec![b'a'; 900_000], None),
            TxnOp::put("big2", vec![b'a'; 900_000], None),
        ]),
    ));
    let mut oversized = put_with(
        "put a 2,200,000-byte value",
        "big",
        &vec![b'a'; 2_200_000],
        PutOptions::new(),
    );
    oversized.code_only = true;
    steps.push(oversized);
    steps.push(get(
        "after the size limits",
        "\0",
        GetOptions::new().with_all_keys(),
    ));

    // Nested compares and the txn's own earlier writes.
    steps.push(txn(
        "nested compare on a key the txn just wrote",
        Txn::new().and_then([
            put_op("nc", "new"),
            TxnOp::txn(
                Txn::new()
                    .when([Compare::value("nc", CompareOp::Equal, "new")])
                    .and_then([put_op("nc/then", "1")])
                    .or_else([put_op("nc/else", "1")]),
            ),
        ]),
    ));
    steps.push(txn(
        "nested compare on a key the txn just deleted",
        Txn::new().and_then([
            TxnOp::delete("nc", None),
            TxnOp::txn(
                Txn::new()
                    .when([Compare::version("nc", CompareOp::Greater, 0)])
                    .and_then([TxnOp::get("nc", None)])
                    .or_else([TxnOp::get("nc/", Some(GetOptions::new().with_prefix()))]),
            ),
        ]),
    ));
    steps.push(get(
        "after nested compares",
        "nc",
        GetOptions::new().with_prefix(),
    ));
    steps
}

fn same(etcd: &Outcome, synod: &Outcome, code_only: bool) -> bool {
    match (etcd, synod) {
        (Outcome::Error { code: a, .. }, Outcome::Error { code: b, .. }) if code_only => a == b,
        _ => etcd == synod,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synod_answers_like_etcd() {
    let etcd_server = EtcdServer::start().await;
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;

    let mut etcd = Target {
        client: etcd_server.client().await,
        base: 0,
    };
    let mut synod = Target {
        client: cluster.client(follower).await,
        base: 0,
    };
    for target in [&mut etcd, &mut synod] {
        let response = target
            .client
            .get("differential-probe", None)
            .await
            .expect("get");
        target.base = response.header().map_or(0, |header| header.revision());
    }
    if etcd.base != synod.base {
        soft_fail(format!(
            "revision of a fresh store: etcd {}, synod {} (the script compares revisions \
             relative to these)",
            etcd.base, synod.base
        ));
    }

    let etcd_base = etcd.base;
    let synod_base = synod.base;
    let etcd_steps = script(&|n| etcd_base + n);
    let synod_steps = script(&|n| synod_base + n);
    assert_eq!(etcd_steps.len(), synod_steps.len());
    let total = etcd_steps.len();
    let mut differences = 0;
    for (etcd_step, synod_step) in etcd_steps.into_iter().zip(synod_steps) {
        let label = etcd_step.label.clone();
        let code_only = etcd_step.code_only;
        let expected = etcd.run(etcd_step.op).await;
        let actual = synod.run(synod_step.op).await;
        if !same(&expected, &actual, code_only) {
            differences += 1;
            soft_fail(format!(
                "{label}:\n  etcd:  {expected:?}\n  synod: {actual:?}"
            ));
        }
    }
    eprintln!("differential: {total} requests, {differences} differences");

    drop(cluster);
    drop(etcd_server);
    finish_checks();
}
