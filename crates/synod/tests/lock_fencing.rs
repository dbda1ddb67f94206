//! Fenced locks under failure: clients increment a counter under a lock, each write
//! guarded by the lock's fencing token, while the leader is killed and one client
//! process is frozen (SIGSTOP) past its lease and then thawed. Mutual exclusion
//! shows in the counter's history (every write is the previous value plus one), and
//! the frozen holder's guarded write is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{synod_binary, Cluster};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use synod_client::mvccpb::event::EventType;
use synod_client::{Client, ClientError};

const LOCK: &str = "fenced-lock";
const COUNTER: &str = "fenced/counter";
const IN_PROCESS_CLIENTS: usize = 9;
const ITERATIONS_PER_CLIENT: u64 = 22;
const LEASE_TTL: i64 = 3;

#[derive(Default)]
struct Tally {
    succeeded: AtomicU64,
    /// Guarded writes refused while their holder's lease was kept alive: a bug.
    refused: AtomicU64,
    /// Guarded writes refused after their holder's keep-alive had given up (a
    /// failover outlasted its 2 s wait): the lease may have expired, and the
    /// refusal is right.
    refused_after_keep_alive_stopped: AtomicU64,
    unknown: AtomicU64,
}

/// Keeps a lease alive in the background; the flag drops when it stops.
fn keep_alive(client: Client, lease: i64, alive: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let Ok(mut keeper) = client.lease_keep_alive(lease).await else {
            alive.store(false, Ordering::Relaxed);
            return;
        };
        while alive.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_secs(2), keeper.keep_alive()).await {
                Ok(Ok(ttl)) if ttl > 0 => tokio::time::sleep(Duration::from_millis(500)).await,
                _ => break,
            }
        }
        alive.store(false, Ordering::Relaxed);
    });
}

