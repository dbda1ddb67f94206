//! Network partitions through the peer-traffic proxy: a leader cut off from the
//! others must not answer linearizable reads or acknowledge writes, while the
//! majority elects a new leader and goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{connect, patient_client, Cluster};
use etcd_client::{Client, ConnectOptions, GetOptions};

/// Waits until the members in `group` agree on a leader among themselves.
async fn leader_among(cluster: &Cluster, group: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut leaders = Vec::new();
        let mut ids = Vec::new();
        for index in group {
            if let Some((id, leader, _)) = cluster.status(*index).await {
                ids.push((*index, id));
                leaders.push(leader);
            }
        }
        if leaders.len() == group.len() && leaders.windows(2).all(|pair| pair[0] == pair[1]) {
            if let Some((index, _)) = ids.iter().find(|(_, id)| *id == leaders[0]) {
                return *index;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the majority never elected a leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_serves_no_stale_data() {
    let cluster = Cluster::start_behind_proxy(3, &[]).await;
    let old_leader = cluster.leader().await;
    let others: Vec<usize> = (0..3).filter(|index| *index != old_leader).collect();
    let mut through_old = patient_client(
        &cluster.members[old_leader].endpoint(),
        Duration::from_secs(12),
    )
    .await;
    through_old
        .put("p/key", "before", None)
        .await
        .expect("put before the partition");

    cluster.proxy().partition(&[old_leader], &others);
    let new_leader = leader_among(&cluster, &others).await;
    let mut through_new = connect(&[cluster.members[new_leader].endpoint()]).await;
    through_new
        .put("p/key", "after", None)
        .await
        .expect("the majority takes writes");

    // The old leader cannot know about "after": it must refuse rather than answer
    // "before" to a linearizable read, and it must not acknowledge a write.
    match through_old.get("p/key", None).await {
        Err(_) => {}
        Ok(response) => panic!(
            "the isolated old leader answered a linearizable read: {:?}",
            response
                .kvs()
                .first()
                .map(|kv| kv.value_str().unwrap().to_string())
        ),
    }
    assert!(
        through_old.put("p/lost", "x", None).await.is_err(),
        "the isolated old leader acknowledged a write"
    );
    // A serializable read is allowed to be stale, and is.
    let stale = through_old
        .get("p/key", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable read");
    assert_eq!(stale.kvs()[0].value(), b"before");

    cluster.proxy().heal();
    cluster.wait_ready().await;
    let mut healed = connect(&[cluster.members[old_leader].endpoint()]).await;
    let response = healed.get("p/key", None).await.expect("read after healing");
    assert_eq!(response.kvs()[0].value(), b"after");
    let lost = healed
        .get("p/lost", None)
        .await
        .expect("read after healing");
    assert!(
        lost.kvs().is_empty(),
        "the unacknowledged write was applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_loss_from_the_leader_moves_leadership() {
    let cluster = Cluster::start_behind_proxy(3, &[]).await;
    let old_leader = cluster.leader().await;
    let others: Vec<usize> = (0..3).filter(|index| *index != old_leader).collect();
    // The leader can still hear the others but cannot reach them.
    for other in &others {
        cluster.proxy().cut(old_leader, *other);
    }
    let new_leader = leader_among(&cluster, &others).await;
    assert_ne!(new_leader, old_leader);
    let mut client = connect(&[cluster.members[new_leader].endpoint()]).await;
    client
        .put("p/one-way", "ok", None)
        .await
        .expect("write after one-way loss");
    cluster.proxy().heal();
    cluster.wait_ready().await;
    let mut old = connect(&[cluster.members[old_leader].endpoint()]).await;
    assert_eq!(
        old.get("p/one-way", None).await.expect("read").kvs()[0].value(),
        b"ok"
    );
}

/// Member `index`'s Raft term, from its Status answer.
async fn term_of(cluster: &Cluster, index: usize) -> u64 {
    let mut client = connect(&[cluster.members[index].endpoint()]).await;
    client
        .status()
        .await
        .expect("status")
        .header()
        .expect("header")
        .raft_term()
}

/// Starts a cluster with `extra_args`, then cuts a follower off from the others
/// for long enough that its election timer fires twice or more (a lease of 2 s
/// and an election timeout of 1–2 s, then every election timeout). Returns the
/// cluster, the leader, the cut-off member and the term before the cut.
async fn isolate_a_follower(extra_args: &[&str]) -> (Cluster, usize, usize, u64) {
    let cluster = Cluster::start_behind_proxy(3, extra_args).await;
    let leader = cluster.leader().await;
    let isolated = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|index| *index != isolated).collect();
    let term = term_of(&cluster, leader).await;
    cluster.proxy().partition(&[isolated], &others);
    let mut through_leader = connect(&[cluster.members[leader].endpoint()]).await;
    through_leader
        .put("p/during", "x", None)
        .await
        .expect("the majority takes writes");
    tokio::time::sleep(Duration::from_secs(7)).await;
    (cluster, leader, isolated, term)
}

/// A member cut off from the others cannot win an election, so its pre-votes fail
/// and its term stays put; when the partition heals it follows the leader instead
/// of deposing it with a higher term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_member_rejoins_without_deposing_the_leader() {
    let (cluster, leader, isolated, term) = isolate_a_follower(&[]).await;
    assert_eq!(
        term_of(&cluster, isolated).await,
        term,
        "the isolated member raised its term"
    );

    cluster.proxy().heal();
    let mut through_isolated = connect(&[cluster.members[isolated].endpoint()]).await;
    let response = through_isolated
        .get("p/during", None)
        .await
        .expect("read through the member that rejoined");
    assert_eq!(response.kvs()[0].value(), b"x");
    assert_eq!(
        leader_among(&cluster, &[0, 1, 2]).await,
        leader,
        "the leader changed"
    );
    for index in 0..3 {
        assert_eq!(
            term_of(&cluster, index).await,
            term,
            "member {index}'s term"
        );
    }
}

/// `--pre-vote=false` (etcd's flag) campaigns without asking: the cut-off member
/// raises its term at every timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pre_vote_an_isolated_member_raises_its_term() {
    let (cluster, _, isolated, term) = isolate_a_follower(&["--pre-vote=false"]).await;
    assert!(term_of(&cluster, isolated).await > term);
}

/// A member cut off from its leader turns require-leader clients away (etcd's
/// `WithRequireLeader`, which Kubernetes uses for its watches): their requests are
/// refused and their watches end with `etcdserver: no leader`, so they can move to
/// another member. Status shows no leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_a_leader_turns_require_leader_clients_away() {
    let cluster = Cluster::start_behind_proxy(3, &[]).await;
    let leader = cluster.leader().await;
    let isolated = (leader + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|index| *index != isolated).collect();
    let endpoint = cluster.members[isolated].endpoint();
    let options = ConnectOptions::new()
        .with_require_leader(true)
        .with_timeout(Duration::from_secs(5));
    let mut client = Client::connect([endpoint.clone()], Some(options))
        .await
        .expect("connect");
    client
        .put("p/require", "1", None)
        .await
        .expect("a require-leader put with a leader");
    let mut events = client.watch("p/require", None).await.expect("watch");

    cluster.proxy().partition(&[isolated], &others);
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(error) => return Some(error.to_string()),
            }
        }
    })
    .await
    .expect("the watch ends within 20 s");
    assert!(
        ended
            .as_deref()
            .is_some_and(|error| error.contains("etcdserver: no leader")),
        "the watch ended with {ended:?}"
    );
    let refused = client.get("p/require", None).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.to_string().contains("etcdserver: no leader")),
        "a require-leader get without a leader: {refused:?}"
    );
    let mut plain = connect(&[endpoint]).await;
    let status = plain.status().await.expect("status");
    assert_eq!(status.leader(), 0, "status of a member without a leader");

    cluster.proxy().heal();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get("p/require", None).await.is_err() {
        assert!(Instant::now() < deadline, "no leader 20 s after healing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
