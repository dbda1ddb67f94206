#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// Leases over real processes: expiry deletes the attached keys (in one revision),
// keep-alive keeps them, revoke, time-to-live, listing, client-chosen ids, etcd's
// errors and TTL bounds, detaching a key by a plain put; and leases kept alive
// through a leader crash (docs/ARCHITECTURE.md §1: failover never expires a live lease early).
// Expected behaviour is etcd 3.4's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{expect_error, finish_checks, mismatch, must, Cluster};
use etcd_client::{
    Client, ConnectOptions, Error, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions,
    PutOptions,
};
use tokio::task::JoinSet;
use tonic::Code;

const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";

/// The current revision, read linearizably.
async fn revision(client: &mut Client) -> i64 {
    let response = must("get", client.get("synod-lease-probe", None).await);
    response.header().map_or(0, |header| header.revision())
}

/// The keys among `keys` that exist, with their leases.
async fn existing(client: &mut Client, keys: &[&str]) -> BTreeMap<String, i64> {
    let mut found = BTreeMap::new();
    for key in keys {
        let response = must("get", client.get(*key, None).await);
        if let Some(kv) = response.kvs().first() {
            found.insert(key.to_string(), kv.lease());
        }
    }
    found
}

/// Waits (polling every 100 ms) until none of `keys` exists, or `deadline`; returns
/// whether they all went.
async fn wait_gone(client: &mut Client, keys: &[&str], deadline: Instant) -> bool {
    loop {
        if existing(client, keys).await.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A lease's TTL as TimeToLive reports it: (ttl, granted_ttl, sorted keys).
async fn time_to_live(client: &mut Client, id: i64, keys: bool) -> (i64, i64, Vec<String>) {
    let options = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
    let response = must("time to live", client.lease_time_to_live(id, options).await);
    check_eq!(response.id(), id, "TimeToLive echoes the lease id");
    let mut keys: Vec<String> = response
        .keys()
        .iter()
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect();
    keys.sort();
    (response.ttl(), response.granted_ttl(), keys)
}

/// The ids LeaseLeases lists.
async fn listed(client: &mut Client) -> BTreeSet<i64> {
    let response = must("leases", client.leases().await);
    response.leases().iter().map(|lease| lease.id()).collect()
}

/// Expiry, keep-alive and detaching, against a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_keep_alive_and_detach() {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let mut client = cluster.client(follower).await;

    // Expiry: no keep-alive, both keys go within TTL + 2 s, in one revision.
    let granted_at = Instant::now();
    let grant = must("grant 2", client.lease_grant(2, None).await);
    check_eq!(grant.ttl(), 2, "granted TTL");
    let lease = grant.id();
    for key in ["exp/a", "exp/b"] {
        must(
            "put with lease",
            client
                .put(key, "v", Some(PutOptions::new().with_lease(lease)))
                .await,
        );
    }
    let before_expiry = revision(&mut client).await;
    let attached = existing(&mut client, &["exp/a", "exp/b"]).await;
    check_eq!(
        attached,
        BTreeMap::from([("exp/a".to_string(), lease), ("exp/b".to_string(), lease)]),
        "keys carry their lease"
    );
    if granted_at.elapsed() < Duration::from_millis(1500) {
        let (ttl, granted, _) = time_to_live(&mut client, lease, false).await;
        check!(
            (1..=2).contains(&ttl),
            "TimeToLive of a fresh 2 s lease: ttl {ttl}"
        );
        check_eq!(granted, 2, "granted TTL of a fresh lease");
    }
    let gone = wait_gone(
        &mut client,
        &["exp/a", "exp/b"],
        granted_at + Duration::from_secs(4),
    )
    .await;
    check!(gone, "keys of an expired 2 s lease still there after 4 s");
    if gone {
        let elapsed = granted_at.elapsed();
        check!(
            elapsed >= Duration::from_millis(1900),
            "keys of a 2 s lease vanished after only {elapsed:?}"
        );
        check_eq!(
            revision(&mut client).await,
            before_expiry + 1,
            "expiry deletes every attached key in one revision"
        );
        let (ttl, granted, keys) = time_to_live(&mut client, lease, true).await;
        check_eq!(
            (ttl, granted, keys),
            (-1, 0, Vec::<String>::new()),
            "TimeToLive of an expired lease"
        );
        check!(
            !listed(&mut client).await.contains(&lease),
            "an expired lease is still listed"
        );
    }

    // Keep-alive: renewed every 500 ms for 5 s (2.5 x TTL), the keys stay.
    let lease = must("grant 2", client.lease_grant(2, None).await).id();
    must(
        "put with lease",
        client
            .put("ka/a", "v", Some(PutOptions::new().with_lease(lease)))
            .await,
    );
    let (mut keeper, mut responses) = must(
        "keep-alive stream",
        tokio::time::timeout(Duration::from_secs(5), client.lease_keep_alive(lease))
            .await
            .expect("keep-alive stream within 5 s"),
    );
    let kept_until = Instant::now() + Duration::from_secs(5);
    let mut last_sent = Instant::now();
    while Instant::now() < kept_until {
        last_sent = Instant::now();
        must("keep-alive", keeper.keep_alive().await);
        let response = tokio::time::timeout(Duration::from_secs(3), responses.message())
            .await
            .expect("keep-alive answered within 3 s");
        let response = must("keep-alive response", response).expect("keep-alive stream open");
        check_eq!(
            (response.id(), response.ttl()),
            (lease, 2),
            "keep-alive response"
        );
        check_eq!(
            existing(&mut client, &["ka/a"]).await.len(),
            1,
            "a kept-alive key vanished"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(keeper);
    drop(responses);
    let gone = wait_gone(&mut client, &["ka/a"], last_sent + Duration::from_secs(4)).await;
    check!(gone, "key still there 4 s after the last keep-alive");

    // A plain put detaches a key from its lease; ignore_lease keeps the attachment.
    let lease = must("grant 2", client.lease_grant(2, None).await).id();
    let granted_at = Instant::now();
    for key in ["det/plain", "det/ignore"] {
        must(
            "put with lease",
            client
                .put(key, "v1", Some(PutOptions::new().with_lease(lease)))
                .await,
        );
    }
    must("plain put", client.put("det/plain", "v2", None).await);
    must(
        "put ignoring the lease",
        client
            .put(
                "det/ignore",
                "v2",
                Some(PutOptions::new().with_ignore_lease()),
            )
            .await,
    );
    check_eq!(
        existing(&mut client, &["det/plain", "det/ignore"]).await,
        BTreeMap::from([
            ("det/ignore".to_string(), lease),
            ("det/plain".to_string(), 0)
        ]),
        "leases after a plain put and an ignore_lease put"
    );
    let (_, _, keys) = time_to_live(&mut client, lease, true).await;
    check_eq!(
        keys,
        vec!["det/ignore".to_string()],
        "the lease's keys after detaching one"
    );
    let gone = wait_gone(
        &mut client,
        &["det/ignore"],
        granted_at + Duration::from_secs(4),
    )
    .await;
    check!(gone, "the ignore_lease key outlived its lease");
    let survivor = must("get", client.get("det/plain", None).await);
    check_eq!(
        survivor
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.lease())),
        Some((b"v2".to_vec(), 0)),
        "a detached key survives its old lease"
    );
    finish_checks();
}

/// Revoke, TimeToLive, LeaseLeases, ids, errors and TTL bounds, against a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_api_against_a_follower() {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let mut client = cluster.client(follower).await;

    // TimeToLive lists the attached keys.
    let lease = must("grant 60", client.lease_grant(60, None).await).id();
    check!(lease > 0, "a server-chosen lease id is positive: {lease}");
    for key in ["ttl/b", "ttl/a", "ttl/c"] {
        must(
            "put with lease",
            client
                .put(key, "v", Some(PutOptions::new().with_lease(lease)))
                .await,
        );
    }
    // (A linearizable read first: the follower has applied the puts.)
    revision(&mut client).await;
    let (ttl, granted, keys) = time_to_live(&mut client, lease, true).await;
    check!(
        (58..=60).contains(&ttl),
        "remaining TTL {ttl} of a 60 s lease"
    );
    check_eq!(granted, 60, "granted TTL");
    check_eq!(
        keys,
        vec![
            "ttl/a".to_string(),
            "ttl/b".to_string(),
            "ttl/c".to_string()
        ],
        "TimeToLive with keys"
    );
    let (_, _, keys) = time_to_live(&mut client, lease, false).await;
    check_eq!(keys, Vec::<String>::new(), "TimeToLive without keys");
    // TimeToLive is linearizable, as etcd's (served by the leader): on a follower it
    // lists a key attached a moment ago through the leader.
    let leader = cluster.leader().await;
    let mut leader_client = cluster.client(leader).await;
    let mut missed = Vec::new();
    for index in 0..20 {
        let key = format!("ttl/late{index:02}");
        must(
            "put with lease through the leader",
            leader_client
                .put(key.clone(), "v", Some(PutOptions::new().with_lease(lease)))
                .await,
        );
        let (_, _, keys) = time_to_live(&mut client, lease, true).await;
        if !keys.contains(&key) {
            missed.push(key);
        }
    }
    check!(
        missed.is_empty(),
        "TimeToLive on a follower missed keys just attached through the leader, {} \
         times in 20: {missed:?}",
        missed.len()
    );

    // Revoke deletes every attached key in one revision.
    let before = revision(&mut client).await;
    let revoked = must("revoke", client.lease_revoke(lease).await);
    check_eq!(
        revoked.header().map(|header| header.revision()),
        Some(before + 1),
        "revoke's header revision"
    );
    check_eq!(
        revision(&mut client).await,
        before + 1,
        "revision after revoke"
    );
    let left = must(
        "get",
        client
            .get(
                "ttl/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await,
    );
    check_eq!(left.kvs().len(), 0, "keys of a revoked lease");
    let (ttl, granted, keys) = time_to_live(&mut client, lease, true).await;
    check_eq!(
        (ttl, granted, keys),
        (-1, 0, Vec::<String>::new()),
        "TimeToLive of a revoked lease"
    );
    // Revoking a lease with no keys does not bump the revision.
    let empty = must("grant", client.lease_grant(60, None).await).id();
    let before = revision(&mut client).await;
    must("revoke an empty lease", client.lease_revoke(empty).await);
    check_eq!(
        revision(&mut client).await,
        before,
        "revoking a lease without keys"
    );

    // Client-chosen ids; a duplicate fails.
    let chosen = 0x1234_5678;
    let grant = must(
        "grant with an id",
        client
            .lease_grant(30, Some(LeaseGrantOptions::new().with_id(chosen)))
            .await,
    );
    check_eq!(
        (grant.id(), grant.ttl()),
        (chosen, 30),
        "grant with a chosen id"
    );
    expect_error(
        "grant a duplicate id",
        client
            .lease_grant(30, Some(LeaseGrantOptions::new().with_id(chosen)))
            .await,
        Code::FailedPrecondition,
        LEASE_EXISTS,
    );

    // LeaseLeases lists exactly the live leases.
    let second = must("grant", client.lease_grant(30, None).await).id();
    check_eq!(
        listed(&mut client).await,
        BTreeSet::from([chosen, second]),
        "LeaseLeases"
    );
    check_eq!(
        listed(&mut leader_client).await,
        BTreeSet::from([chosen, second]),
        "LeaseLeases on the leader"
    );

    // Unknown leases.
    let unknown = 0x7777_0000;
    expect_error(
        "revoke an unknown lease",
        client.lease_revoke(unknown).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    expect_error(
        "put with an unknown lease",
        client
            .put("unk", "v", Some(PutOptions::new().with_lease(unknown)))
            .await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    check_eq!(
        existing(&mut client, &["unk"]).await,
        BTreeMap::new(),
        "a put with an unknown lease stored nothing"
    );
    let (ttl, granted, _) = time_to_live(&mut client, unknown, true).await;
    check_eq!((ttl, granted), (-1, 0), "TimeToLive of an unknown lease");
    // etcd answers a keep-alive for an unknown lease with TTL 0, which etcd-client
    // turns into an error.
    match tokio::time::timeout(Duration::from_secs(5), client.lease_keep_alive(unknown)).await {
        Ok(Err(Error::LeaseKeepAliveError(_))) => {}
        other => mismatch(format!(
            "keep-alive of an unknown lease: got {other:?}, want a TTL 0 answer"
        )),
    }
    // Revoking twice.
    must("revoke", client.lease_revoke(second).await);
    expect_error(
        "revoke a revoked lease",
        client.lease_revoke(second).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );

    // TTL bounds: below the minimum is raised to 2 s; above 9e9 is refused.
    for ttl in [1, 0, -1] {
        let grant = must("grant a short TTL", client.lease_grant(ttl, None).await);
        check_eq!(grant.ttl(), 2, "grant with TTL {ttl}");
        let (_, granted, _) = time_to_live(&mut client, grant.id(), false).await;
        check_eq!(granted, 2, "granted TTL of a lease asked for {ttl} s");
    }
    let grant = must(
        "grant the largest TTL",
        client.lease_grant(9_000_000_000, None).await,
    );
    check_eq!(grant.ttl(), 9_000_000_000, "grant with TTL 9000000000");
    expect_error(
        "grant TTL 9000000001",
        client.lease_grant(9_000_000_001, None).await,
        Code::OutOfRange,
        TTL_TOO_LARGE,
    );
    finish_checks();
}

/// The keys under `prefix` on the member at `endpoint` (serializable, so it answers while
/// the cluster has no leader), or None if the member does not answer.
async fn present_on(endpoint: &str, prefix: &str) -> Option<BTreeSet<String>> {
    let mut client = Client::connect(
        [endpoint],
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(2)),
        ),
    )
    .await
    .ok()?;
    let response = client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .ok()?;
    Some(
        response
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect(),
    )
}

/// Every event under `prefix` from revision 1 to the current one, as seen through
/// `endpoint`: (PUT or DELETE, key, mod revision).
async fn history(endpoint: &str, prefix: &str) -> Vec<(String, String, i64)> {
    let mut client = common::connect(&[endpoint.to_string()]).await;
    let current = must(
        "revision",
        client
            .get("synod-probe", Some(GetOptions::new().with_serializable()))
            .await,
    )
    .header()
    .map_or(0, |header| header.revision());
    let mut stream = must(
        "watch the history",
        client
            .watch(
                prefix,
                Some(
                    etcd_client::WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(1),
                ),
            )
            .await,
    );
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events
        .last()
        .is_none_or(|(_, _, revision)| *revision < current)
    {
        let Ok(Ok(Some(response))) =
            tokio::time::timeout_at(deadline.into(), stream.message()).await
        else {
            break;
        };
        for event in response.events() {
            let kv = event.kv().expect("event kv");
            events.push((
                format!("{:?}", event.event_type()).to_uppercase(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
            ));
        }
        if response.header().map_or(0, |header| header.revision()) >= current {
            break;
        }
    }
    events
}

/// Keeps `lease` alive every second until `stop`, failing over to the next endpoint
/// whenever its stream breaks or stalls. Records in `last_sent` when it last sent a
/// keep-alive (any of which may have renewed the lease). Returns a log of its
/// failovers, timed from `t0`.
async fn keep_alive_with_failover(
    lease: i64,
    endpoints: Vec<String>,
    first: usize,
    stop: Arc<AtomicBool>,
    last_sent: Arc<Mutex<Instant>>,
    t0: Instant,
) -> Vec<String> {
    let mut endpoint = first;
    let mut log = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(120);
    'connect: while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
        let stream = async {
            let mut client = Client::connect(
                [endpoints[endpoint].clone()],
                Some(
                    ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_secs(2)),
                ),
            )
            .await?;
            *last_sent.lock().unwrap() = Instant::now();
            client.lease_keep_alive(lease).await
        };
        let (mut keeper, mut responses) =
            match tokio::time::timeout(Duration::from_secs(2), stream).await {
                Ok(Ok(stream)) => stream,
                failed => {
                    log.push(format!(
                        "{:?}: lease {lease:x}: no stream on member {endpoint}: {:?}",
                        t0.elapsed(),
                        failed.map(|result| result.err())
                    ));
                    endpoint = (endpoint + 1) % endpoints.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'connect;
                }
            };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if stop.load(Ordering::SeqCst) {
                break 'connect;
            }
            *last_sent.lock().unwrap() = Instant::now();
            if let Err(error) = keeper.keep_alive().await {
                log.push(format!(
                    "{:?}: lease {lease:x}: send on member {endpoint} failed: {error}",
                    t0.elapsed()
                ));
                break;
            }
            match tokio::time::timeout(Duration::from_secs(2), responses.message()).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {}
                other => {
                    log.push(format!(
                        "{:?}: lease {lease:x}: keep-alive on member {endpoint}: {other:?}",
                        t0.elapsed()
                    ));
                    break;
                }
            }
        }
        endpoint = (endpoint + 1) % endpoints.len();
    }
    log
}

