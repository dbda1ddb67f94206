//! Bugs the fault harness found, each reduced to a reproduction that stays in the
//! suite once fixed. A bug still open gets `#[ignore = "bug: ..."]` (so the suite
//! stays green) and is run with `--run-ignored all` until its fix drops the
//! attribute.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use synod_harness::Cluster;

/// A member started with `--initial-cluster-state existing` after a successful
/// MemberAdd asks the peers of `--initial-cluster` (in name order) who it is. It
/// used to believe the first that answered: a peer that had not yet learned of the
/// MemberAdd (it lagged, was just restarted, or was cut off from the leader) made
/// the new member exit with "the cluster has no member with peer URLs ...; add
/// this member first" although it was added — the fault schedules hit this when a
/// membership step followed a crash or a partition. Fixed (join.rs now asks the
/// other peers for a while); this keeps it fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_joins_although_the_first_peer_it_asks_lags() {
    let mut cluster = Cluster::start_behind_proxy(env!("CARGO_BIN_EXE_synod"), 3, &[])
        .await
        .unwrap();
    // m0, the first peer a joining member asks, is cut off from m1 and m2 (but not
    // from the new member), so it never hears of the MemberAdd.
    cluster.proxy().unwrap().partition(&[0], &[1, 2]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.leader_among(&[1, 2]).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "m1 and m2 elected no leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = cluster.join_new_member(false).await;
    let log = cluster.log_text(3);
    assert!(
        joined.is_ok(),
        "the added member could not join: {:?}\nits log:\n{log}",
        joined.err()
    );
}

/// SIGTERM stops a member even while a client keeps a watch stream open (the
/// graceful shutdown used to wait for every open stream to end). etcd closes its
/// watch streams when it stops; so does a removed member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_with_an_open_watch() {
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_synod"), 1, &[])
        .await
        .unwrap();
    let mut client = cluster.client(0).await.unwrap();
    let _stream = client.watch("k", None).await.unwrap();
    assert!(
        cluster.terminate(0),
        "the member did not exit within 15 s of SIGTERM with a watch open"
    );
}

/// A leader SIGKILLed and restarted before the others elect a new one comes back
/// as leader (openraft restores leadership from its vote) with a commit index
/// recovered from disk that can be older than writes it had acknowledged; its
/// read indexes used to follow that index, so linearizable reads — on it, and on
/// followers that ask it — returned revisions older than acknowledged writes.
/// Read indexes now never fall below the log the member had when it started. Writers and readers go
/// through every member while the leader is killed and restarted at once; every
/// read that starts after the kill must see every write acknowledged before it
/// started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_quick_leader_restart_see_every_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    use synod_harness::quick_client;

    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_synod"), 3, &[])
        .await
        .unwrap();
    let endpoints = cluster.endpoints();
    let mut stale_reads = Vec::new();
    for round in 0..8 {
        let leader = cluster.leader().await.unwrap();
        let acknowledged = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for (writer, endpoint) in endpoints.iter().cloned().enumerate() {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            tasks.spawn(async move {
                let mut sequence = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Some(mut client) = quick_client(&endpoint, Duration::from_secs(3)).await
                    {
                        while !stop.load(Ordering::SeqCst) {
                            sequence += 1;
                            let Ok(response) = client
                                .put(format!("w{writer}"), sequence.to_string(), None)
                                .await
                            else {
                                break;
                            };
                            let revision = response.header().unwrap().revision();
                            acknowledged.fetch_max(revision, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Vec::new()
            });
        }
        for reader in 0..6 {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            let member = reader % 3;
            let endpoint = endpoints[member].clone();
            tasks.spawn(async move {
                let mut stale = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Some(mut client) = quick_client(&endpoint, Duration::from_secs(3)).await
                    {
                        while !stop.load(Ordering::SeqCst) {
                            let floor = acknowledged.load(Ordering::SeqCst);
                            let Ok(response) = client.get("w0", None).await else {
                                break;
                            };
                            let revision = response.header().unwrap().revision();
                            if revision < floor {
                                stale.push(format!(
                                    "round {round}: m{member} answered at revision {revision}, \
                                     after revision {floor} was acknowledged (old leader m{leader})"
                                ));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                stale
            });
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        cluster.kill(leader);
        cluster.spawn(leader).unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.store(true, Ordering::SeqCst);
        while let Some(result) = tasks.join_next().await {
            stale_reads.extend(result.unwrap());
        }
        cluster.wait_ready().await.unwrap();
    }
    assert!(
        stale_reads.is_empty(),
        "{} stale linearizable reads:\n{}",
        stale_reads.len(),
        stale_reads.join("\n")
    );
}
