//! Crash consistency: members are SIGKILLed at random moments of a write-heavy
//! workload (several concurrent writers of puts, deletes and two-key
//! transactions; the kill lands after a random delay, anywhere in the write
//! path), then restarted — one member alone, and three members where the victim
//! is the leader, a random member, or the whole cluster at once. After every
//! restart: the store opens; every acknowledged write is in the store's history
//! at its revision (so it is the key's value or was superseded by a later
//! change); revisions never went backwards; and with three members, every
//! replica hashes the same.
//!
//! The seed (`SYNOD_TEST_SEED`, or a fixed default) decides the delays and the
//! victims; a failure prints it with the command that replays the run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use synod_check::{
    check_acknowledged_writes, check_revisions_monotonic, Change, RevisionObservation,
};
use synod_harness::history::{check_history_against_ranges, read_history};
use synod_harness::{quick_client, replay_test_command, seed_from_env, Cluster, SeededRng};
use tokio::task::JoinSet;

/// The seed when `SYNOD_TEST_SEED` is not set.
const DEFAULT_SEED: u64 = 7_340_033;

/// Every key of the test starts with it.
const PREFIX: &str = "crash/";

/// Concurrent writers.
const WRITERS: usize = 6;

/// Keys each writer overwrites in turn, so that most writes are superseded.
const KEYS_PER_WRITER: usize = 4;

/// How long one write may take before its outcome counts as unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// When the kill lands, after the writers start.
const KILL_DELAY_MIN: Duration = Duration::from_millis(50);
const KILL_DELAY_MAX: Duration = Duration::from_millis(1500);

/// What the writers saw, in one place for the whole test.
#[derive(Default)]
struct Recorded {
    acknowledged: Vec<Change>,
    revisions: Vec<RevisionObservation>,
}

struct Test {
    seed: u64,
    replay: String,
    start: Instant,
    recorded: Arc<Mutex<Recorded>>,
}

impl Test {
    fn new(test_name: &str) -> Test {
        let seed = seed_from_env(DEFAULT_SEED);
        let replay = replay_test_command("crash_consistency", test_name, seed);
        println!("seed {seed}; replay with: {replay}");
        Test {
            seed,
            replay,
            start: Instant::now(),
            recorded: Arc::default(),
        }
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap()
    }

    #[track_caller]
    fn fail(&self, message: impl std::fmt::Display) -> ! {
        panic!(
            "{message}\nseed {}; replay with: {}",
            self.seed, self.replay
        )
    }

    /// Starts the writers of one round.
    fn start_writers(
        &self,
        round: usize,
        endpoints: &[String],
        stop: &Arc<AtomicBool>,
    ) -> JoinSet<()> {
        let mut writers = JoinSet::new();
        for id in 0..WRITERS {
            writers.spawn(writer(
                id,
                round,
                SeededRng::derive(self.seed, (round * WRITERS + id) as u64 + 100),
                endpoints.to_vec(),
                stop.clone(),
                self.start,
                self.recorded.clone(),
            ));
        }
        writers
    }

    /// Writes a marker under the prefix through member `index` and returns its
    /// revision (a revision the history must reach), recording the observation.
    async fn marker(&self, cluster: &Cluster, index: usize, name: &str) -> i64 {
        let mut client = cluster
            .client(index)
            .await
            .unwrap_or_else(|error| self.fail(error));
        let call = self.micros();
        let response = client
            .put(format!("{PREFIX}marker"), name, None)
            .await
            .unwrap_or_else(|error| self.fail(format!("the marker write failed: {error}")));
        let revision = response.header().expect("header").revision();
        let mut recorded = self.recorded.lock().unwrap();
        recorded.revisions.push(RevisionObservation {
            call,
            ret: self.micros(),
            revision,
        });
        recorded
            .acknowledged
            .push(Change::put(revision, format!("{PREFIX}marker"), name));
        revision
    }

