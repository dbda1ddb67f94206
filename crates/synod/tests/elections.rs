#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// The Election service over real processes, with the etcd-client crate: three
// candidates on three members, observers on every member, leadership passed on by
// resignation and by lease expiry, proclamations, and etcd's election errors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{expect_error, finish_checks, mismatch, must, patient_client, Cluster};
use etcd_client::{CampaignResponse, Client, Error, LeaderKey, ProclaimOptions, ResignOptions};
use tokio::task::JoinHandle;
use tonic::Code;

/// How long a request may wait its turn (a lock or a campaign).
const PATIENCE: Duration = Duration::from_secs(60);

const NAME: &str = "elect-test";
const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";

/// A candidate: its client, its lease and the task keeping that lease alive.
struct Candidate {
    value: &'static str,
    client: Client,
    lease: i64,
    alive: Arc<AtomicBool>,
    keeper: JoinHandle<()>,
}

impl Candidate {
    async fn new(endpoint: &str, value: &'static str, ttl: i64) -> Candidate {
        let mut client = patient_client(endpoint, PATIENCE).await;
        let lease = must("grant", client.lease_grant(ttl, None).await).id();
        let alive = Arc::new(AtomicBool::new(true));
        let keeper = {
            let mut client = client.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                let (mut keeper, mut responses) =
                    tokio::time::timeout(Duration::from_secs(5), client.lease_keep_alive(lease))
                        .await
                        .expect("keep-alive stream within 5 s")
                        .expect("keep-alive stream");
                while alive.load(Ordering::SeqCst) {
                    keeper.keep_alive().await.expect("send keep-alive");
                    let response =
                        tokio::time::timeout(Duration::from_secs(3), responses.message())
                            .await
                            .expect("keep-alive answered within 3 s")
                            .expect("keep-alive response")
                            .expect("keep-alive stream open");
                    assert!(
                        response.ttl() > 0,
                        "lease {lease:x} expired while kept alive"
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        };
        Candidate {
            value,
            client,
            lease,
            alive,
            keeper,
        }
    }

    /// The key a candidate holds: `name/<lease id in hex>`, as etcd's.
    fn key(&self) -> String {
        format!("{NAME}/{:x}", self.lease)
    }

    /// Starts campaigning in the background.
    fn campaign(&self) -> JoinHandle<Result<CampaignResponse, Error>> {
        let mut client = self.client.clone();
        let (value, lease) = (self.value, self.lease);
        tokio::spawn(async move { client.campaign(NAME, value, lease).await })
    }

    /// Stops keeping the lease alive.
    async fn abandon(self) {
        self.alive.store(false, Ordering::SeqCst);
        self.keeper.await.expect("keep-alive task");
    }
}

/// Waits until `key` exists (a campaign has entered the queue); returns its create
/// revision.
async fn wait_key(client: &mut Client, key: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = must("get", client.get(key, None).await);
        if let Some(kv) = response.kvs().first() {
            return kv.create_revision();
        }
        assert!(Instant::now() < deadline, "{key} never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits a campaign that must win within `within`.
async fn won(
    campaign: &mut JoinHandle<Result<CampaignResponse, Error>>,
    within: Duration,
    who: &str,
) -> LeaderKey {
    let response = tokio::time::timeout(within, campaign)
        .await
        .unwrap_or_else(|_| panic!("{who} did not win within {within:?}"))
        .expect("campaign task");
    must("campaign", response)
        .leader()
        .cloned()
        .expect("campaign response names the leader")
}

/// (key, value) of every leader announcement an observer got.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn observe(mut client: Client) -> (Seen, JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut stream = client.observe(NAME).await.expect("observe");
            while let Ok(Some(response)) = stream.message().await {
                let kv = response.kv().expect("an observed leader has a kv");
                seen.lock().unwrap().push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                ));
            }
        })
    };
    (seen, task)
}

