//! Membership changes under load: a cluster grows 1 → 3 → 5 and shrinks 5 → 3
//! (the leader first) while clients write; no acknowledged write is lost and the
//! replicas end up identical.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{connect, Cluster};
use etcd_client::{Client, ConnectOptions, GetOptions};

type Endpoints = Arc<Mutex<Vec<String>>>;

/// Writes unique keys until `stop`, always through a member that is currently in
/// the cluster. Returns the acknowledged writes.
async fn writer(id: usize, endpoints: Endpoints, stop: Arc<AtomicBool>) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sequence = 0u64;
    let mut turn = id;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let endpoint = {
            let endpoints = endpoints.lock().unwrap();
            endpoints[turn % endpoints.len()].clone()
        };
        turn += 1;
        let client = Client::connect(
            [endpoint],
            Some(
                ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(5)),
            ),
        )
        .await;
        let Ok(mut client) = client else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for _ in 0..20 {
            let key = format!("members/{id}-{sequence:06}");
            let value = format!("v{sequence}");
            sequence += 1;
            match client.put(key.clone(), value.clone(), None).await {
                Ok(_) => acknowledged.push((key, value)),
                Err(_) => break,
            }
        }
    }
    acknowledged
}

async fn member_id(cluster: &Cluster, index: usize) -> u64 {
    let (id, _, _) = cluster
        .status(index)
        .await
        .expect("status of a running member");
    id
}

/// Adds a member through member 0's client and starts it; waits until it serves
/// linearizable reads.
async fn grow(cluster: &mut Cluster, endpoints: &Endpoints, via: usize) -> usize {
    let index = cluster.add_member();
    let peer_url = cluster.members[index].peer_url();
    let mut client = cluster.client(via).await;
    let response = client
        .member_add([peer_url], None)
        .await
        .expect("member add");
    let added = response.member().expect("the added member");
    assert!(!added.is_learner());
    cluster.spawn(index);
    cluster.wait_ready().await;
    assert_eq!(
        member_id(cluster, index).await,
        added.id(),
        "the new member found its id"
    );
    endpoints
        .lock()
        .unwrap()
        .push(cluster.members[index].endpoint());
    index
}

/// Removes member `index` (through another member) and checks that it stops.
async fn shrink(cluster: &mut Cluster, endpoints: &Endpoints, index: usize) {
    let id = member_id(cluster, index).await;
    let via = (0..cluster.members.len())
        .find(|other| *other != index && cluster.members[*other].is_running())
        .unwrap();
    endpoints
        .lock()
        .unwrap()
        .retain(|endpoint| *endpoint != cluster.members[index].endpoint());
    let mut client = cluster.client(via).await;
    let response = client.member_remove(id).await.expect("member remove");
    assert!(response.members().iter().all(|member| member.id() != id));
    // A removed member stops by itself, as etcd's do.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster.log_text(index).contains("removed from the cluster") {
        assert!(
            Instant::now() < deadline,
            "member {index} kept running after its removal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.forget(index);
    cluster.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_grows_to_five_and_shrinks_to_three_under_load() {
    let mut cluster = Cluster::start(1, &[]).await;
    let endpoints: Endpoints = Arc::new(Mutex::new(vec![cluster.members[0].endpoint()]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for id in 0..8 {
        writers.spawn(writer(id, endpoints.clone(), stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1 → 3 → 5.
    for _ in 0..4 {
        grow(&mut cluster, &endpoints, 0).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut client = cluster.client(0).await;
    assert_eq!(
        client
            .member_list()
            .await
            .expect("member list")
            .members()
            .len(),
        5
    );

    // 5 → 3, the leader first.
    let leader = cluster.leader().await;
    shrink(&mut cluster, &endpoints, leader).await;
    let follower = cluster.follower().await;
    shrink(&mut cluster, &endpoints, follower).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    while let Some(result) = writers.join_next().await {
        acknowledged.extend(result.expect("writer task"));
    }
    assert!(
        acknowledged.len() > 100,
        "too few writes acknowledged: {}",
        acknowledged.len()
    );

    let remaining: Vec<usize> = (0..cluster.members.len())
        .filter(|index| cluster.members[*index].is_running())
        .collect();
    assert_eq!(remaining.len(), 3);
    let mut client = connect(&[cluster.members[remaining[0]].endpoint()]).await;
    assert_eq!(
        client
            .member_list()
            .await
            .expect("member list")
            .members()
            .len(),
        3
    );
    let revision = client
        .put("members/final", "done", None)
        .await
        .expect("write after the changes")
        .header()
        .expect("header")
        .revision();
    for index in &remaining {
        let mut client = cluster.client(*index).await;
        let stored: BTreeMap<String, String> = client
            .get("members/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("read back")
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                )
            })
            .collect();
        let missing = acknowledged
            .iter()
            .filter(|(key, value)| stored.get(key) != Some(value))
            .count();
        assert_eq!(
            missing, 0,
            "member {index} lacks {missing} acknowledged writes"
        );
    }
    cluster.assert_replicas_agree(revision).await;
}

/// A member added as a voter becomes one even when the member that took the
/// MemberAdd dies before the new member has started: the intent is replicated
/// with the add, and whichever member leads promotes it once it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_voter_is_promoted_after_the_member_that_added_it_dies() {
    let mut cluster = Cluster::start(3, &[]).await;
    let via = cluster.follower().await;
    let index = cluster.add_member();
    let peer_url = cluster.members[index].peer_url();
    let added = cluster
        .client(via)
        .await
        .member_add([peer_url], None)
        .await
        .expect("member add");
    let id = added.member().expect("the added member").id();
    assert!(
        added
            .member_list()
            .iter()
            .any(|member| member.id() == id && !member.is_learner()),
        "the member list shows the added member as a voter, as etcd's does"
    );
    let refused = cluster.client(via).await.member_promote(id).await;
    assert!(
        matches!(&refused, Err(etcd_client::Error::GRpcStatus(status))
            if status.message() == "etcdserver: can only promote a learner member"),
        "promoting a member added as a voter: {refused:?}"
    );
    cluster.kill(via);

    cluster.spawn(index);
    ok_or_panic(cluster.wait_voter(id).await);
    ok_or_panic(cluster.wait_member_ready(index).await);
    let mut through_new = cluster.client(index).await;
    through_new
        .put("members/after", "x", None)
        .await
        .expect("a write through the new voter");
}

fn ok_or_panic<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|error| panic!("{error}"))
}