    /// The checks after a restart: every member answers at a revision no older
    /// than any acknowledged, every acknowledged write is in the history, and
    /// (several members) the replicas hash the same.
    async fn verify(&self, cluster: &Cluster, round: usize) {
        let members = cluster.live_members();
        for index in &members {
            let mut client = cluster
                .client(*index)
                .await
                .unwrap_or_else(|error| self.fail(error));
            let call = self.micros();
            let response = client
                .get(format!("{PREFIX}marker"), None)
                .await
                .unwrap_or_else(|error| {
                    self.fail(format!("member {index} does not answer: {error}"))
                });
            self.recorded
                .lock()
                .unwrap()
                .revisions
                .push(RevisionObservation {
                    call,
                    ret: self.micros(),
                    revision: response.header().expect("header").revision(),
                });
        }
        let through = self
            .marker(
                cluster,
                members[round % members.len()],
                &format!("round {round}"),
            )
            .await;
        let mut client = cluster
            .client(members[0])
            .await
            .unwrap_or_else(|error| self.fail(error));
        let history = read_history(&mut client, PREFIX, through)
            .await
            .unwrap_or_else(|error| self.fail(format!("round {round}: {error}")));
        let verdict = {
            let recorded = self.recorded.lock().unwrap();
            check_acknowledged_writes(&recorded.acknowledged, &history)
                .map_err(|lost| lost.to_string())
                .and_then(|()| {
                    check_revisions_monotonic(&recorded.revisions).map_err(|regression| {
                        format!("the store's revision went backwards: {regression:?}")
                    })
                })
        };
        if let Err(failure) = verdict {
            self.fail(format!("round {round}: {failure}"));
        }
        if members.len() > 1 {
            if let Err(error) = cluster.check_replicas_agree(through).await {
                self.fail(format!("round {round}: {error}"));
            }
        }
        println!(
            "round {round}: {} acknowledged writes all in a history of {} changes up to revision {through}",
            self.recorded.lock().unwrap().acknowledged.len(),
            history.len()
        );
    }