/// Waits until every observer has seen `count` announcements (bounded).
async fn wait_observed(observers: &[Seen], count: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while observers
        .iter()
        .any(|seen| seen.lock().unwrap().len() < count)
    {
        if Instant::now() > deadline {
            let seen: Vec<Vec<(String, String)>> = observers
                .iter()
                .map(|seen| seen.lock().unwrap().clone())
                .collect();
            mismatch(format!(
                "{what}: observers did not all see {count} announcements within 10 s: {seen:?}"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `leader()` on every member names `key` with `value`.
async fn check_leader(clients: &mut [Client], key: &str, value: &str, what: &str) {
    for (index, client) in clients.iter_mut().enumerate() {
        let response = must("leader", client.leader(NAME).await);
        let got = response.kv().map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        });
        check_eq!(
            got,
            Some((key.to_string(), value.to_string())),
            "{what}: leader() on member {index}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_campaign_resign_expiry_and_proclaim() {
    let cluster = Cluster::start(3, &[]).await;
    let endpoints = cluster.endpoints();
    let mut clients = Vec::new();
    for index in 0..3 {
        clients.push(cluster.client(index).await);
    }

    // No candidates: no leader.
    expect_error(
        "leader() with no candidates",
        clients[0].leader("nobody-runs").await,
        Code::Unknown,
        NO_LEADER,
    );

    // Observers on every member, before anyone campaigns.
    let mut observers = Vec::new();
    let mut observer_tasks = Vec::new();
    for client in &clients {
        let (seen, task) = observe(client.clone());
        observers.push(seen);
        observer_tasks.push(task);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Three candidates on three members; A campaigns first and wins at once.
    let a = Candidate::new(&endpoints[0], "A", 5).await;
    let b = Candidate::new(&endpoints[1], "B", 2).await;
    let c = Candidate::new(&endpoints[2], "C", 5).await;
    let (a_name, b_name, c_name) = (a.key(), b.key(), c.key());
    let mut a_campaign = a.campaign();
    let a_leader = won(&mut a_campaign, Duration::from_secs(10), "A").await;
    let a_rev = wait_key(&mut clients[0], &a.key()).await;
    check_eq!(
        (
            a_leader.name().to_vec(),
            a_leader.key().to_vec(),
            a_leader.rev(),
            a_leader.lease()
        ),
        (
            NAME.as_bytes().to_vec(),
            a.key().into_bytes(),
            a_rev,
            a.lease
        ),
        "A's leader key"
    );
    let mut b_campaign = b.campaign();
    let b_rev = wait_key(&mut clients[1], &b.key()).await;
    let mut c_campaign = c.campaign();
    wait_key(&mut clients[2], &c.key()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    check!(
        !b_campaign.is_finished() && !c_campaign.is_finished(),
        "B and C must wait while A leads"
    );
    check_leader(&mut clients, &a.key(), "A", "A leads").await;
    wait_observed(&observers, 1, "A elected").await;

    // Proclaim: by the leader, seen by every observer; by others, refused.
    must(
        "A proclaims",
        clients[0]
            .proclaim(
                "A2",
                Some(ProclaimOptions::new().with_leader(a_leader.clone())),
            )
            .await,
    );
    wait_observed(&observers, 2, "A proclaimed").await;
    check_leader(&mut clients, &a.key(), "A2", "after A's proclamation").await;
    // (etcd's Proclaim checks only that the leader key still exists with the given
    // create revision, so a waiting candidate could proclaim on its own key; a
    // client only learns its key from a won campaign, so the non-leaders that
    // matter are stale or forged keys.)
    let forged = a_leader.clone().with_rev(a_rev + 1000);
    expect_error(
        "proclaim with a wrong revision",
        clients[2]
            .proclaim("X", Some(ProclaimOptions::new().with_leader(forged)))
            .await,
        Code::Unknown,
        NOT_LEADER,
    );
    check_leader(&mut clients, &a.key(), "A2", "after refused proclamations").await;

    // A resigns: B (who campaigned before C) leads.
    must(
        "A resigns",
        clients[0]
            .resign(Some(ResignOptions::new().with_leader(a_leader.clone())))
            .await,
    );
    let b_leader = won(&mut b_campaign, Duration::from_secs(10), "B").await;
    check_eq!(
        (b_leader.key().to_vec(), b_leader.rev()),
        (b.key().into_bytes(), b_rev),
        "B's leader key"
    );
    check!(!c_campaign.is_finished(), "C must still wait while B leads");
    check_leader(&mut clients, &b.key(), "B", "after A resigned").await;
    wait_observed(&observers, 3, "B elected").await;
    let gone = must("get", clients[0].get(a.key(), None).await);
    check!(gone.kvs().is_empty(), "A's key outlived its resignation");
    expect_error(
        "proclaim by a resigned leader",
        clients[0]
            .proclaim("A3", Some(ProclaimOptions::new().with_leader(a_leader)))
            .await,
        Code::Unknown,
        NOT_LEADER,
    );

    // B's lease expires: C leads within TTL + 2 s.
    let b_stopped = Instant::now();
    b.abandon().await;
    let c_leader = won(&mut c_campaign, Duration::from_secs(6), "C").await;
    let waited = b_stopped.elapsed();
    check!(
        waited >= Duration::from_millis(1500),
        "C won only {waited:?} after B stopped renewing a 2 s lease"
    );
    check_eq!(
        c_leader.key().to_vec(),
        c.key().into_bytes(),
        "C's leader key"
    );
    expect_error(
        "proclaim by a leader whose lease expired",
        clients[1]
            .proclaim("B2", Some(ProclaimOptions::new().with_leader(b_leader)))
            .await,
        Code::Unknown,
        NOT_LEADER,
    );
    check_leader(&mut clients, &c.key(), "C", "after B's lease expired").await;
    wait_observed(&observers, 4, "C elected").await;
    must(
        "C proclaims",
        clients[2]
            .proclaim(
                "C2",
                Some(ProclaimOptions::new().with_leader(c_leader.clone())),
            )
            .await,
    );
    wait_observed(&observers, 5, "C proclaimed").await;

    // Every observer saw the same sequence.
    let want = vec![
        (a_name.clone(), "A".to_string()),
        (a_name, "A2".to_string()),
        (b_name.clone(), "B".to_string()),
        (c_name.clone(), "C".to_string()),
        (c_name, "C2".to_string()),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (index, seen) in observers.iter().enumerate() {
        check_eq!(
            *seen.lock().unwrap(),
            want,
            "leader sequence seen by the observer on member {index}"
        );
    }

    // C resigns: nobody leads.
    must(
        "C resigns",
        clients[2]
            .resign(Some(ResignOptions::new().with_leader(c_leader)))
            .await,
    );
    for (index, client) in clients.iter_mut().enumerate() {
        expect_error(
            &format!("leader() on member {index} after the last candidate resigned"),
            client.leader(NAME).await,
            Code::Unknown,
            NO_LEADER,
        );
    }
    for task in observer_tasks {
        task.abort();
    }
    a.abandon().await;
    c.abandon().await;
    finish_checks();
}
