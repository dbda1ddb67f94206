#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// Black-box compatibility: the `etcd-client` crate against a FOLLOWER of a 3-node synod
// cluster. Expected results are etcd 3.4's (`differential_etcd.rs` asks a real etcd):
// option semantics, compare semantics, error codes and messages, revisions. Mismatches
// are collected (soft checks) and reported together at the end of each test.

use common::{expect_error, finish_checks, mismatch, must, Cluster};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, KeyValue, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use tonic::Code;

const EMPTY_KEY: &str = "etcdserver: key is not provided";
const TOO_LARGE: &str = "etcdserver: request is too large";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
const VALUE_PROVIDED: &str = "etcdserver: value is provided";
const LEASE_PROVIDED: &str = "etcdserver: lease is provided";

/// (key, value, create_revision, mod_revision, version, lease)
type Kv = (String, String, i64, i64, i64, i64);

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Kv {
    (
        key.to_string(),
        value.to_string(),
        create,
        modified,
        version,
        0,
    )
}

fn tuple(kv: &KeyValue) -> Kv {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    )
}

fn kvs(response: &GetResponse) -> Vec<Kv> {
    response.kvs().iter().map(tuple).collect()
}

fn keys(response: &GetResponse) -> Vec<String> {
    response
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// The store as the follower sees it: its revision and every key-value.
async fn snapshot(client: &mut Client) -> (i64, Vec<Kv>) {
    let response = must(
        "read everything",
        client
            .get("\0", Some(GetOptions::new().with_all_keys()))
            .await,
    );
    let revision = response.header().map_or(0, |header| header.revision());
    (revision, kvs(&response))
}

/// The current revision.
async fn revision(client: &mut Client) -> i64 {
    let response = must("get", client.get("synod-compat-probe", None).await);
    response.header().map_or(0, |header| header.revision())
}

/// Runs a request that must fail, then checks that it changed nothing at all.
macro_rules! refused {
    ($client:expr, $what:expr, $request:expr, $code:expr, $message:expr) => {{
        let before = snapshot($client).await;
        let result = $request.await;
        expect_error($what, result, $code, $message);
        let after = snapshot($client).await;
        if before != after {
            mismatch(format!(
                "{}: a refused request changed the store\n  before: {:?}\n  after:  {:?}",
                $what, before, after
            ));
        }
    }};
}

/// A 3-node cluster, a client of one follower, the follower's and the leader's ids.
async fn setup() -> (Cluster, Client, u64, u64) {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let leader = cluster.leader().await;
    let (follower_id, leader_id, _) = cluster.status(follower).await.expect("status");
    let (leader_own_id, _, _) = cluster.status(leader).await.expect("status");
    check_eq!(leader_id, leader_own_id, "the follower knows the leader");
    let client = cluster.client(follower).await;
    (cluster, client, follower_id, leader_id)
}

fn put_op(key: &str, value: &str) -> TxnOp {
    TxnOp::put(key, value, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_kv_options_against_a_follower() {
    let (cluster, mut client, follower_id, leader_id) = setup().await;
    let base = revision(&mut client).await;
    let r = |n: i64| base + n;

    // Headers: cluster id (the same from every member), the answering member, the
    // revision, the Raft term.
    let response = must("get", client.get("nothing", None).await);
    let header = response.header().expect("a header");
    let mut leader_client = cluster.client(cluster.leader().await).await;
    let leader_response = must("get", leader_client.get("nothing", None).await);
    let leader_header = leader_response.header().expect("a header");
    check!(header.cluster_id() != 0, "cluster_id is 0");
    check_eq!(
        header.cluster_id(),
        leader_header.cluster_id(),
        "one cluster id"
    );
    check_eq!(
        header.member_id(),
        follower_id,
        "member_id is the answering follower's"
    );
    check_eq!(
        leader_header.member_id(),
        leader_id,
        "member_id is the leader's"
    );
    check!(header.raft_term() > 0, "raft_term is 0");
    check_eq!(header.revision(), r(0), "revision");
    check!(
        kvs(&response).is_empty() && response.count() == 0,
        "nothing there"
    );

    for (key, value) in [
        ("k/a", "1"),
        ("k/b", "2"),
        ("k/c", "3"),
        ("other", "x"),
        ("k/a", "11"),
        ("k/b", "22"),
        ("k/d", "4"),
        ("k/a", "111"),
        ("k/d", "4"),
        ("k/d", "4"),
        ("k/d", "4"),
    ] {
        let response = must("put", client.put(key, value, None).await);
        let header = response.header().expect("a header");
        check_eq!(
            header.member_id(),
            follower_id,
            "put answered by the follower"
        );
        check!(response.prev_key().is_none(), "no prev_kv unless asked");
    }
    check_eq!(revision(&mut client).await, r(11), "one revision per put");
    let a = kv("k/a", "111", r(1), r(8), 3);
    let b = kv("k/b", "22", r(2), r(6), 2);
    let c = kv("k/c", "3", r(3), r(3), 1);
    let d = kv("k/d", "4", r(7), r(11), 4);
    let other = kv("other", "x", r(4), r(4), 1);

    let reader = client.clone();
    let get = |key: &'static str, options: GetOptions| {
        let mut client = reader.clone();
        async move { must("get", client.get(key, Some(options)).await) }
    };
    let response = must("get", client.get("k/a", None).await);
    check_eq!(kvs(&response), vec![a.clone()], "a single key");
    check_eq!(
        (response.count(), response.more()),
        (1, false),
        "count, more"
    );
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(11)),
        "revision"
    );

    let response = get("k/", GetOptions::new().with_prefix()).await;
    check_eq!(
        kvs(&response),
        vec![a.clone(), b.clone(), c.clone(), d.clone()],
        "with_prefix"
    );
    check_eq!(
        (response.count(), response.more()),
        (4, false),
        "with_prefix count, more"
    );
    let response = get("k/c", GetOptions::new().with_from_key()).await;
    check_eq!(
        kvs(&response),
        vec![c.clone(), d.clone(), other.clone()],
        "with_from_key"
    );
    check_eq!(response.count(), 3, "with_from_key count");
    let response = get("k/b", GetOptions::new().with_range("k/d")).await;
    check_eq!(
        kvs(&response),
        vec![b.clone(), c.clone()],
        "with_range [k/b, k/d)"
    );
    check_eq!(response.count(), 2, "with_range count");
    let response = get("k/b", GetOptions::new().with_range("k/a")).await;
    check!(
        kvs(&response).is_empty() && response.count() == 0 && !response.more(),
        "range_end before key: empty, not an error: {response:?}"
    );
    let response = get("\0", GetOptions::new().with_all_keys()).await;
    check_eq!(response.count(), 5, "with_all_keys count");

    let response = get("k/", GetOptions::new().with_prefix().with_limit(2)).await;
    check_eq!(keys(&response), ["k/a", "k/b"], "with_limit(2)");
    check_eq!(
        (response.count(), response.more()),
        (4, true),
        "count ignores the limit"
    );
    let response = get("k/", GetOptions::new().with_prefix().with_limit(4)).await;
    check_eq!(
        (keys(&response).len(), response.count(), response.more()),
        (4, 4, false),
        "limit 4"
    );
    let response = get("k/", GetOptions::new().with_prefix().with_limit(0)).await;
    check_eq!(
        (keys(&response).len(), response.more()),
        (4, false),
        "limit 0 is no limit"
    );

    // Sorting, over the whole range before the limit.
    let sorts: &[(SortTarget, SortOrder, [&str; 4])] = &[
        (
            SortTarget::Key,
            SortOrder::Ascend,
            ["k/a", "k/b", "k/c", "k/d"],
        ),
        (
            SortTarget::Key,
            SortOrder::Descend,
            ["k/d", "k/c", "k/b", "k/a"],
        ),
        (
            SortTarget::Key,
            SortOrder::None,
            ["k/a", "k/b", "k/c", "k/d"],
        ),
        (
            SortTarget::Version,
            SortOrder::Ascend,
            ["k/c", "k/b", "k/a", "k/d"],
        ),
        (
            SortTarget::Version,
            SortOrder::Descend,
            ["k/d", "k/a", "k/b", "k/c"],
        ),
        (
            SortTarget::Create,
            SortOrder::Ascend,
            ["k/a", "k/b", "k/c", "k/d"],
        ),
        (
            SortTarget::Create,
            SortOrder::Descend,
            ["k/d", "k/c", "k/b", "k/a"],
        ),
        (
            SortTarget::Mod,
            SortOrder::Ascend,
            ["k/c", "k/b", "k/a", "k/d"],
        ),
        (
            SortTarget::Mod,
            SortOrder::Descend,
            ["k/d", "k/a", "k/b", "k/c"],
        ),
        (
            SortTarget::Value,
            SortOrder::Ascend,
            ["k/a", "k/b", "k/c", "k/d"],
        ),
        (
            SortTarget::Value,
            SortOrder::Descend,
            ["k/d", "k/c", "k/b", "k/a"],
        ),
        // A non-key target without an order sorts ascending.
        (
            SortTarget::Mod,
            SortOrder::None,
            ["k/c", "k/b", "k/a", "k/d"],
        ),
        (
            SortTarget::Version,
            SortOrder::None,
            ["k/c", "k/b", "k/a", "k/d"],
        ),
    ];
    for (target, order, expected) in sorts {
        let response = get(
            "k/",
            GetOptions::new().with_prefix().with_sort(*target, *order),
        )
        .await;
        check_eq!(keys(&response), expected, "sort {target:?} {order:?}");
        if *order != SortOrder::None {
            let response = get(
                "k/",
                GetOptions::new()
                    .with_prefix()
                    .with_sort(*target, *order)
                    .with_limit(2),
            )
            .await;
            check_eq!(
                keys(&response),
                expected[..2],
                "sort {target:?} {order:?} limit 2"
            );
            check_eq!(
                (response.count(), response.more()),
                (4, true),
                "sort+limit count, more"
            );
        }
    }

    // A non-key target with order NONE and a limit: etcd reads limit+1 keys in key order
    // (k/a, k/b) and sorts only those, rather than sorting the whole range.
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Mod, SortOrder::None)
            .with_limit(1),
    )
    .await;
    check_eq!(keys(&response), ["k/b"], "sort Mod None limit 1");
    check_eq!(
        (response.count(), response.more()),
        (4, true),
        "sort Mod None limit 1: count, more"
    );
    // keys_only still sorts by the values it does not return.
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Value, SortOrder::Descend)
            .with_limit(3),
    )
    .await;
    check_eq!(
        keys(&response),
        ["k/d", "k/c", "k/b"],
        "keys_only sort Value Descend limit 3"
    );

    // keys_only and count_only.
    let response = get("k/", GetOptions::new().with_prefix().with_keys_only()).await;
    let stripped: Vec<Kv> = [&a, &b, &c, &d]
        .iter()
        .map(|kv| {
            let mut kv = (*kv).clone();
            kv.1.clear();
            kv
        })
        .collect();
    check_eq!(
        kvs(&response),
        stripped,
        "with_keys_only: everything but the values"
    );
    let response = get("k/", GetOptions::new().with_prefix().with_count_only()).await;
    check_eq!(
        (kvs(&response), response.count(), response.more()),
        (vec![], 4, false),
        "with_count_only"
    );
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_limit(1),
    )
    .await;
    check_eq!(
        (keys(&response).len(), response.count()),
        (0, 4),
        "count_only with a limit"
    );

    // History.
    let response = get("k/", GetOptions::new().with_prefix().with_revision(r(5))).await;
    check_eq!(
        kvs(&response),
        vec![
            kv("k/a", "11", r(1), r(5), 2),
            kv("k/b", "2", r(2), r(2), 1),
            kv("k/c", "3", r(3), r(3), 1)
        ],
        "with_revision(r5)"
    );
    check_eq!(response.count(), 3, "count at r5");
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(11)),
        "header: current revision"
    );
    let response = get("k/", GetOptions::new().with_prefix().with_revision(r(1))).await;
    check_eq!(
        kvs(&response),
        vec![kv("k/a", "1", r(1), r(1), 1)],
        "with_revision(r1)"
    );
    let response = get("k/a", GetOptions::new().with_revision(r(11))).await;
    check_eq!(kvs(&response), vec![a.clone()], "with_revision(current)");
    let response = get("k/a", GetOptions::new().with_revision(-1)).await;
    check_eq!(
        kvs(&response),
        vec![a.clone()],
        "a negative revision means current"
    );

    // Revision filters prune kvs but not count.
    let filters: &[(GetOptions, &[&str], &str)] = &[
        (
            GetOptions::new().with_min_mod_revision(r(6)),
            &["k/a", "k/b", "k/d"],
            "min_mod r6",
        ),
        (
            GetOptions::new().with_max_mod_revision(r(6)),
            &["k/b", "k/c"],
            "max_mod r6",
        ),
        (
            GetOptions::new().with_min_create_revision(r(3)),
            &["k/c", "k/d"],
            "min_create r3",
        ),
        (
            GetOptions::new().with_max_create_revision(r(2)),
            &["k/a", "k/b"],
            "max_create r2",
        ),
        (
            GetOptions::new()
                .with_min_mod_revision(r(4))
                .with_max_mod_revision(r(8)),
            &["k/a", "k/b"],
            "mod in [r4, r8]",
        ),
        (
            GetOptions::new()
                .with_min_create_revision(r(2))
                .with_max_create_revision(r(3)),
            &["k/b", "k/c"],
            "create in [r2, r3]",
        ),
    ];
    for (options, expected, what) in filters {
        let response = get("k/", options.clone().with_prefix()).await;
        check_eq!(keys(&response), *expected, "{what}");
        check_eq!(
            (response.count(), response.more()),
            (4, false),
            "{what}: count, more"
        );
    }
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_min_mod_revision(r(6))
            .with_limit(1),
    )
    .await;
    check_eq!(keys(&response), ["k/a"], "min_mod r6, limit 1");
    check_eq!(
        (response.count(), response.more()),
        (4, true),
        "min_mod r6, limit 1: count, more"
    );
    let response = get(
        "k/",
        GetOptions::new()
            .with_prefix()
            .with_min_mod_revision(r(6))
            .with_sort(SortTarget::Mod, SortOrder::Descend),
    )
    .await;
    check_eq!(keys(&response), ["k/d", "k/a", "k/b"], "filter then sort");

    // Serializable reads answer from the follower's own replica.
    let response = get("k/", GetOptions::new().with_prefix().with_serializable()).await;
    check_eq!(
        kvs(&response),
        vec![a.clone(), b.clone(), c.clone(), d.clone()],
        "serializable"
    );
    check_eq!(
        response.header().map(|h| h.member_id()),
        Some(follower_id),
        "serializable member"
    );

    // PutOptions.
    let response = must(
        "put",
        client
            .put("k/c", "33", Some(PutOptions::new().with_prev_key()))
            .await,
    ); // r12
    check_eq!(
        response.prev_key().map(tuple),
        Some(c.clone()),
        "with_prev_key"
    );
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(12)),
        "put revision"
    );
    let response = must(
        "put",
        client
            .put("new", "n", Some(PutOptions::new().with_prev_key()))
            .await,
    ); // r13
    check!(
        response.prev_key().is_none(),
        "with_prev_key on a new key: {response:?}"
    );
    must(
        "put",
        client
            .put("k/c", "", Some(PutOptions::new().with_ignore_value()))
            .await,
    ); // r14
    let response = get("k/c", GetOptions::new()).await;
    check_eq!(
        kvs(&response),
        vec![kv("k/c", "33", r(3), r(14), 3)],
        "with_ignore_value keeps the value"
    );
    let response = must(
        "put",
        client
            .put(
                "k/c",
                "34",
                Some(PutOptions::new().with_ignore_lease().with_prev_key()),
            )
            .await,
    ); // r15
    check_eq!(
        response.prev_key().map(tuple),
        Some(kv("k/c", "33", r(3), r(14), 3)),
        "prev with ignore_lease"
    );
    let response = get("k/c", GetOptions::new()).await;
    check_eq!(
        kvs(&response),
        vec![kv("k/c", "34", r(3), r(15), 4)],
        "with_ignore_lease"
    );

    refused!(
        &mut client,
        "ignore_value on a missing key",
        client.put("missing", "", Some(PutOptions::new().with_ignore_value())),
        Code::InvalidArgument,
        KEY_NOT_FOUND
    );
    refused!(
        &mut client,
        "ignore_lease on a missing key",
        client.put("missing", "v", Some(PutOptions::new().with_ignore_lease())),
        Code::InvalidArgument,
        KEY_NOT_FOUND
    );
    refused!(
        &mut client,
        "ignore_value with a value",
        client.put("k/c", "v", Some(PutOptions::new().with_ignore_value())),
        Code::InvalidArgument,
        VALUE_PROVIDED
    );
    refused!(
        &mut client,
        "ignore_lease with a lease",
        client.put(
            "k/c",
            "v",
            Some(PutOptions::new().with_ignore_lease().with_lease(5))
        ),
        Code::InvalidArgument,
        LEASE_PROVIDED
    );
    refused!(
        &mut client,
        "put with an unknown lease",
        client.put("leased", "v", Some(PutOptions::new().with_lease(12345))),
        Code::NotFound,
        LEASE_NOT_FOUND
    );
    refused!(
        &mut client,
        "get an empty key",
        client.get("", None),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "put an empty key",
        client.put("", "v", None),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "delete an empty key",
        client.delete("", None),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "put a 2,000,000-byte value",
        client.put("big", vec![b'a'; 2_000_000], None),
        Code::InvalidArgument,
        TOO_LARGE
    );
    refused!(
        &mut client,
        "get a future revision",
        client.get("k/a", Some(GetOptions::new().with_revision(r(1000)))),
        Code::OutOfRange,
        FUTURE_REV
    );
    check_eq!(
        revision(&mut client).await,
        r(15),
        "refused requests created no revision"
    );

    // DeleteOptions.
    let response = must("delete", client.delete("nothing", None).await);
    check_eq!(response.deleted(), 0, "deleting nothing");
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(15)),
        "deleting nothing: no revision"
    );
    let response = must(
        "delete",
        client
            .delete("nothing/", Some(DeleteOptions::new().with_prefix()))
            .await,
    );
    check_eq!(
        (response.deleted(), response.header().map(|h| h.revision())),
        (0, Some(r(15))),
        "deleting an empty prefix"
    );
    check_eq!(
        revision(&mut client).await,
        r(15),
        "deleting nothing creates no revision"
    );
    let response = must(
        "delete",
        client
            .delete("k/b", Some(DeleteOptions::new().with_range("k/a")))
            .await,
    );
    check_eq!(
        response.deleted(),
        0,
        "range_end before key deletes nothing"
    );
    let response = must(
        "delete",
        client
            .delete(
                "k/c",
                Some(DeleteOptions::new().with_range("k/d").with_prev_key()),
            )
            .await,
    ); // r16
    check_eq!(response.deleted(), 1, "with_range");
    check_eq!(
        response.prev_kvs().iter().map(tuple).collect::<Vec<_>>(),
        vec![kv("k/c", "34", r(3), r(15), 4)],
        "with_range prev_kvs"
    );
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(16)),
        "delete revision"
    );
    let response = must(
        "delete",
        client
            .delete("k/", Some(DeleteOptions::new().with_prefix()))
            .await,
    ); // r17
    check_eq!(response.deleted(), 3, "with_prefix");
    check!(response.prev_kvs().is_empty(), "no prev_kvs unless asked");
    let response = must(
        "delete",
        client
            .delete(
                "n",
                Some(DeleteOptions::new().with_from_key().with_prev_key()),
            )
            .await,
    ); // r18
    check_eq!(
        response.prev_kvs().iter().map(tuple).collect::<Vec<_>>(),
        vec![kv("new", "n", r(13), r(13), 1), other.clone()],
        "with_from_key prev_kvs"
    );
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(18)),
        "one revision per delete"
    );
    check_eq!(
        snapshot(&mut client).await,
        (r(18), vec![]),
        "everything deleted"
    );

    // Compaction.
    for (key, value) in [("h", "1"), ("h", "2"), ("h", "3")] {
        must("put", client.put(key, value, None).await); // r19..r21
    }
    must("compact", client.compact(r(20), None).await);
    refused!(
        &mut client,
        "get below the compacted revision",
        client.get("h", Some(GetOptions::new().with_revision(r(19)))),
        Code::OutOfRange,
        COMPACTED
    );
    let response = get("h", GetOptions::new().with_revision(r(20))).await;
    check_eq!(
        kvs(&response),
        vec![kv("h", "2", r(19), r(20), 2)],
        "read at the compacted revision"
    );
    refused!(
        &mut client,
        "compact again",
        client.compact(r(20), None),
        Code::OutOfRange,
        COMPACTED
    );
    refused!(
        &mut client,
        "compact lower",
        client.compact(r(19), None),
        Code::OutOfRange,
        COMPACTED
    );
    refused!(
        &mut client,
        "compact 0",
        client.compact(0, None),
        Code::OutOfRange,
        COMPACTED
    );
    refused!(
        &mut client,
        "compact the future",
        client.compact(r(22), None),
        Code::OutOfRange,
        FUTURE_REV
    );
    must("compact", client.compact(r(21), None).await);
    check_eq!(
        revision(&mut client).await,
        r(21),
        "compaction creates no revision"
    );

    // Cluster and Maintenance views from the follower.
    let status = must("status", client.status().await);
    check_eq!(
        status.header().map(|h| h.member_id()),
        Some(follower_id),
        "status member_id"
    );
    check_eq!(status.leader(), leader_id, "status leader");
    check!(
        status.version().starts_with("3."),
        "status version {:?}",
        status.version()
    );
    check!(
        status.raft_term() > 0 && status.raft_index() > 0,
        "status raft term and index"
    );
    let members = must("member list", client.member_list().await);
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort_unstable();
    check_eq!(names, ["m0", "m1", "m2"], "member names");
    let ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    check_eq!(ids, sorted, "members sorted by id");
    check_eq!(
        members.header().map(|h| (h.member_id(), h.revision())),
        Some((follower_id, 0)),
        "member list header: the follower's id, and no revision (etcd's Cluster service \
         leaves it 0)"
    );

    // An RPC synod does not serve yet says so, by name (Auth is not implemented yet).
    expect_error(
        "Auth.UserList",
        client.user_list().await,
        Code::Unimplemented,
        "synod does not implement Auth.UserList yet",
    );

    // Checked last so that a mismatch here hides nothing above.
    check_eq!(
        base,
        1,
        "a fresh etcd store is at revision 1 (its first write is revision 2)"
    );
    finish_checks();
}