async fn increment_loop(endpoints: Vec<String>, tally: Arc<Tally>) {
    let client = Client::connect(&endpoints).unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut done = 0;
    let mut session: Option<(i64, Arc<AtomicBool>)> = None;
    while done < ITERATIONS_PER_CLIENT {
        assert!(
            Instant::now() < deadline,
            "client stuck: {done} iterations done"
        );
        if session
            .as_ref()
            .is_none_or(|(_, alive)| !alive.load(Ordering::Relaxed))
        {
            match client.lease_grant(LEASE_TTL, 0).await {
                Ok((lease, _)) => {
                    let alive = Arc::new(AtomicBool::new(true));
                    keep_alive(client.clone(), lease, alive.clone());
                    session = Some((lease, alive));
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let (lease, alive) = session.clone().unwrap();
        let fence =
            match tokio::time::timeout(Duration::from_secs(20), client.lock(LOCK, lease)).await {
                Ok(Ok(fence)) => fence,
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
        let value: u64 = match client.get(COUNTER).await {
            Ok(Some(value)) => String::from_utf8(value).unwrap().parse().unwrap(),
            Ok(None) => 0,
            Err(_) => {
                release(&client, &fence).await;
                continue;
            }
        };
        match client
            .fenced_put(&fence, COUNTER, (value + 1).to_string())
            .await
        {
            Ok(_) => {
                tally.succeeded.fetch_add(1, Ordering::Relaxed);
                done += 1;
            }
            Err(ClientError::StaleFence { .. }) if alive.load(Ordering::Relaxed) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::StaleFence { .. }) => {
                tally
                    .refused_after_keep_alive_stopped
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                tally.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        release(&client, &fence).await;
    }
    if let Some((lease, alive)) = session {
        alive.store(false, Ordering::Relaxed);
        let _ = client.lease_revoke(lease).await;
    }
}

/// Unlocks, retrying through failovers (a lock left held would stall everyone
/// until its lease expired).
async fn release(client: &Client, fence: &synod_client::Fence) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.unlock(fence).await.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_counter_survives_leader_crash_and_a_frozen_holder() {
    let mut cluster = Cluster::start(3, &[]).await;
    let endpoints = cluster.endpoints();
    let joined = endpoints.join(",");
    let client = Client::connect(&endpoints).unwrap();
    client.put(COUNTER, "0", 0).await.unwrap();

    // The client process that will be frozen while it holds the lock.
    let synod = synod_binary().display().to_string();
    let script = format!(
        "echo holding; sleep 2; v=$({synod} get {COUNTER} --endpoints {joined}); \
         {synod} put {COUNTER} $((v+1)) --endpoints {joined} \
         --fence-key \"$SYNOD_LOCK_KEY\" --fence-token \"$SYNOD_LOCK_TOKEN\"; echo \"put exit $?\""
    );
    let mut frozen = Command::new(synod_binary())
        .args([
            "lock",
            LOCK,
            "--ttl",
            "2",
            "--endpoints",
            &joined,
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn synod lock");
    let group = Pid::from_raw(frozen.id() as i32);
    let mut lines = BufReader::new(frozen.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || {
        let line = lines.next();
        (line, lines)
    });
    let (first_line, lines) = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("the frozen client never took the lock")
        .unwrap();
    assert_eq!(first_line.unwrap().unwrap(), "holding");
    killpg(group, Signal::SIGSTOP).expect("SIGSTOP the client");

    // Everyone else queues behind the frozen holder until its lease expires.
    let tally = Arc::new(Tally::default());
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..IN_PROCESS_CLIENTS {
        clients.spawn(increment_loop(endpoints.clone(), tally.clone()));
    }

    // Past the frozen client's lease: the lock must have moved on.
    let frozen_at = Instant::now();
    let moved_on = Instant::now() + Duration::from_secs(20);
    while tally.succeeded.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < moved_on,
            "the lock never passed on from the frozen holder"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        frozen_at.elapsed() >= Duration::from_secs(1),
        "the lock passed on while its holder's lease was alive"
    );

    // Kill the leader once, mid-run, and bring it back.
    while tally.succeeded.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = cluster.leader().await;
    cluster.kill(leader);

    // Thaw the frozen client: its guarded write must be refused.
    killpg(group, Signal::SIGCONT).expect("SIGCONT the client");
    let rest =
        tokio::task::spawn_blocking(move || lines.map_while(Result::ok).collect::<Vec<String>>());
    let output = tokio::time::timeout(Duration::from_secs(60), rest)
        .await
        .expect("the thawed client never finished")
        .unwrap();
    let status = frozen.wait().expect("wait for synod lock");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut frozen.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        output.iter().any(|line| line == "put exit 1"),
        "the stale holder's guarded write was not refused: {output:?} {stderr}"
    );
    assert!(
        stderr.contains("is stale"),
        "no stale-token error: {stderr}"
    );
    let _ = status;

    cluster.spawn(leader);
    while let Some(result) = clients.join_next().await {
        result.expect("client task");
    }
    cluster.wait_ready().await;

    // The counter's whole history: every write is the previous value plus one, so
    // no two holders ever interleaved, and no write was lost. Read through fresh
    // connections: the first client's one to the killed member broke with it.
    let client = Client::connect(&endpoints).unwrap();
    let mut history = client.watch(COUNTER, Vec::new(), 1, false).await.unwrap();
    let final_value: u64 = String::from_utf8(client.get(COUNTER).await.unwrap().unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let mut values = Vec::new();
    while values.last() != Some(&final_value) {
        let response = tokio::time::timeout(Duration::from_secs(10), history.next())
            .await
            .expect("history replay stalled")
            .unwrap()
            .expect("watch closed");
        for event in response.events {
            assert_eq!(event.r#type, EventType::Put as i32);
            let value: u64 = String::from_utf8(event.kv.unwrap().value)
                .unwrap()
                .parse()
                .unwrap();
            values.push(value);
        }
    }
    let expected: Vec<u64> = (0..=final_value).collect();
    assert_eq!(values, expected, "the counter skipped or repeated a value");

    let succeeded = tally.succeeded.load(Ordering::Relaxed);
    let unknown = tally.unknown.load(Ordering::Relaxed);
    eprintln!(
        "guarded writes: {succeeded} acknowledged, {unknown} unknown, {} refused after their keep-alive stopped",
        tally.refused_after_keep_alive_stopped.load(Ordering::Relaxed)
    );
    assert!(
        final_value >= succeeded && final_value <= succeeded + unknown,
        "counter {final_value}, acknowledged guarded writes {succeeded}, unknown outcomes {unknown}"
    );
    assert_eq!(
        tally.refused.load(Ordering::Relaxed),
        0,
        "a live holder's guarded write was refused ({} more after their keep-alive stopped)",
        tally
            .refused_after_keep_alive_stopped
            .load(Ordering::Relaxed)
    );
}

/// A contender whose lease expires while it waits in line is told so when its turn
/// comes, and never gets the lock (the flaw Jepsen found in etcd 3.4.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_whose_lease_expired_never_gets_the_lock() {
    let cluster = Cluster::start(3, &[]).await;
    let holder = Client::connect(&cluster.endpoints()).unwrap();
    let (holder_lease, _) = holder.lease_grant(10, 0).await.unwrap();
    let fence = holder.lock("expiry-lock", holder_lease).await.unwrap();

    let follower = cluster.follower().await;
    let waiter = Client::connect(&[cluster.members[follower].endpoint()]).unwrap();
    let (waiter_lease, ttl) = waiter.lease_grant(2, 0).await.unwrap();
    assert_eq!(ttl, 2);
    let waiting = tokio::spawn(async move { waiter.lock("expiry-lock", waiter_lease).await });

    // The waiter's lease runs out while the lock is still held.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lease = holder
            .lease_time_to_live(waiter_lease, false)
            .await
            .unwrap();
        if lease.ttl == -1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the waiter's lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !waiting.is_finished(),
        "the waiter got an answer while the lock was held"
    );

    holder.unlock(&fence).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter was never answered")
        .unwrap();
    match outcome {
        Err(ClientError::Status(status)) => assert_eq!(status.message(), "session expired"),
        other => panic!("a contender with an expired lease was answered {other:?}"),
    }
    // Nobody holds the lock now: the next contender gets it at once.
    let next = holder.lock("expiry-lock", holder_lease).await.unwrap();
    assert!(next.token > fence.token, "tokens grow with every grant");
}
