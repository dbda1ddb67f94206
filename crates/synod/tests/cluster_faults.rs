//! A 3-member cluster of real processes under crashes: writes through any member,
//! leader failover, whole-cluster crash, and catch-up by snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, Cluster};
use etcd_client::{Client, GetOptions};
use tokio::task::JoinSet;

/// Writes unique keys `{prefix}{writer}-{n}` until `stop`, rotating to the next
/// endpoint after a failure. Returns the writes that were acknowledged.
async fn writer(
    id: usize,
    prefix: String,
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let mut endpoint = id % endpoints.len();
    let mut client: Option<Client> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if client.is_none() {
            client = Client::connect(
                [endpoints[endpoint].clone()],
                Some(
                    etcd_client::ConnectOptions::new()
                        .with_connect_timeout(Duration::from_millis(500))
                        .with_timeout(Duration::from_secs(3)),
                ),
            )
            .await
            .ok();
        }
        let Some(connected) = client.as_mut() else {
            endpoint = (endpoint + 1) % endpoints.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let key = format!("{prefix}{id}-{sequence:06}");
        let value = format!("value-{id}-{sequence}");
        sequence += 1;
        match connected.put(key.clone(), value.clone(), None).await {
            Ok(_) => acknowledged.push((key, value)),
            Err(_) => {
                client = None;
                endpoint = (endpoint + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    acknowledged
}

fn start_writers(
    count: usize,
    prefix: &str,
    endpoints: &[String],
    stop: &Arc<AtomicBool>,
) -> JoinSet<Vec<(String, String)>> {
    let mut writers = JoinSet::new();
    for id in 0..count {
        writers.spawn(writer(
            id,
            prefix.to_string(),
            endpoints.to_vec(),
            stop.clone(),
        ));
    }
    writers
}

async fn collect(mut writers: JoinSet<Vec<(String, String)>>) -> Vec<(String, String)> {
    let mut all = Vec::new();
    while let Some(result) = writers.join_next().await {
        all.extend(result.expect("writer task"));
    }
    all
}

/// Reads every key under `prefix` through member `index`, linearizably.
async fn read_all(cluster: &Cluster, index: usize, prefix: &str) -> BTreeMap<String, String> {
    let mut client = cluster.client(index).await;
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("read back");
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn assert_all_present(
    acknowledged: &[(String, String)],
    stored: &BTreeMap<String, String>,
    context: &str,
) {
    let missing: Vec<&(String, String)> = acknowledged
        .iter()
        .filter(|(key, value)| stored.get(key) != Some(value))
        .collect();
    assert!(
        missing.is_empty(),
        "{context}: {} of {} acknowledged writes missing or wrong, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_member_are_read_through_every_member() {
    let mut cluster = Cluster::start(3, &[]).await;
    for index in 0..3 {
        let mut client = cluster.client(index).await;
        client
            .put(
                format!("via-{index}"),
                format!("written through m{index}"),
                None,
            )
            .await
            .expect("put through member");
    }
    for index in 0..3 {
        let stored = read_all(&cluster, index, "via-").await;
        assert_eq!(stored.len(), 3, "member {index} sees {stored:?}");
        for writer in 0..3 {
            assert_eq!(
                stored[&format!("via-{writer}")],
                format!("written through m{writer}")
            );
        }
    }
    // Serializable reads are served locally; every member has applied the writes.
    for index in 0..3 {
        let mut client = cluster.client(index).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = client
                .get(
                    "via-",
                    Some(GetOptions::new().with_prefix().with_serializable()),
                )
                .await
                .expect("serializable read");
            if response.count() == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {index} never applied the writes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let revision = cluster
        .client(0)
        .await
        .get("via-0", None)
        .await
        .expect("read")
        .header()
        .expect("header")
        .revision();
    cluster.assert_replicas_agree(revision).await;
    for index in 0..3 {
        assert!(
            cluster.terminate(index),
            "member {index} did not exit cleanly on SIGTERM"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_during_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(6, "failover/", &cluster.endpoints(), &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let leader = cluster.leader().await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    let survivor = (leader + 1) % 3;
    let mut probe = connect(&[cluster.members[survivor].endpoint()]).await;
    let deadline = killed_at + Duration::from_secs(15);
    loop {
        if probe.put("failover-probe", "up", None).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leader served a write within 15 s of the crash"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failover = killed_at.elapsed();
    assert!(
        failover < Duration::from_secs(8),
        "failover took {failover:?}"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = collect(writers).await;
    assert!(
        acknowledged.len() > 20,
        "too few writes acknowledged: {}",
        acknowledged.len()
    );

    let stored = read_all(&cluster, survivor, "failover/").await;
    assert_all_present(&acknowledged, &stored, "after leader crash");

    cluster.spawn(leader);
    cluster.wait_ready().await;
    let stored = read_all(&cluster, leader, "failover/").await;
    assert_all_present(&acknowledged, &stored, "on the restarted old leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_crash_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(6, "crash/", &cluster.endpoints(), &stop);
    tokio::time::sleep(Duration::from_millis(2000)).await;

    // SIGKILL all three before reaping any, so none outlives the others.
    for index in 0..3 {
        cluster.signal(index, nix::sys::signal::Signal::SIGKILL);
    }
    for index in 0..3 {
        cluster.kill(index);
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = collect(writers).await;
    assert!(
        acknowledged.len() > 20,
        "too few writes acknowledged: {}",
        acknowledged.len()
    );

    for index in 0..3 {
        cluster.spawn(index);
    }
    cluster.wait_ready().await;
    for index in 0..3 {
        let stored = read_all(&cluster, index, "crash/").await;
        assert_all_present(
            &acknowledged,
            &stored,
            &format!("member {index} after restart"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(
        3,
        &["--snapshot-count", "50", "--snapshot-catchup-entries", "5"],
    )
    .await;
    let follower = cluster.follower().await;
    assert!(cluster.terminate(follower), "follower did not stop cleanly");

    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    let total = 300;
    for n in 0..total {
        client
            .put(format!("lag/{n:04}"), format!("v{n}"), None)
            .await
            .expect("put while follower is down");
    }

    cluster.spawn(follower);
    let mut lagging = cluster.client(follower).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = lagging
            .get(
                "lag/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_serializable()
                        .with_count_only(),
                ),
            )
            .await;
        if matches!(&response, Ok(response) if response.count() == total) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "follower never caught up: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster
            .log_text(follower)
            .contains("installed snapshot from leader"),
        "the follower caught up without a snapshot, so the test did not exercise one"
    );
    let stored = read_all(&cluster, follower, "lag/").await;
    assert_eq!(stored.len(), total as usize);
    assert_eq!(stored["lag/0299"], "v299");
    // The installed snapshot carries the whole retained history, not just the
    // latest values: the replicas hash the same at every revision.
    let revision = client
        .get("lag/0299", None)
        .await
        .expect("read")
        .header()
        .expect("header")
        .revision();
    cluster.assert_replicas_agree(revision).await;
    cluster.assert_replicas_agree(revision / 2).await;
}

/// Writes sent to a follower concurrently travel to the leader in shared forwards;
/// each must still get its own answer: its own revision, or its own refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_each_get_their_own_answer() {
    let cluster = Cluster::start(3, &[]).await;
    let follower = (cluster.leader().await + 1) % 3;
    let endpoint = cluster.members[follower].endpoint();
    let mut writes = JoinSet::new();
    for connection in 0..4 {
        let client = connect(std::slice::from_ref(&endpoint)).await;
        for n in 0..50 {
            let mut client = client.clone();
            writes.spawn(async move {
                let key = format!("burst/{connection}-{n:02}");
                // Every fifth write names a lease that does not exist.
                let options = (n % 5 == 0)
                    .then(|| etcd_client::PutOptions::new().with_lease(0x5eed_0000 + n));
                let outcome = client.put(key.clone(), format!("v{n}"), options).await;
                (
                    key,
                    n % 5 == 0,
                    outcome.map(|response| response.header().expect("header").revision()),
                )
            });
        }
    }
    let mut revisions = BTreeMap::new();
    while let Some(joined) = writes.join_next().await {
        let (key, refused, outcome) = joined.expect("write task");
        match outcome {
            Ok(revision) => {
                assert!(!refused, "{key}: a put with a missing lease succeeded");
                assert!(revisions.insert(revision, key).is_none(), "revision reused");
            }
            Err(error) => {
                assert!(refused, "{key}: {error}");
                assert!(
                    error.to_string().contains("requested lease not found"),
                    "{key}: {error}"
                );
            }
        }
    }
    assert_eq!(
        revisions.len(),
        160,
        "every valid write got its own revision"
    );
    // Each acknowledged write is where its revision says, read through the follower.
    let mut client = connect(&[endpoint]).await;
    for (revision, key) in &revisions {
        let response = client.get(key.as_str(), None).await.expect("read");
        assert_eq!(response.kvs()[0].mod_revision(), *revision, "{key}");
    }
    let stored = read_all(&cluster, follower, "burst/").await;
    assert_eq!(stored.len(), 160);
}
