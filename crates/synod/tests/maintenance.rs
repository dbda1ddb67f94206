//! The Maintenance service against real processes: backups saved with `synod
//! snapshot save` (and etcdctl) and restored into a new cluster, the space quota and
//! its NOSPACE alarm, defragmentation, and leadership transfer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{run_command, synod_binary, Cluster, CmdOutput, Etcdctl};
use etcd_client::{Client, CompactionOptions, GetOptions, PutOptions};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn synod(args: &[&str]) -> CmdOutput {
    let mut command = Command::new(synod_binary());
    command.args(args);
    run_command(command, None, CLI_TIMEOUT)
}

/// Every key and value under `prefix`, with its create/mod revisions.
async fn dump(client: &Client, prefix: &str) -> Vec<(String, String, i64, i64, i64)> {
    let mut client = client.clone();
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.lease(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restores_into_a_new_cluster() {
    let source = Cluster::start(3, &[]).await;
    let mut client = source.client(0).await;
    let lease = client.lease_grant(600, None).await.unwrap().id();
    for index in 0..150 {
        let options = (index % 10 == 0).then(|| PutOptions::new().with_lease(lease));
        client
            .put(format!("app/{index:03}"), format!("v{index}"), options)
            .await
            .unwrap();
    }
    for index in 0..50 {
        client
            .put(format!("app/{index:03}"), format!("w{index}"), None)
            .await
            .unwrap();
    }
    let compact_at = client
        .get("app/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    for index in 140..150 {
        client
            .delete(format!("app/{index:03}"), None)
            .await
            .unwrap();
    }
    client
        .compact(compact_at, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let revision = client
        .get("app/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let expected = dump(&client, "app/").await;
    let expected_hash = source.hash_at(0, revision).await;

    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.db");
    let backup_path = backup.to_str().unwrap();
    let follower = source.follower().await;
    let saved = synod(&[
        "snapshot",
        "save",
        backup_path,
        "--endpoints",
        &source.members[follower].endpoint(),
    ]);
    assert_eq!(saved.code, 0, "snapshot save failed: {}", saved.stderr);
    assert!(
        saved.stdout.contains("Snapshot saved at"),
        "{}",
        saved.stdout
    );

    // etcdctl saves the same stream, and synod restores what it saved.
    let etcdctl_backup = dir.path().join("etcdctl.db");
    let etcdctl = Etcdctl::new(&[source.members[0].endpoint()]);
    let saved = etcdctl.run(&["snapshot", "save", etcdctl_backup.to_str().unwrap()]);
    assert_eq!(
        saved.code, 0,
        "etcdctl snapshot save failed: {}",
        saved.stderr
    );
    let restored = synod(&[
        "snapshot",
        "restore",
        etcdctl_backup.to_str().unwrap(),
        "--data-dir",
        dir.path().join("from-etcdctl").to_str().unwrap(),
    ]);
    assert_eq!(restored.code, 0, "restore failed: {}", restored.stderr);
    assert!(
        restored
            .stdout
            .contains(&format!("Restored revision {revision}")),
        "{}",
        restored.stdout
    );

    // A damaged backup is refused, and leaves no data dir behind.
    let mut damaged = std::fs::read(&backup).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    let damaged_path = dir.path().join("damaged.db");
    std::fs::write(&damaged_path, damaged).unwrap();
    let refused = synod(&[
        "snapshot",
        "restore",
        damaged_path.to_str().unwrap(),
        "--data-dir",
        dir.path().join("damaged").to_str().unwrap(),
    ]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("SHA-256"), "{}", refused.stderr);
    assert!(!dir.path().join("damaged").join("synod.redb").exists());

    // Seed a new 3-member cluster with the backup.
    let mut target = Cluster::start(3, &[]).await;
    for index in 0..3 {
        target.kill(index);
    }
    for index in 0..3 {
        let data_dir = target.members[index].data_dir.clone();
        std::fs::remove_dir_all(&data_dir).unwrap();
        let restored = synod(&[
            "snapshot",
            "restore",
            backup_path,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
        assert_eq!(restored.code, 0, "restore failed: {}", restored.stderr);
    }
    // Restoring over existing data is refused.
    let again = synod(&[
        "snapshot",
        "restore",
        backup_path,
        "--data-dir",
        target.members[0].data_dir.to_str().unwrap(),
    ]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);

    for index in 0..3 {
        target.spawn(index);
    }
    target.wait_ready().await;
    for index in 0..3 {
        assert_eq!(
            target.hash_at(index, revision).await,
            expected_hash,
            "restored member {index} differs from the source at revision {revision}"
        );
        let member = target.client(index).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = dump(&member, "app/").await;
            if got == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "member {index} serves other data after restore"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut restored_client = target.client(1).await;
    let leases = restored_client.leases().await.unwrap();
    assert!(
        leases.leases().iter().any(|status| status.id() == lease),
        "the lease did not survive the restore"
    );
    let put = restored_client.put("after", "restore", None).await.unwrap();
    assert!(put.header().unwrap().revision() > revision);
    let compacted = restored_client
        .get(
            "app/",
            Some(GetOptions::new().with_revision(compact_at - 1)),
        )
        .await;
    assert!(
        compacted.is_err(),
        "the restored store forgot its compaction"
    );
    target
        .assert_replicas_agree(put.header().unwrap().revision())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn space_quota_raises_nospace_until_disarmed() {
    let cluster = Cluster::start(3, &["--quota-backend-bytes", "6000000"]).await;
    let endpoints: Vec<String> = (0..3)
        .map(|index| cluster.members[index].endpoint())
        .collect();
    let mut client = cluster.client(1).await;
    let value = "x".repeat(100_000);
    let mut written = 0;
    let refusal = loop {
        match client
            .put(format!("big/{written:03}"), value.clone(), None)
            .await
        {
            Ok(_) => written += 1,
            Err(error) => break error.to_string(),
        }
        assert!(written < 200, "the quota never stopped writes");
    };
    assert!(
        refusal.contains("etcdserver: mvcc: database space exceeded"),
        "unexpected refusal: {refusal}"
    );
    assert!(written > 0);

    // The alarm is cluster state: every member lists it and refuses writes, small
    // ones included; reads and deletes still work.
    let etcdctl = Etcdctl::new(&endpoints);
    let listed = etcdctl.run(&["alarm", "list"]);
    assert!(listed.stdout.contains("alarm:NOSPACE"), "{}", listed.stdout);
    for (index, endpoint) in endpoints.iter().enumerate() {
        let single = Etcdctl::new(std::slice::from_ref(endpoint));
        let put = single.run(&["put", "small", "1"]);
        assert_ne!(put.code, 0, "member {index} took a write under NOSPACE");
        assert!(
            put.stderr
                .contains("etcdserver: mvcc: database space exceeded"),
            "{}",
            put.stderr
        );
        let status = single.run(&["endpoint", "status", "-w", "json"]);
        assert!(status.stdout.contains("alarm:NOSPACE"), "{}", status.stdout);
        let lease = single.run(&["lease", "grant", "60"]);
        assert_ne!(
            lease.code, 0,
            "member {index} granted a lease under NOSPACE"
        );
    }
    let got = client
        .get(
            "big/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(got.count(), written);

    // Free space: delete, compact, defragment every member, then disarm.
    let deleted = client
        .delete(
            "big/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), written);
    let revision = deleted.header().unwrap().revision();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let defrag = etcdctl.run(&["defrag"]);
    assert_eq!(defrag.code, 0, "defrag failed: {}", defrag.stderr);
    let disarm = etcdctl.run(&["alarm", "disarm"]);
    assert_eq!(disarm.code, 0, "disarm failed: {}", disarm.stderr);
    assert!(disarm.stdout.contains("alarm:NOSPACE"), "{}", disarm.stdout);
    assert!(etcdctl.run(&["alarm", "list"]).stdout.trim().is_empty());
    let put = etcdctl.run(&["put", "small", "1"]);
    assert_eq!(
        put.code, 0,
        "writes still refused after disarm: {}",
        put.stderr
    );
    cluster.assert_replicas_agree(revision + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn defragment_shrinks_the_file_and_keeps_the_data() {
    let cluster = Cluster::start(1, &[]).await;
    let mut client = cluster.client(0).await;
    let value = "y".repeat(50_000);
    for index in 0..100 {
        client
            .put(format!("bulk/{index:03}"), value.clone(), None)
            .await
            .unwrap();
    }
    for index in 0..20 {
        client
            .put(format!("keep/{index}"), format!("k{index}"), None)
            .await
            .unwrap();
    }
    let deleted = client
        .delete(
            "bulk/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let revision = deleted.header().unwrap().revision();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    let before = client.status().await.unwrap();
    let hash = cluster.hash_at(0, revision).await;
    let kept = dump(&client, "keep/").await;

    // Writers keep going while the member defragments: none may fail or be lost.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = 0;
            while !stop.load(Ordering::Relaxed) {
                client
                    .put(format!("during/{acknowledged}"), "d", None)
                    .await
                    .expect("write during defragmentation");
                acknowledged += 1;
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.defragment().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();

    let after = client.status().await.unwrap();
    assert!(
        after.db_size() < before.db_size(),
        "defragmentation did not shrink the file: {} -> {}",
        before.db_size(),
        after.db_size()
    );
    // Status tells the space compaction freed: in use is below the file's size.
    assert!(
        0 < before.raft_used_db_size() && before.raft_used_db_size() < before.db_size(),
        "size in use {} of a {}-byte file after deleting and compacting",
        before.raft_used_db_size(),
        before.db_size()
    );
    assert_eq!(cluster.hash_at(0, revision).await, hash);
    assert_eq!(dump(&client, "keep/").await, kept);
    let during = client
        .get(
            "during/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(during.count(), acknowledged);

    // And the defragmented file is what the member opens after a restart.
    let mut cluster = cluster;
    cluster.kill(0);
    cluster.spawn(0);
    cluster.wait_ready().await;
    let client = cluster.client(0).await;
    assert_eq!(dump(&client, "keep/").await, kept);
    assert_eq!(cluster.hash_at(0, revision).await, hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_leader_hands_over_under_writes() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader().await;
    let target = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let (target_id, _, _) = cluster.status(target).await.unwrap();
    let endpoints: Vec<String> = (0..3)
        .map(|index| cluster.members[index].endpoint())
        .collect();

    // Only the leader moves leadership; only to a voting member.
    let at_follower =
        Etcdctl::new(&[endpoints[other].clone()]).run(&["move-leader", &format!("{target_id:x}")]);
    assert_ne!(at_follower.code, 0);
    assert!(
        at_follower.stderr.contains("etcdserver: not leader")
            || at_follower.stderr.contains("no leader endpoint"),
        "{}",
        at_follower.stderr
    );
    let mut leader_client = cluster.client(leader).await;
    let unknown = leader_client
        .move_leader(0x1234)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("etcdserver: bad leader transferee"),
        "{unknown}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = cluster.client(writer % 3).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut client = client;
            let mut acknowledged = Vec::new();
            let mut sequence = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{writer}/{sequence}");
                if client.put(key.clone(), "v", None).await.is_ok() {
                    acknowledged.push(key);
                }
                sequence += 1;
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let moved = Etcdctl::new(&endpoints).run(&["move-leader", &format!("{target_id:x}")]);
    let took = started.elapsed();
    assert_eq!(moved.code, 0, "move-leader failed: {}", moved.stderr);
    assert!(
        moved.stdout.contains("Leadership transferred from"),
        "{}",
        moved.stdout
    );
    assert_eq!(cluster.leader().await, target, "leadership went elsewhere");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap());
    }
    assert!(took < Duration::from_secs(8), "transfer took {took:?}");
    let mut check = cluster.client(other).await;
    for key in &all {
        let got = check.get(key.as_str(), None).await.unwrap();
        assert_eq!(got.count(), 1, "acknowledged write {key} lost");
    }
    let revision = check
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cluster.assert_replicas_agree(revision).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_refuses_a_learner_out_of_sync() {
    let cluster = Cluster::start(1, &[]).await;
    let mut client = cluster.client(0).await;
    for index in 0..20 {
        client.put(format!("k{index}"), "v", None).await.unwrap();
    }
    let etcdctl = Etcdctl::new(&[cluster.members[0].endpoint()]);
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let added = etcdctl.run(&[
        "member",
        "add",
        "late",
        "--learner",
        &format!("--peer-urls={peer}"),
    ]);
    assert_eq!(added.code, 0, "member add failed: {}", added.stderr);
    let id = added
        .stdout
        .split_whitespace()
        .skip_while(|word| *word != "Member")
        .nth(1)
        .expect("member id in member add output")
        .to_string();
    // Never started, so it holds none of the log: etcd refuses to promote it.
    let promoted = etcdctl.run(&["member", "promote", &id]);
    assert_ne!(promoted.code, 0, "promoted a learner with no log");
    assert!(
        promoted
            .stderr
            .contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{}",
        promoted.stderr
    );
    let list = etcdctl.run(&["member", "list"]);
    assert!(
        list.stdout.contains("true"),
        "the learner is no longer listed as one: {}",
        list.stdout
    );
}
