//! Linearizability under crashes and pauses: concurrent clients read, write and
//! compare-and-swap a few keys while the leader is killed and restarted and a
//! follower is paused; the recorded history must have a linearization.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use synod_check::{
    check_linearizable, check_revisions_monotonic, Event, Operation, Outcome, RevisionObservation,
};

const KEYS: [&str; 3] = ["lin/a", "lin/b", "lin/c"];
const CLIENTS: usize = 8;
const RUN_TIME: Duration = Duration::from_secs(8);

async fn connect_to(endpoint: &str) -> Option<Client> {
    Client::connect(
        [endpoint],
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(3)),
        ),
    )
    .await
    .ok()
}

/// One client: random operations on random keys, each recorded with its call and
/// return times (microseconds since `start`).
async fn client_loop(
    id: usize,
    seed: u64,
    endpoints: Vec<String>,
    start: Instant,
    run_time: Duration,
    history: Arc<Mutex<Vec<Event>>>,
    revisions: Arc<Mutex<Vec<RevisionObservation>>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut endpoint = id % endpoints.len();
    let mut client: Option<Client> = None;
    let mut sequence = 0u64;
    let mut last_seen: Vec<Option<String>> = vec![None; KEYS.len()];
    let micros =
        |instant: Instant| u64::try_from(instant.duration_since(start).as_micros()).unwrap();
    while start.elapsed() < run_time {
        if client.is_none() {
            client = connect_to(&endpoints[endpoint]).await;
            if client.is_none() {
                endpoint = (endpoint + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let connected = client.as_mut().unwrap();
        let slot = rng.random_range(0..KEYS.len());
        let key = KEYS[slot];
        let choice = rng.random_range(0..10);
        sequence += 1;
        let value = format!("c{id}-{sequence}");
        let call = Instant::now();
        let mut revision = None;
        let (operation, outcome) = if choice < 4 {
            let result = connected.get(key, None).await;
            match result {
                Ok(response) => {
                    revision = response.header().map(|header| header.revision());
                    let seen = response
                        .kvs()
                        .first()
                        .map(|kv| kv.value_str().unwrap().to_string());
                    last_seen[slot] = seen.clone();
                    (Operation::Get, Outcome::Value(seen))
                }
                // A failed read has no effect: leave it out of the history.
                Err(_) => (Operation::Get, Outcome::Unknown),
            }
        } else if choice < 7 {
            match connected.put(key, value.clone(), None).await {
                Ok(response) => {
                    revision = response.header().map(|header| header.revision());
                    (Operation::Put(value), Outcome::Done)
                }
                Err(_) => (Operation::Put(value), Outcome::Unknown),
            }
        } else {
            let expected = last_seen[slot].clone();
            let compare = match &expected {
                Some(expected) => Compare::value(key, CompareOp::Equal, expected.clone()),
                None => Compare::create_revision(key, CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, value.clone(), None)]);
            let operation = Operation::CompareAndSwap {
                expected,
                new: value,
            };
            match connected.txn(txn).await {
                Ok(response) => {
                    revision = response.header().map(|header| header.revision());
                    (operation, Outcome::Swapped(response.succeeded()))
                }
                Err(_) => (operation, Outcome::Unknown),
            }
        };
        let ret = Instant::now();
        if outcome == Outcome::Unknown {
            client = None;
            endpoint = (endpoint + 1) % endpoints.len();
            if operation == Operation::Get {
                continue;
            }
        }
        if let Some(revision) = revision {
            revisions.lock().unwrap().push(RevisionObservation {
                call: micros(call),
                ret: micros(ret),
                revision,
            });
        }
        history.lock().unwrap().push(Event {
            key: key.to_string(),
            operation,
            call: micros(call),
            ret: micros(ret),
            outcome,
        });
    }
}

/// The seed of a run: `SYNOD_TEST_SEED` to replay one, else a fresh one (printed).
fn seed() -> u64 {
    let seed: u64 = std::env::var("SYNOD_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("seed {seed} (replay with SYNOD_TEST_SEED={seed})");
    seed
}

/// Runs the clients against `cluster` for `run_time` while `faults` plays out, then
/// checks the history.
async fn check_workload(
    endpoints: Vec<String>,
    run_time: Duration,
    faults: impl std::future::Future<Output = ()>,
) {
    let seed = seed();
    let history = Arc::new(Mutex::new(Vec::new()));
    let revisions = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..CLIENTS {
        clients.spawn(client_loop(
            id,
            seed.wrapping_add(id as u64),
            endpoints.clone(),
            start,
            run_time,
            history.clone(),
            revisions.clone(),
        ));
    }
    faults.await;
    while let Some(result) = clients.join_next().await {
        result.expect("client task");
    }
    let history = history.lock().unwrap().clone();
    let answered = history
        .iter()
        .filter(|event| event.outcome != Outcome::Unknown)
        .count();
    assert!(answered > 200, "too few operations answered: {answered}");
    let checking = Instant::now();
    if let Err(violation) = check_linearizable(&history) {
        panic!("seed {seed}: {violation}");
    }
    if let Err(regression) = check_revisions_monotonic(&revisions.lock().unwrap()) {
        panic!("seed {seed}: the store's revision went backwards: {regression:?}");
    }
    println!(
        "{} operations ({answered} answered) linearizable; checked in {:?}",
        history.len(),
        checking.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_history_is_linearizable_across_crash_and_pause() {
    let mut cluster = Cluster::start(3, &[]).await;
    let endpoints = cluster.endpoints();
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let faults = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.spawn(leader);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.signal(follower, Signal::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.signal(follower, Signal::SIGCONT);
    };
    check_workload(endpoints, RUN_TIME, faults).await;
}

/// Partitions through the peer proxy on a 5-member cluster: the leader isolated,
/// a 2/3 split, and one-way loss from the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_history_is_linearizable_across_partitions() {
    let cluster = Cluster::start_behind_proxy(5, &[]).await;
    let endpoints = cluster.endpoints();
    let faults = async {
        let everyone: Vec<usize> = (0..5).collect();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let leader = cluster.leader().await;
        let others: Vec<usize> = everyone
            .iter()
            .copied()
            .filter(|index| *index != leader)
            .collect();
        cluster.proxy().partition(&[leader], &others);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.proxy().heal();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        cluster.proxy().partition(&[0, 1], &[2, 3, 4]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.proxy().heal();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let leader = cluster.leader().await;
        for other in everyone.iter().filter(|index| **index != leader) {
            cluster.proxy().cut(leader, *other);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.proxy().heal();
    };
    check_workload(endpoints, Duration::from_secs(10), faults).await;
}

/// Rounds of "pause a follower, write through the leader, read through the paused
/// follower, resume it" — the read is queued at the follower while it lags.
async fn reads_from_a_lagging_follower(
    extra_args: &[&str],
) -> (Vec<Event>, Vec<RevisionObservation>) {
    let cluster = Cluster::start(3, extra_args).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let start = Instant::now();
    let micros =
        |instant: Instant| u64::try_from(instant.duration_since(start).as_micros()).unwrap();
    let mut writer = cluster.client(leader).await;
    let reader = cluster.client(follower).await;
    let mut history = Vec::new();
    let mut revisions = Vec::new();
    for round in 0..5 {
        cluster.signal(follower, Signal::SIGSTOP);
        for i in 0..5 {
            let value = format!("r{round}-{i}");
            let call = Instant::now();
            let written = writer
                .put("lag/key", value.clone(), None)
                .await
                .expect("write through the leader");
            let ret = Instant::now();
            revisions.push(RevisionObservation {
                call: micros(call),
                ret: micros(ret),
                revision: written.header().expect("header").revision(),
            });
            history.push(Event {
                key: "lag/key".into(),
                operation: Operation::Put(value),
                call: micros(call),
                ret: micros(ret),
                outcome: Outcome::Done,
            });
        }
        let mut paused_reader = reader.clone();
        let call = Instant::now();
        let read = tokio::spawn(async move { paused_reader.get("lag/key", None).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.signal(follower, Signal::SIGCONT);
        let response = read.await.unwrap().expect("read through the follower");
        let ret = Instant::now();
        revisions.push(RevisionObservation {
            call: micros(call),
            ret: micros(ret),
            revision: response.header().expect("header").revision(),
        });
        history.push(Event {
            key: "lag/key".into(),
            operation: Operation::Get,
            call: micros(call),
            ret: micros(ret),
            outcome: Outcome::Value(
                response
                    .kvs()
                    .first()
                    .map(|kv| kv.value_str().unwrap().to_string()),
            ),
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (history, revisions)
}

/// The checker is not vacuous: with reads that skip the read index (a test-only
/// switch that breaks the contract), the lagging follower's stale reads are caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_reads_without_read_index() {
    let (history, revisions) = reads_from_a_lagging_follower(&["--unsafe-skip-read-index"]).await;
    assert!(
        check_linearizable(&history).is_err(),
        "stale follower reads went unnoticed: {history:?}"
    );
    assert!(
        check_revisions_monotonic(&revisions).is_err(),
        "stale follower revisions went unnoticed: {revisions:?}"
    );
}

/// The same scenario with the read index: every read is linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_reads_stay_linearizable() {
    let (history, revisions) = reads_from_a_lagging_follower(&[]).await;
    if let Err(violation) = check_linearizable(&history) {
        panic!("{violation}");
    }
    if let Err(regression) = check_revisions_monotonic(&revisions) {
        panic!("the store's revision went backwards: {regression:?}");
    }
}