/// 20 leases kept alive through a leader crash: none of their keys may vanish while
/// they are kept alive, and all must vanish within TTL + 2 s once they are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_survive_leader_failover() {
    const LEASES: usize = 20;
    const TTL: i64 = 5;
    let mut cluster = Cluster::start(3, &[]).await;
    let endpoints = cluster.endpoints();
    let leader = cluster.leader().await;
    let survivor = cluster.follower().await;
    let mut client = cluster.client(survivor).await;

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut keepers = JoinSet::new();
    let mut last_sent = Vec::new();
    let mut leases = Vec::new();
    for index in 0..LEASES {
        let lease = must("grant", client.lease_grant(TTL, None).await).id();
        let sent = Arc::new(Mutex::new(Instant::now()));
        last_sent.push(sent.clone());
        keepers.spawn(keep_alive_with_failover(
            lease,
            endpoints.clone(),
            index % endpoints.len(),
            stop.clone(),
            sent,
            t0,
        ));
        must(
            "put with lease",
            client
                .put(
                    format!("fo/{index:02}"),
                    "v",
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await,
        );
        leases.push(lease);
    }
    let all_keys: BTreeSet<String> = (0..LEASES).map(|index| format!("fo/{index:02}")).collect();
    // The survivor is polled with serializable reads; make sure it has applied the
    // puts first (synod acknowledges a write forwarded by a follower before the
    // follower applies it, unlike etcd; that is checked elsewhere).
    let deadline = Instant::now() + Duration::from_secs(5);
    while present_on(&cluster.members[survivor].endpoint(), "fo/")
        .await
        .as_ref()
        != Some(&all_keys)
    {
        assert!(
            Instant::now() < deadline,
            "member {survivor} has not applied the lease keys within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Watch the keys through the surviving member while the leader dies.
    let survivor_endpoint = endpoints[survivor].clone();
    let watch_until = |until: Instant| {
        let endpoint = survivor_endpoint.clone();
        let all_keys = all_keys.clone();
        async move {
            let mut polls = 0;
            let mut vanished = BTreeMap::new();
            while Instant::now() < until {
                if let Some(present) = present_on(&endpoint, "fo/").await {
                    polls += 1;
                    for key in all_keys.difference(&present) {
                        vanished.entry(key.clone()).or_insert(t0.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (polls, vanished)
        }
    };
    eprintln!("{:?}: 20 leases granted, keep-alives started", t0.elapsed());
    let (_, mut vanished) = watch_until(Instant::now() + Duration::from_secs(3)).await;
    cluster.kill(leader);
    let killed_at = Instant::now();
    eprintln!("{:?}: leader m{leader} killed", t0.elapsed());
    let (polls, vanished_after) = watch_until(killed_at + Duration::from_secs(10)).await;
    for (key, at) in vanished_after {
        vanished.entry(key).or_insert(at);
    }
    if !vanished.is_empty() {
        stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        while let Some(result) = keepers.join_next().await {
            logs.extend(result.expect("keep-alive task"));
        }
        let history = history(&survivor_endpoint, "fo/").await;
        let deletes: Vec<&(String, String, i64)> = history
            .iter()
            .filter(|(kind, _, _)| kind == "DELETE")
            .collect();
        panic!(
            "keys of kept-alive leases vanished (seen gone at, from the first grant): \
             {vanished:?}\nleader m{leader} was killed at {:?}\ndeletes in the history: \
             {deletes:?}\nkeep-alive failovers:\n{}",
            killed_at.duration_since(t0),
            logs.join("\n")
        );
    }
    assert!(
        polls >= 20,
        "the surviving member answered only {polls} polls in 10 s"
    );
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader, "a new leader was elected");
    let mut client = cluster.client(survivor).await;
    let present: BTreeSet<String> = must(
        "read the keys",
        client
            .get("fo/", Some(GetOptions::new().with_prefix()))
            .await,
    )
    .kvs()
    .iter()
    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
    .collect();
    assert_eq!(
        present, all_keys,
        "every key survives 10 s of keep-alives across a failover"
    );

    // Stop the keep-alives: every key goes within TTL + 2 s of its last keep-alive,
    // and none before TTL.
    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    while let Some(result) = keepers.join_next().await {
        logs.extend(result.expect("keep-alive task"));
    }
    eprintln!(
        "keep-alive streams failed over {} times:\n{}",
        logs.len(),
        logs.join("\n")
    );
    let last_sent: Vec<Instant> = last_sent.iter().map(|sent| *sent.lock().unwrap()).collect();
    let latest = *last_sent.iter().max().unwrap();
    let mut gone_at: BTreeMap<String, Instant> = BTreeMap::new();
    let deadline = latest + Duration::from_secs(TTL as u64 + 2);
    while gone_at.len() < LEASES && Instant::now() < deadline + Duration::from_secs(1) {
        if let Some(present) = present_on(&survivor_endpoint, "fo/").await {
            let now = Instant::now();
            for key in all_keys.difference(&present) {
                gone_at.entry(key.clone()).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut late = Vec::new();
    let mut early = Vec::new();
    for (index, sent) in last_sent.iter().enumerate() {
        let key = format!("fo/{index:02}");
        match gone_at.get(&key) {
            None => late.push(format!("{key} never went")),
            Some(at) if at.duration_since(*sent) > Duration::from_secs(TTL as u64 + 2) => late
                .push(format!(
                    "{key} went {:?} after its last keep-alive",
                    at.duration_since(*sent)
                )),
            Some(at)
                if at.saturating_duration_since(*sent)
                    < Duration::from_secs(TTL as u64) - Duration::from_millis(100) =>
            {
                early.push(format!(
                    "{key} went only {:?} after its last keep-alive",
                    at.saturating_duration_since(*sent)
                ))
            }
            Some(_) => {}
        }
    }
    assert!(
        late.is_empty(),
        "keys outlived their leases by more than 2 s: {late:?}"
    );
    assert!(
        early.is_empty(),
        "keys vanished before their TTL: {early:?}"
    );

    // Gone on every member, including the old leader once it is back.
    cluster.spawn(leader);
    cluster.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for (index, endpoint) in endpoints.iter().enumerate() {
        loop {
            let present = present_on(endpoint, "fo/").await;
            if present.as_ref().is_some_and(BTreeSet::is_empty) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {index} still has lease keys: {present:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut client = cluster.client(survivor).await;
    let live = listed(&mut client).await;
    let stale: Vec<&i64> = leases.iter().filter(|lease| live.contains(lease)).collect();
    assert!(stale.is_empty(), "expired leases still listed: {stale:?}");
}