/// Whether a compare-only txn succeeds, checking it creates no revision.
async fn compare(client: &mut Client, compares: Vec<Compare>, current: i64) -> bool {
    let response = must("txn", client.txn(Txn::new().when(compares)).await);
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(current),
        "a compare-only txn"
    );
    check!(response.op_responses().is_empty(), "no ops, no responses");
    response.succeeded()
}

fn op_revision(response: &TxnOpResponse) -> Option<i64> {
    let header = match response {
        TxnOpResponse::Put(r) => r.header(),
        TxnOpResponse::Get(r) => r.header(),
        TxnOpResponse::Delete(r) => r.header(),
        TxnOpResponse::Txn(r) => r.header(),
    };
    header.map(|h| h.revision())
}

fn nested(response: &TxnResponse, index: usize) -> Option<TxnResponse> {
    match response.op_responses().get(index) {
        Some(TxnOpResponse::Txn(inner)) => Some(inner.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_txn_against_a_follower() {
    let (_cluster, mut client, follower_id, _) = setup().await;
    let base = revision(&mut client).await;
    let r = |n: i64| base + n;
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3"), ("b", "20")] {
        must("put", client.put(key, value, None).await); // r1..r4
    }
    // a: "1" c1 m1 v1    b: "20" c2 m4 v2    c: "3" c3 m3 v1

    let cases: Vec<(Compare, bool, &str)> = vec![
        (Compare::value("a", CompareOp::Equal, "1"), true, "value = "),
        (
            Compare::value("a", CompareOp::NotEqual, "1"),
            false,
            "value != ",
        ),
        (
            Compare::value("a", CompareOp::Greater, "0"),
            true,
            "value > ",
        ),
        (
            Compare::value("a", CompareOp::Less, "1"),
            false,
            "value < (equal)",
        ),
        (Compare::value("a", CompareOp::Less, "2"), true, "value <"),
        (
            Compare::value("b", CompareOp::Greater, "1"),
            true,
            "value > (bytes)",
        ),
        (
            Compare::version("b", CompareOp::Equal, 2),
            true,
            "version =",
        ),
        (
            Compare::version("b", CompareOp::Greater, 1),
            true,
            "version >",
        ),
        (
            Compare::version("b", CompareOp::Less, 2),
            false,
            "version <",
        ),
        (
            Compare::version("b", CompareOp::NotEqual, 2),
            false,
            "version !=",
        ),
        (
            Compare::create_revision("b", CompareOp::Equal, r(2)),
            true,
            "create =",
        ),
        (
            Compare::create_revision("b", CompareOp::Greater, r(1)),
            true,
            "create >",
        ),
        (
            Compare::create_revision("b", CompareOp::Less, r(2)),
            false,
            "create <",
        ),
        (
            Compare::mod_revision("b", CompareOp::Equal, r(4)),
            true,
            "mod =",
        ),
        (
            Compare::mod_revision("b", CompareOp::Less, r(4)),
            false,
            "mod <",
        ),
        (
            Compare::mod_revision("b", CompareOp::Greater, r(3)),
            true,
            "mod >",
        ),
        (Compare::lease("a", CompareOp::Equal, 0), true, "lease = 0"),
        // A missing key compares as zeros, except that a value compare always fails.
        (
            Compare::version("z", CompareOp::Equal, 0),
            true,
            "missing: version = 0",
        ),
        (
            Compare::create_revision("z", CompareOp::Equal, 0),
            true,
            "missing: create = 0",
        ),
        (
            Compare::mod_revision("z", CompareOp::Less, 1),
            true,
            "missing: mod < 1",
        ),
        (
            Compare::mod_revision("z", CompareOp::Greater, 0),
            false,
            "missing: mod > 0",
        ),
        (
            Compare::value("z", CompareOp::Equal, ""),
            false,
            "missing: value = \"\"",
        ),
        (
            Compare::value("z", CompareOp::NotEqual, "x"),
            false,
            "missing: value != x",
        ),
        (
            Compare::value("z", CompareOp::Less, "x"),
            false,
            "missing: value < x",
        ),
        // Ranges: every key in the range must pass.
        (
            Compare::value("a", CompareOp::Greater, "0").with_range("d"),
            true,
            "range: values > 0",
        ),
        (
            Compare::value("a", CompareOp::Equal, "1").with_range("d"),
            false,
            "range: values = 1",
        ),
        (
            Compare::version("a", CompareOp::Greater, 0).with_range("d"),
            true,
            "range: versions > 0",
        ),
        (
            Compare::version("a", CompareOp::Equal, 1).with_range("b"),
            true,
            "range [a, b): version",
        ),
        (
            Compare::mod_revision("a", CompareOp::Less, r(4)).with_range("d"),
            false,
            "range: mod < r4",
        ),
        (
            Compare::create_revision("a", CompareOp::Less, r(3)).with_range("c"),
            true,
            "range: create",
        ),
        (
            Compare::version("b", CompareOp::Equal, 2).with_prefix(),
            true,
            "prefix b",
        ),
        (
            Compare::version("x", CompareOp::Equal, 0).with_range("y"),
            true,
            "empty range: version = 0",
        ),
        (
            Compare::value("x", CompareOp::Equal, "").with_range("y"),
            false,
            "empty range: value",
        ),
        (
            Compare::value("c", CompareOp::Equal, "3").with_range("a"),
            false,
            "range_end before key: value",
        ),
    ];
    for (cmp, expected, what) in cases {
        let succeeded = compare(&mut client, vec![cmp], r(4)).await;
        check_eq!(succeeded, expected, "compare {what}");
    }
    let both = vec![
        Compare::value("a", CompareOp::Equal, "1"),
        Compare::version("b", CompareOp::Equal, 1),
    ];
    check_eq!(
        compare(&mut client, both, r(4)).await,
        false,
        "compares are ANDed"
    );
    check_eq!(
        compare(&mut client, vec![], r(4)).await,
        true,
        "no compares: success"
    );

    // The branch that runs; several writes share one revision.
    let response = must(
        "txn",
        client
            .txn(
                Txn::new()
                    .when([Compare::value("a", CompareOp::Equal, "1")])
                    .and_then([
                        put_op("x", "1"),
                        TxnOp::get("a", None),
                        TxnOp::delete("c", Some(DeleteOptions::new().with_prev_key())),
                        TxnOp::put("b", "21", Some(PutOptions::new().with_prev_key())),
                        TxnOp::get("x", None),
                    ])
                    .or_else([put_op("y", "1")]),
            )
            .await,
    ); // r5
    check!(response.succeeded(), "succeeded");
    check_eq!(
        response.header().map(|h| (h.revision(), h.member_id())),
        Some((r(5), follower_id)),
        "header"
    );
    let ops = response.op_responses();
    check_eq!(ops.len(), 5, "five responses");
    check_eq!(
        ops.iter().map(op_revision).collect::<Vec<_>>(),
        vec![Some(r(5)); 5],
        "every op after the txn's first write reports the txn's revision"
    );
    match ops.as_slice() {
        [TxnOpResponse::Put(put), TxnOpResponse::Get(get_a), TxnOpResponse::Delete(del), TxnOpResponse::Put(put_b), TxnOpResponse::Get(get_x)] =>
        {
            check!(put.prev_key().is_none(), "put without prev_kv");
            check_eq!(kvs(get_a), vec![kv("a", "1", r(1), r(1), 1)], "get in txn");
            check_eq!(del.deleted(), 1, "delete in txn");
            check_eq!(
                del.prev_kvs().iter().map(tuple).collect::<Vec<_>>(),
                vec![kv("c", "3", r(3), r(3), 1)],
                "delete prev_kvs"
            );
            check_eq!(
                put_b.prev_key().map(tuple),
                Some(kv("b", "20", r(2), r(4), 2)),
                "put prev_kv"
            );
            check_eq!(
                kvs(get_x),
                vec![kv("x", "1", r(5), r(5), 1)],
                "a get sees the txn's own write"
            );
        }
        other => mismatch(format!("unexpected responses {other:?}")),
    }
    check_eq!(
        snapshot(&mut client).await,
        (
            r(5),
            vec![
                kv("a", "1", r(1), r(1), 1),
                kv("b", "21", r(2), r(5), 3),
                kv("x", "1", r(5), r(5), 1)
            ]
        ),
        "after the txn"
    );

    let response = must(
        "txn",
        client
            .txn(
                Txn::new()
                    .when([Compare::value("a", CompareOp::Equal, "nope")])
                    .and_then([put_op("y", "1")])
                    .or_else([TxnOp::get("y", None), put_op("f1", "1"), put_op("f2", "2")]),
            )
            .await,
    ); // r6
    check!(!response.succeeded(), "failed compare");
    let ops = response.op_responses();
    check_eq!(
        ops.iter().map(op_revision).collect::<Vec<_>>(),
        vec![Some(r(5)), Some(r(6)), Some(r(6))],
        "a get before the first write reports the previous revision"
    );
    check_eq!(
        keys(&must(
            "get",
            client.get("f", Some(GetOptions::new().with_prefix())).await
        )),
        ["f1", "f2"],
        "failure branch ran"
    );
    check!(
        must("get", client.get("y", None).await).kvs().is_empty(),
        "success branch did not run"
    );

    // Read-only and no-op txns create no revision.
    let response = must(
        "txn",
        client
            .txn(Txn::new().and_then([
                TxnOp::get("a", None),
                TxnOp::get("\0", Some(GetOptions::new().with_all_keys())),
            ]))
            .await,
    );
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(6)),
        "read-only txn"
    );
    let response = must(
        "txn",
        client
            .txn(Txn::new().and_then([TxnOp::delete("nothing", None)]))
            .await,
    );
    check_eq!(
        response.header().map(|h| h.revision()),
        Some(r(6)),
        "deleting nothing in a txn"
    );
    check_eq!(
        revision(&mut client).await,
        r(6),
        "no revision for reads and empty deletes"
    );

    // Nested txns.
    let inner = |value: &str| {
        Txn::new()
            .when([Compare::value("a", CompareOp::Equal, value)])
            .and_then([put_op("n/then", "1"), TxnOp::get("a", None)])
            .or_else([put_op("n/else", "1")])
    };
    let response = must(
        "nested txn",
        client
            .txn(Txn::new().and_then([TxnOp::txn(inner("1")), put_op("n/outer", "1")]))
            .await,
    ); // r7
    check!(response.succeeded(), "outer succeeded");
    let first = nested(&response, 0);
    check_eq!(
        first.as_ref().map(TxnResponse::succeeded),
        Some(true),
        "inner succeeded"
    );
    check_eq!(
        first.as_ref().map(|t| t.op_responses().len()),
        Some(2),
        "inner responses"
    );
    check_eq!(
        keys(&must(
            "get",
            client
                .get("n/", Some(GetOptions::new().with_prefix()))
                .await
        )),
        ["n/outer", "n/then"],
        "nested then-branch"
    );
    let response = must(
        "nested txn",
        client
            .txn(Txn::new().and_then([TxnOp::txn(inner("nope"))]))
            .await,
    ); // r8
    check_eq!(
        nested(&response, 0).map(|t| t.succeeded()),
        Some(false),
        "inner failed"
    );
    check_eq!(
        keys(&must(
            "get",
            client
                .get("n/", Some(GetOptions::new().with_prefix()))
                .await
        )),
        ["n/else", "n/outer", "n/then"],
        "nested else-branch"
    );
    // The same key in a nested txn's two branches is fine: only one runs.
    let same_key = Txn::new()
        .when([Compare::version("a", CompareOp::Greater, 0)])
        .and_then([put_op("n/same", "then")])
        .or_else([put_op("n/same", "else")]);
    must(
        "nested same key",
        client
            .txn(Txn::new().and_then([TxnOp::txn(same_key)]))
            .await,
    ); // r9
    check_eq!(
        revision(&mut client).await,
        r(9),
        "one revision per nested txn"
    );

    // Bad transactions: each refused with etcd's error, changing nothing.
    let puts = |prefix: &str, count: usize| -> Vec<TxnOp> {
        (0..count)
            .map(|i| put_op(&format!("{prefix}{i}"), "v"))
            .collect()
    };
    refused!(
        &mut client,
        "129 ops in success",
        client.txn(Txn::new().and_then(puts("t/", 129))),
        Code::InvalidArgument,
        TOO_MANY_OPS
    );
    refused!(
        &mut client,
        "129 ops in failure",
        client.txn(Txn::new().or_else(puts("t/", 129))),
        Code::InvalidArgument,
        TOO_MANY_OPS
    );
    let compares: Vec<Compare> = (0..129)
        .map(|_| Compare::version("a", CompareOp::Greater, 0))
        .collect();
    refused!(
        &mut client,
        "129 compares",
        client.txn(Txn::new().when(compares)),
        Code::InvalidArgument,
        TOO_MANY_OPS
    );
    let mut too_many = puts("t/", 128);
    too_many.push(put_op("t/0", "again"));
    refused!(
        &mut client,
        "129 ops with a duplicate: the count is checked first",
        client.txn(Txn::new().and_then(too_many)),
        Code::InvalidArgument,
        TOO_MANY_OPS
    );
    // A nested txn may use what its parent leaves of the limit: 128 - 100 = 28.
    let mut outer = puts("o/", 99);
    outer.push(TxnOp::txn(Txn::new().and_then(puts("i/", 29))));
    refused!(
        &mut client,
        "nested ops over what the parent leaves",
        client.txn(Txn::new().and_then(outer)),
        Code::InvalidArgument,
        TOO_MANY_OPS
    );
    let mut outer = puts("o/", 99);
    outer.push(TxnOp::txn(Txn::new().and_then(puts("i/", 28))));
    must(
        "nested ops within the limit",
        client.txn(Txn::new().and_then(outer)).await,
    ); // r10
    let response = must(
        "txn",
        client
            .txn(
                Txn::new()
                    .and_then(puts("t/", 100))
                    .or_else(puts("u/", 100)),
            )
            .await,
    ); // r11
    check!(response.succeeded(), "100 + 100 ops: the limit is per list");
    check_eq!(revision(&mut client).await, r(11), "revisions so far");

    refused!(
        &mut client,
        "duplicate put in success",
        client.txn(Txn::new().and_then([put_op("dup", "1"), put_op("dup", "2")])),
        Code::InvalidArgument,
        DUPLICATE_KEY
    );
    refused!(
        &mut client,
        "duplicate put in failure (success runs)",
        client.txn(
            Txn::new()
                .and_then([put_op("ok", "1")])
                .or_else([put_op("dup", "1"), put_op("dup", "2")])
        ),
        Code::InvalidArgument,
        DUPLICATE_KEY
    );
    refused!(
        &mut client,
        "put inside a deleted range",
        client.txn(Txn::new().and_then([
            put_op("dup/a", "1"),
            TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
        ])),
        Code::InvalidArgument,
        DUPLICATE_KEY
    );
    refused!(
        &mut client,
        "delete then put the same key",
        client.txn(Txn::new().or_else([TxnOp::delete("dup", None), put_op("dup", "1")])),
        Code::InvalidArgument,
        DUPLICATE_KEY
    );
    refused!(
        &mut client,
        "outer put and nested put of one key",
        client.txn(Txn::new().and_then([
            put_op("dup", "1"),
            TxnOp::txn(Txn::new().and_then([put_op("dup", "2")])),
        ])),
        Code::InvalidArgument,
        DUPLICATE_KEY
    );
    refused!(
        &mut client,
        "outer delete and nested put",
        client.txn(Txn::new().and_then([
            TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
            TxnOp::txn(Txn::new().or_else([put_op("dup/x", "2")])),
        ])),
        Code::InvalidArgument,
        DUPLICATE_KEY
    );
    refused!(
        &mut client,
        "duplicate inside a nested branch",
        client.txn(Txn::new().and_then([TxnOp::txn(
            Txn::new().and_then([put_op("dup", "1"), put_op("dup", "2")])
        )])),
        Code::InvalidArgument,
        DUPLICATE_KEY
    );
    // Allowed: one key in both branches, deletes that overlap, reads and writes of a key.
    must(
        "allowed overlaps",
        client
            .txn(
                Txn::new()
                    .and_then([
                        TxnOp::get("dup", None),
                        put_op("dup", "1"),
                        TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
                        TxnOp::delete("dup/a", None),
                    ])
                    .or_else([put_op("dup", "2")]),
            )
            .await,
    ); // r12

    refused!(
        &mut client,
        "compare on an empty key",
        client.txn(Txn::new().when([Compare::version("", CompareOp::Equal, 0)])),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "put of an empty key in a txn",
        client.txn(Txn::new().and_then([put_op("", "v")])),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "get of an empty key in the untaken branch",
        client.txn(Txn::new().or_else([TxnOp::get("", None)])),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "delete of an empty key in a nested txn",
        client
            .txn(Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::delete("", None)]))])),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "an empty key beats a duplicate",
        client.txn(Txn::new().and_then([put_op("dup", "1"), put_op("dup", "2"), put_op("", "v")])),
        Code::InvalidArgument,
        EMPTY_KEY
    );
    refused!(
        &mut client,
        "a 2,000,000-byte put in a txn",
        client.txn(Txn::new().and_then([TxnOp::put("big", vec![b'a'; 2_000_000], None)])),
        Code::InvalidArgument,
        TOO_LARGE
    );
    refused!(
        &mut client,
        "two 900,000-byte puts in a txn",
        client.txn(Txn::new().and_then([
            TxnOp::put("big1", vec![b'a'; 900_000], None),
            TxnOp::put("big2", vec![b'a'; 900_000], None),
        ])),
        Code::InvalidArgument,
        TOO_LARGE
    );
    refused!(
        &mut client,
        "an unknown lease in the branch that runs",
        client.txn(Txn::new().and_then([TxnOp::put(
            "leased",
            "v",
            Some(PutOptions::new().with_lease(12345))
        )])),
        Code::NotFound,
        LEASE_NOT_FOUND
    );
    refused!(
        &mut client,
        "ignore_value on a missing key in the branch that runs",
        client.txn(Txn::new().and_then([TxnOp::put(
            "missing",
            "",
            Some(PutOptions::new().with_ignore_value())
        )])),
        Code::InvalidArgument,
        KEY_NOT_FOUND
    );
    let response = must(
        "unknown lease in the untaken branch",
        client
            .txn(
                Txn::new()
                    .and_then([TxnOp::get("a", None)])
                    .or_else([TxnOp::put(
                        "leased",
                        "v",
                        Some(PutOptions::new().with_lease(12345)),
                    )]),
            )
            .await,
    );
    check!(
        response.succeeded(),
        "the untaken branch is not checked for leases"
    );
    check_eq!(
        revision(&mut client).await,
        r(12),
        "refused txns created no revision"
    );

    // Reads at bad revisions in the branch that runs.
    must("compact", client.compact(r(6), None).await);
    refused!(
        &mut client,
        "get below the compacted revision in a txn",
        client.txn(
            Txn::new().and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(r(5))))])
        ),
        Code::OutOfRange,
        COMPACTED
    );
    refused!(
        &mut client,
        "get at a future revision in a txn",
        client.txn(Txn::new().and_then([TxnOp::get(
            "a",
            Some(GetOptions::new().with_revision(r(100)))
        )])),
        Code::OutOfRange,
        FUTURE_REV
    );
    refused!(
        &mut client,
        "a bad read next to a write: nothing is written",
        client.txn(Txn::new().and_then([
            put_op("written", "1"),
            TxnOp::get("a", Some(GetOptions::new().with_revision(r(5)))),
        ])),
        Code::OutOfRange,
        COMPACTED
    );
    let response = must(
        "bad revision in the untaken branch",
        client
            .txn(Txn::new().or_else([TxnOp::get("a", Some(GetOptions::new().with_revision(r(5))))]))
            .await,
    );
    check!(
        response.succeeded(),
        "the untaken branch is not checked for revisions"
    );
    check_eq!(revision(&mut client).await, r(12), "final revision");

    finish_checks();
}
