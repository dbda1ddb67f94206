#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// Locks over real processes: the etcd Lock service through the etcd-client crate (a
// fair queue whose keys' create revisions are fencing tokens; a holder's lease
// expiring releases the lock), and `synod lock NAME -- COMMAND` with fenced writes
// (`synod put --fence-key --fence-token`).

use std::process::Command;
use std::time::{Duration, Instant};

use common::{patient_client, run_command, synod_binary, Cluster, CmdOutput};
use etcd_client::{Client, LockOptions, LockResponse};
use tokio::task::JoinHandle;

fn describe(out: &CmdOutput) -> String {
    format!(
        "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.code, out.stdout, out.stderr
    )
}

/// How long a request may wait its turn (a lock or a campaign).
const PATIENCE: Duration = Duration::from_secs(60);

/// The create revision of `key` (its fencing token), or None if it is gone.
async fn create_revision(client: &mut Client, key: &[u8]) -> Option<i64> {
    let response = client.get(key, None).await.expect("get");
    response.kvs().first().map(|kv| kv.create_revision())
}

fn lock_in_background(
    client: &Client,
    name: &'static str,
    lease: i64,
) -> JoinHandle<Result<LockResponse, etcd_client::Error>> {
    let mut client = client.clone();
    tokio::spawn(async move {
        client
            .lock(name, Some(LockOptions::new().with_lease(lease)))
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_service_queue_tokens_and_expiry() {
    let cluster = Cluster::start(3, &[]).await;
    let follower = cluster.follower().await;
    let leader = cluster.leader().await;
    let mut client = patient_client(&cluster.members[follower].endpoint(), PATIENCE).await;
    let other = patient_client(&cluster.members[leader].endpoint(), PATIENCE).await;

    // The first contender gets the lock at once, under `name/<lease in hex>`.
    let first_lease = client.lease_grant(30, None).await.expect("grant").id();
    let first = client
        .lock("L", Some(LockOptions::new().with_lease(first_lease)))
        .await
        .expect("lock");
    assert_eq!(
        first.key(),
        format!("L/{first_lease:x}").as_bytes(),
        "the lock key"
    );
    let first_token = create_revision(&mut client, first.key())
        .await
        .expect("the holder's key exists");
    assert_eq!(
        first.header().map(|header| header.revision()),
        Some(first_token),
        "an uncontended lock is acquired at its key's create revision"
    );

    // The second (through another member, with a 2 s lease it does not renew) waits.
    let second_lease = other
        .clone()
        .lease_grant(2, None)
        .await
        .expect("grant")
        .id();
    let mut second = lock_in_background(&other, "L", second_lease);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_key = format!("L/{second_lease:x}");
    // A third, with a lease it keeps, queues behind the second.
    let third_lease = client.lease_grant(30, None).await.expect("grant").id();
    let mut third = lock_in_background(&client, "L", third_lease);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Keep the second's lease alive while it waits, so only its release matters.
    let mut keeping = other.clone();
    let (mut keeper, mut responses) = tokio::time::timeout(
        Duration::from_secs(5),
        keeping.lease_keep_alive(second_lease),
    )
    .await
    .expect("keep-alive stream within 5 s")
    .expect("keep-alive");
    for _ in 0..3 {
        keeper.keep_alive().await.expect("keep-alive");
        tokio::time::timeout(Duration::from_secs(3), responses.message())
            .await
            .expect("keep-alive answered")
            .expect("keep-alive response");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !second.is_finished() && !third.is_finished(),
        "contenders got a held lock"
    );
    let second_token = create_revision(&mut client, second_key.as_bytes())
        .await
        .expect("the waiting contender's key exists");
    assert!(second_token > first_token, "tokens grow with the queue");

    // Unlock: the second (in line first) gets it, the third still waits.
    keeper.keep_alive().await.expect("keep-alive");
    tokio::time::timeout(Duration::from_secs(3), responses.message())
        .await
        .expect("keep-alive answered")
        .expect("keep-alive response");
    client.unlock(first.key()).await.expect("unlock");
    let granted = tokio::time::timeout(Duration::from_secs(5), &mut second)
        .await
        .expect("the second contender gets the lock within 5 s after an unlock")
        .expect("lock task")
        .expect("lock");
    assert_eq!(granted.key(), second_key.as_bytes(), "the second's key");
    assert!(
        create_revision(&mut client, first.key()).await.is_none(),
        "unlock deletes the holder's key"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "the third got a held lock");

    // The second holder renews its 2 s lease once more, then stops: the third gets
    // the lock within TTL + 2 s, with a larger token, and not before the TTL.
    let last_renewal = Instant::now();
    keeper.keep_alive().await.expect("keep-alive");
    tokio::time::timeout(Duration::from_secs(3), responses.message())
        .await
        .expect("keep-alive answered")
        .expect("keep-alive response");
    drop(keeper);
    drop(responses);
    let granted = tokio::time::timeout(Duration::from_secs(4), &mut third)
        .await
        .expect("the third contender gets the lock within 4 s of the holder's last renewal")
        .expect("lock task")
        .expect("lock");
    assert!(
        last_renewal.elapsed() >= Duration::from_millis(1900),
        "the lock passed on only {:?} after the holder last renewed a 2 s lease",
        last_renewal.elapsed()
    );
    let third_token = create_revision(&mut client, granted.key())
        .await
        .expect("the holder's key exists");
    assert!(third_token > second_token, "tokens grow with every grant");
    client.unlock(granted.key()).await.expect("unlock");

    // Without a lease, the server makes a session for the contender.
    let sessionless = client.lock("M", None).await.expect("lock without a lease");
    let key = String::from_utf8_lossy(sessionless.key()).into_owned();
    let lease = key
        .strip_prefix("M/")
        .and_then(|hex| i64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("lock key {key:?} is not M/<lease in hex>"));
    let ttl = client
        .lease_time_to_live(lease, None)
        .await
        .expect("time to live");
    assert!(
        ttl.ttl() > 0,
        "the session lease of a lock is alive: {ttl:?}"
    );
    client.unlock(sessionless.key()).await.expect("unlock");

    // A lease that does not exist cannot hold a lock.
    let result = client
        .lock("N", Some(LockOptions::new().with_lease(0x5eed)))
        .await;
    match result {
        Err(etcd_client::Error::GRpcStatus(status))
            if status.message() == "etcdserver: requested lease not found" => {}
        other => panic!("lock with an unknown lease: {other:?}"),
    }
}

/// `synod <subcommand> --endpoints <endpoints> <args>`.
fn synod(endpoints: &str, args: &[&str]) -> Command {
    let mut command = Command::new(synod_binary());
    command
        .arg(args[0])
        .arg("--endpoints")
        .arg(endpoints)
        .args(&args[1..])
        .env_remove("SYNOD_ENDPOINTS");
    command
}

fn run(command: Command) -> CmdOutput {
    run_command(command, None, Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synod_lock_command_and_fenced_puts() {
    let cluster = Cluster::start(3, &[]).await;
    let endpoints = cluster.endpoints().join(",");
    let binary = synod_binary().display().to_string();

    // Under the lock, the command sees SYNOD_LOCK_KEY and SYNOD_LOCK_TOKEN; a fenced
    // put with them succeeds, one with a wrong token is refused as stale.
    let script = format!(
        "echo \"key=$SYNOD_LOCK_KEY token=$SYNOD_LOCK_TOKEN etcd=$ETCD_LOCK_KEY\"; \
         '{binary}' put fenced/k v1 --fence-key \"$SYNOD_LOCK_KEY\" \
         --fence-token \"$SYNOD_LOCK_TOKEN\" --endpoints '{endpoints}' || exit 10; \
         '{binary}' put fenced/k bad --fence-key \"$SYNOD_LOCK_KEY\" \
         --fence-token $((SYNOD_LOCK_TOKEN + 1000)) --endpoints '{endpoints}'; \
         echo \"wrong-token-exit=$?\"; exit 7"
    );
    let out = run(synod(&endpoints, &["lock", "F", "--", "sh", "-c", &script]));
    assert_eq!(
        out.code,
        7,
        "synod lock exits with its command's code: {}",
        describe(&out)
    );
    let mut lines = out.stdout.lines();
    let first = lines.next().unwrap_or_default();
    let (key, token) = first
        .strip_prefix("key=")
        .and_then(|rest| rest.split_once(" token="))
        .and_then(|(key, rest)| {
            let (token, etcd) = rest.split_once(" etcd=")?;
            Some((
                key.to_string(),
                token.parse::<i64>().ok()?,
                etcd.to_string(),
            ))
        })
        .map(|(key, token, etcd)| {
            assert_eq!(etcd, key, "ETCD_LOCK_KEY is the lock key too");
            (key, token)
        })
        .unwrap_or_else(|| panic!("unexpected lock environment: {}", describe(&out)));
    assert!(
        key.strip_prefix("F/")
            .is_some_and(|lease| !lease.is_empty() && lease.chars().all(|c| c.is_ascii_hexdigit())),
        "SYNOD_LOCK_KEY {key:?} is not F/<lease in hex>"
    );
    assert!(token > 0, "fencing token {token}");
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest.first()
            .is_some_and(|line| line.starts_with("OK (revision ")),
        "the fenced put under the lock: {}",
        describe(&out)
    );
    assert_eq!(
        rest.last().copied(),
        Some("wrong-token-exit=1"),
        "a fenced put with a wrong token exits 1: {}",
        describe(&out)
    );
    assert!(
        out.stderr.contains("is stale"),
        "a fenced put with a wrong token says the token is stale: {}",
        describe(&out)
    );

    // The next holder has a larger token; the old token is now stale.
    let out = run(synod(
        &endpoints,
        &["lock", "F", "--", "sh", "-c", "echo \"$SYNOD_LOCK_TOKEN\""],
    ));
    assert_eq!(out.code, 0, "second lock: {}", describe(&out));
    let second: i64 = out
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("second token: {}", describe(&out)));
    assert!(second > token, "tokens grow: {token} then {second}");
    let token_text = token.to_string();
    let out = run(synod(
        &endpoints,
        &[
            "put",
            "fenced/k",
            "late",
            "--fence-key",
            &key,
            "--fence-token",
            &token_text,
        ],
    ));
    assert!(
        out.code == 1 && out.stderr.contains("is stale"),
        "a fenced put after the lock moved on: {}",
        describe(&out)
    );
    let out = run(synod(&endpoints, &["get", "fenced/k"]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "v1\n"),
        "refused fenced puts changed nothing: {}",
        describe(&out)
    );
    // Both holders released the lock.
    let mut client = cluster.client(0).await;
    let left = client
        .get("F/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert!(left.kvs().is_empty(), "lock keys left behind: {left:?}");
}