    /// Restarts `victims` and waits until the cluster answers; fails at once if a
    /// member exits (its store did not open).
    async fn restart(&self, cluster: &mut Cluster, victims: &[usize], round: usize) {
        for index in victims {
            cluster
                .spawn(*index)
                .unwrap_or_else(|error| self.fail(error));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some((index, status)) = cluster.exited_members().into_iter().next() {
            self.fail(format!(
                "round {round}: {}",
                cluster.exited_error(index, status)
            ));
        }
        if let Err(error) = cluster.wait_ready().await {
            let exited = cluster.exited_members();
            let detail = match exited.into_iter().next() {
                Some((index, status)) => cluster.exited_error(index, status).to_string(),
                None => String::new(),
            };
            self.fail(format!(
                "round {round}: the cluster did not come back: {error}\n{detail}"
            ));
        }
    }

    /// One round: writers start, a random delay later `victims` are SIGKILLed
    /// (all at once), the writers stop, the victims restart, and everything is
    /// checked.
    async fn round(
        &self,
        cluster: &mut Cluster,
        round: usize,
        victims: &[usize],
        rng: &mut SeededRng,
    ) {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = self.start_writers(round, &cluster.live_endpoints(), &stop);
        let delay = rng.duration_between(KILL_DELAY_MIN, KILL_DELAY_MAX);
        tokio::time::sleep(delay).await;
        cluster.kill_all_at_once(victims);
        // The writers go on a little against the dead members and the survivors.
        tokio::time::sleep(rng.duration_between(Duration::ZERO, Duration::from_millis(300))).await;
        stop.store(true, Ordering::SeqCst);
        writers.join_all().await;
        println!(
            "round {round}: killed {victims:?} {} ms into the writes",
            delay.as_millis()
        );
        self.restart(cluster, victims, round).await;
        self.verify(cluster, round).await;
    }

    /// The final check: the history also agrees with ranges of the store.
    async fn finish(&self, cluster: &Cluster) {
        let through = self.marker(cluster, 0, "end").await;
        let mut client = cluster
            .client(0)
            .await
            .unwrap_or_else(|error| self.fail(error));
        let history = read_history(&mut client, PREFIX, through)
            .await
            .unwrap_or_else(|error| self.fail(error));
        if let Err(error) = check_history_against_ranges(&mut client, PREFIX, &history).await {
            self.fail(error);
        }
        let acknowledged = self.recorded.lock().unwrap().acknowledged.len();
        assert!(
            acknowledged > 200,
            "only {acknowledged} writes were acknowledged: the kills proved little"
        );
    }
}

/// One writer: puts, deletes and two-key transactions on its own keys through
/// random members until `stop`; records every acknowledged change.
async fn writer(
    id: usize,
    round: usize,
    mut rng: SeededRng,
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    start: Instant,
    recorded: Arc<Mutex<Recorded>>,
) {
    let micros = || u64::try_from(start.elapsed().as_micros()).unwrap();
    let mut clients: HashMap<usize, Client> = HashMap::new();
    let mut sequence = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let member = rng.below(endpoints.len());
        let client = match clients.get(&member) {
            Some(client) => client.clone(),
            None => match quick_client(&endpoints[member], REQUEST_TIMEOUT).await {
                Some(client) => {
                    clients.insert(member, client.clone());
                    client
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        sequence += 1;
        let key = format!("{PREFIX}w{id}/k{}", sequence % KEYS_PER_WRITER);
        let value = format!("r{round}-w{id}-{sequence}");
        let call = micros();
        let outcome = match rng.below(10) {
            0 => delete(client, &key).await,
            1 => pair(client, id, &value).await,
            _ => put(client, &key, &value).await,
        };
        let ret = micros();
        match outcome {
            Some((revision, changes)) => {
                let mut recorded = recorded.lock().unwrap();
                recorded.revisions.push(RevisionObservation {
                    call,
                    ret,
                    revision,
                });
                recorded.acknowledged.extend(changes);
            }
            None => {
                clients.remove(&member);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn put(mut client: Client, key: &str, value: &str) -> Option<(i64, Vec<Change>)> {
    let revision = client
        .put(key, value, None)
        .await
        .ok()?
        .header()?
        .revision();
    Some((revision, vec![Change::put(revision, key, value)]))
}

async fn delete(mut client: Client, key: &str) -> Option<(i64, Vec<Change>)> {
    let response = client.delete(key, None).await.ok()?;
    let revision = response.header()?.revision();
    let changes = if response.deleted() > 0 {
        vec![Change::delete(revision, key)]
    } else {
        Vec::new()
    };
    Some((revision, changes))
}

/// A transaction writing two keys at one revision: both must survive, or neither
/// was acknowledged.
async fn pair(mut client: Client, id: usize, value: &str) -> Option<(i64, Vec<Change>)> {
    let (left, right) = (
        format!("{PREFIX}w{id}/pair-a"),
        format!("{PREFIX}w{id}/pair-b"),
    );
    let txn = Txn::new().and_then([
        TxnOp::put(left.as_str(), value, None),
        TxnOp::put(right.as_str(), value, None),
    ]);
    let revision = client.txn(txn).await.ok()?.header()?.revision();
    Some((
        revision,
        vec![
            Change::put(revision, left, value),
            Change::put(revision, right, value),
        ],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_survives_sigkill_mid_write() {
    const ROUNDS: usize = 12;
    let test = Test::new("single_member_survives_sigkill_mid_write");
    let mut rng = SeededRng::derive(test.seed, 1);
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_synod"), 1, &[])
        .await
        .unwrap_or_else(|error| test.fail(error));
    for round in 0..ROUNDS {
        test.round(&mut cluster, round, &[0], &mut rng).await;
    }
    test.finish(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_sigkill_mid_write() {
    const ROUNDS: usize = 10;
    let test = Test::new("three_members_survive_sigkill_mid_write");
    let mut rng = SeededRng::derive(test.seed, 2);
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_synod"), 3, &[])
        .await
        .unwrap_or_else(|error| test.fail(error));
    for round in 0..ROUNDS {
        // Every fourth round takes the whole cluster down at once; the others the
        // leader or a random member.
        let victims = if round % 4 == 3 {
            vec![0, 1, 2]
        } else if rng.chance(1, 2) {
            vec![cluster
                .leader()
                .await
                .unwrap_or_else(|error| test.fail(error))]
        } else {
            vec![rng.below(3)]
        };
        test.round(&mut cluster, round, &victims, &mut rng).await;
    }
    test.finish(&cluster).await;
}
