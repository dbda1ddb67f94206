#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

// Watches over real processes: etcd 3.4's watch semantics against a follower
// (prefix, history replay, filters, prev_kv, cancel, progress, compaction), and
// docs/ARCHITECTURE.md §1's contract under a leader crash and restart: every watcher gets every
// change exactly once, in revision order, resuming on another member with
// start_revision = last seen + 1.

use std::collections::BTreeMap;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{finish_checks, mismatch, must, Cluster};
use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, WatchFilterType, WatchOptions, WatchResponse,
    WatchStream,
};
use synod_check::{check_watch, Change, WatchSpec, WatchedKeys};
use tokio::task::JoinSet;

const PROGRESS_FLAGS: &[&str] = &["--experimental-watch-progress-notify-interval", "1s"];

/// One event as a comparable tuple: (PUT or DELETE, key, value, mod revision).
type Ev = (String, String, String, i64);

fn ev(kind: &str, key: &str, value: &str, revision: i64) -> Ev {
    (
        kind.to_string(),
        key.to_string(),
        value.to_string(),
        revision,
    )
}

fn events_of(response: &WatchResponse) -> Vec<Ev> {
    response
        .events()
        .iter()
        .map(|event| {
            let kv = event.kv().expect("an event carries its kv");
            let kind = match event.event_type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            };
            (
                kind.to_string(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            )
        })
        .collect()
}

/// An event as the checkers see it.
fn change_of(event: &Ev) -> Change {
    let (kind, key, value, revision) = event;
    if kind == "PUT" {
        Change::put(*revision, key.as_str(), value.as_str())
    } else {
        Change::delete(*revision, key.as_str())
    }
}

fn header_revision(response: &WatchResponse) -> i64 {
    response.header().map_or(0, |header| header.revision())
}

/// The next response on `stream`, within `within`.
#[track_caller]
fn next_response(
    stream: &mut WatchStream,
    within: Duration,
) -> impl std::future::Future<Output = WatchResponse> + '_ {
    let caller = Location::caller();
    async move {
        match tokio::time::timeout(within, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => panic!("{caller}: the watch stream ended"),
            Ok(Err(error)) => panic!("{caller}: the watch stream failed: {error}"),
            Err(_) => panic!("{caller}: no watch response within {within:?}"),
        }
    }
}

/// Opens a stream with one watcher and returns it with the created response.
async fn create(
    client: &mut Client,
    key: &str,
    options: WatchOptions,
) -> (WatchStream, WatchResponse) {
    let mut stream = must("watch", client.watch(key, Some(options)).await);
    let created = next_response(&mut stream, Duration::from_secs(5)).await;
    assert!(
        created.created(),
        "first response is not `created`: {created:?}"
    );
    (stream, created)
}

/// Collects `count` events (from any number of responses), each response's events
/// for watch `id`; fails if they take more than 5 s.
async fn collect(stream: &mut WatchStream, id: i64, count: usize) -> Vec<Ev> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while events.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = next_response(stream, left).await;
        if response.watch_id() != id && !response.events().is_empty() {
            mismatch(format!(
                "events for watch {} on a stream whose watcher is {id}",
                response.watch_id()
            ));
        }
        events.extend(events_of(&response));
    }
    events
}

/// Responses that arrive within `window` (for checks that nothing more comes).
async fn drain(stream: &mut WatchStream, window: Duration) -> Vec<WatchResponse> {
    let mut responses = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(Some(response))) = tokio::time::timeout_at(deadline, stream.message()).await {
        responses.push(response);
    }
    responses
}

async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    must("put", client.put(key, value, None).await)
        .header()
        .map_or(0, |header| header.revision())
}

async fn delete(client: &mut Client, key: &str) -> i64 {
    must("delete", client.delete(key, None).await)
        .header()
        .map_or(0, |header| header.revision())
}

async fn current_revision(client: &mut Client) -> i64 {
    must("get", client.get("synod-watch-probe", None).await)
        .header()
        .map_or(0, |header| header.revision())
}

/// etcd's watch semantics, against a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_semantics_against_a_follower() {
    let cluster = Cluster::start(3, PROGRESS_FLAGS).await;
    let follower = cluster.follower().await;
    let mut client = cluster.client(follower).await;

    // History written before any stream exists.
    let r1 = put(&mut client, "w/a", "1").await;
    let r2 = put(&mut client, "w/b", "1").await;
    let r3 = put(&mut client, "other", "x").await;
    let r4 = delete(&mut client, "w/a").await;
    let r5 = put(&mut client, "w/b", "2").await;
    check_eq!(
        vec![r2, r3, r4, r5],
        vec![r1 + 1, r1 + 2, r1 + 3, r1 + 4],
        "one revision per write"
    );

    // (Each watch below is created after a linearizable read, so that the follower
    // has applied the writes above; read-your-writes without one is checked on its
    // own further down.)
    current_revision(&mut client).await;

    // Prefix watch replaying history from r1, then live events.
    let (mut stream, created) = create(
        &mut client,
        "w/",
        WatchOptions::new().with_prefix().with_start_revision(r1),
    )
    .await;
    let id = created.watch_id();
    check_eq!(header_revision(&created), r5, "created header revision");
    check!(
        !created.canceled(),
        "a fresh watch is canceled: {created:?}"
    );
    let replay = collect(&mut stream, id, 4).await;
    check_eq!(
        replay,
        vec![
            ev("PUT", "w/a", "1", r1),
            ev("PUT", "w/b", "1", r2),
            ev("DELETE", "w/a", "", r4),
            ev("PUT", "w/b", "2", r5),
        ],
        "history replayed from start_revision"
    );
    let r6 = put(&mut client, "w/c", "live").await;
    put(&mut client, "other", "y").await;
    let r8 = put(&mut client, "w/", "exact-prefix").await;
    check_eq!(
        collect(&mut stream, id, 2).await,
        vec![
            ev("PUT", "w/c", "live", r6),
            ev("PUT", "w/", "exact-prefix", r8)
        ],
        "live events after the replay, keys outside the prefix left out"
    );

    // A watch with no start revision starts after the current one.
    current_revision(&mut client).await;
    let (mut live_only, created) =
        create(&mut client, "w/", WatchOptions::new().with_prefix()).await;
    check_eq!(header_revision(&created), r8, "created header revision");
    let r9 = put(&mut client, "w/d", "1").await;
    check_eq!(
        collect(&mut live_only, created.watch_id(), 1).await,
        vec![ev("PUT", "w/d", "1", r9)],
        "a watch without start revision sees only new events"
    );

    // Read-your-writes: a watch created on the member that acknowledged a write
    // starts after that write (etcd's member applies a write before answering it).
    let mut stale = Vec::new();
    for attempt in 0..50 {
        let written = put(&mut client, "ryw", &attempt.to_string()).await;
        let (_stream, created) = create(&mut client, "ryw", WatchOptions::new()).await;
        if header_revision(&created) < written {
            stale.push((written, header_revision(&created)));
        }
    }
    check!(
        stale.is_empty(),
        "a watch created right after an acknowledged put on the same follower starts \
         before it, {} times in 50: (put revision, created header revision) {stale:?}",
        stale.len()
    );

    // A single-key watch sees only that key.
    current_revision(&mut client).await;
    let (mut single, created) = create(&mut client, "w/d", WatchOptions::new()).await;
    put(&mut client, "w/dd", "1").await;
    let r = put(&mut client, "w/d", "2").await;
    check_eq!(
        collect(&mut single, created.watch_id(), 1).await,
        vec![ev("PUT", "w/d", "2", r)],
        "a single-key watch"
    );

    // Filters.
    let (mut no_put, created_no_put) = create(
        &mut client,
        "f/",
        WatchOptions::new()
            .with_prefix()
            .with_filters([WatchFilterType::NoPut]),
    )
    .await;
    let (mut no_delete, created_no_delete) = create(
        &mut client,
        "f/",
        WatchOptions::new()
            .with_prefix()
            .with_filters([WatchFilterType::NoDelete]),
    )
    .await;
    let p1 = put(&mut client, "f/x", "1").await;
    let d1 = delete(&mut client, "f/x").await;
    let p2 = put(&mut client, "f/y", "1").await;
    let d2 = delete(&mut client, "f/y").await;
    check_eq!(
        collect(&mut no_put, created_no_put.watch_id(), 2).await,
        vec![ev("DELETE", "f/x", "", d1), ev("DELETE", "f/y", "", d2)],
        "NOPUT filter"
    );
    check_eq!(
        collect(&mut no_delete, created_no_delete.watch_id(), 2).await,
        vec![ev("PUT", "f/x", "1", p1), ev("PUT", "f/y", "1", p2)],
        "NODELETE filter"
    );

    // prev_kv.
    let (mut prev, created) = create(&mut client, "p/k", WatchOptions::new().with_prev_key()).await;
    put(&mut client, "p/k", "1").await;
    put(&mut client, "p/k", "2").await;
    delete(&mut client, "p/k").await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = next_response(&mut prev, left).await;
        check_eq!(
            response.watch_id(),
            created.watch_id(),
            "watch id of events"
        );
        for event in response.events() {
            seen.push((
                format!("{:?}", event.event_type()),
                event.prev_kv().map(|kv| {
                    (
                        String::from_utf8_lossy(kv.value()).into_owned(),
                        kv.version(),
                    )
                }),
            ));
        }
    }
    check_eq!(
        seen,
        vec![
            ("Put".to_string(), None),
            ("Put".to_string(), Some(("1".to_string(), 1))),
            ("Delete".to_string(), Some(("2".to_string(), 2))),
        ],
        "prev_kv of a create, an update and a delete"
    );

    // Cancel.
    let (mut canceled, created) =
        create(&mut client, "c/", WatchOptions::new().with_prefix()).await;
    let cancel_id = created.watch_id();
    must("cancel", canceled.cancel(cancel_id).await);
    let response = next_response(&mut canceled, Duration::from_secs(5)).await;
    check!(
        response.canceled() && response.watch_id() == cancel_id && response.events().is_empty(),
        "cancel response: {response:?}"
    );
    put(&mut client, "c/after", "1").await;
    let late = drain(&mut canceled, Duration::from_millis(700)).await;
    check!(
        late.iter().all(|response| response.events().is_empty()),
        "events after cancel: {late:?}"
    );

    // Several watchers on one stream, told apart by id; cancel one of them.
    let (mut shared, first) = create(&mut client, "s/a", WatchOptions::new()).await;
    must(
        "second watcher",
        shared.watch("s/b", Some(WatchOptions::new())).await,
    );
    let second = next_response(&mut shared, Duration::from_secs(5)).await;
    check!(
        second.created() && second.watch_id() != first.watch_id(),
        "second watcher on a stream: {second:?} (first id {})",
        first.watch_id()
    );
    let ra = put(&mut client, "s/a", "1").await;
    let rb = put(&mut client, "s/b", "1").await;
    let mut by_id: BTreeMap<i64, Vec<Ev>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while by_id.values().map(Vec::len).sum::<usize>() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let response = next_response(&mut shared, left).await;
        by_id
            .entry(response.watch_id())
            .or_default()
            .extend(events_of(&response));
    }
    check_eq!(
        by_id,
        BTreeMap::from([
            (first.watch_id(), vec![ev("PUT", "s/a", "1", ra)]),
            (second.watch_id(), vec![ev("PUT", "s/b", "1", rb)]),
        ]),
        "events routed by watch id"
    );

    // Progress request: answered with the current revision once caught up.
    let (mut progress, _) =
        create(&mut client, "nothing/", WatchOptions::new().with_prefix()).await;
    put(&mut client, "elsewhere", "1").await;
    let current = current_revision(&mut client).await;
    must("request progress", progress.request_progress().await);
    let response = next_response(&mut progress, Duration::from_secs(5)).await;
    check!(
        response.events().is_empty() && !response.created() && !response.canceled(),
        "progress response: {response:?}"
    );
    check_eq!(
        header_revision(&response),
        current,
        "progress response header revision"
    );
    // etcd 3.4 answers a progress request with watch id -1 (InvalidWatchID).
    check_eq!(response.watch_id(), -1, "progress response watch id");

    // progress_notify: an idle watcher hears the revision every ~1 s.
    let (mut notified, created) = create(
        &mut client,
        "idle/",
        WatchOptions::new().with_prefix().with_progress_notify(),
    )
    .await;
    put(&mut client, "elsewhere", "2").await;
    let current = current_revision(&mut client).await;
    let started = Instant::now();
    let notifications = drain(&mut notified, Duration::from_millis(3500)).await;
    check!(
        (2..=4).contains(&notifications.len()),
        "{} progress notifications in 3.5 s at a 1 s interval: {notifications:?}",
        notifications.len()
    );
    for response in &notifications {
        check!(
            response.events().is_empty() && response.watch_id() == created.watch_id(),
            "progress notification: {response:?}"
        );
        check_eq!(
            header_revision(response),
            current,
            "progress notification revision"
        );
    }
    check!(
        started.elapsed() >= Duration::from_millis(3400),
        "progress drain ended early"
    );

    // A start revision in the future: events from there on only.
    let now = current_revision(&mut client).await;
    let (mut future, created) = create(
        &mut client,
        "fut",
        WatchOptions::new().with_start_revision(now + 2),
    )
    .await;
    put(&mut client, "fut", "1").await;
    let r = put(&mut client, "fut", "2").await;
    check_eq!(r, now + 2, "revision of the second write");
    check_eq!(
        collect(&mut future, created.watch_id(), 1).await,
        vec![ev("PUT", "fut", "2", now + 2)],
        "a watch from a future revision"
    );

    // Compaction: a start revision below it is canceled with compact_revision set;
    // the compacted revision itself can still be watched.
    let compacted_at = current_revision(&mut client).await;
    must("compact", client.compact(compacted_at, None).await);
    // (A linearizable read first, so the follower has surely applied the compaction.)
    current_revision(&mut client).await;
    let (mut too_old, created) = create(
        &mut client,
        "w/",
        WatchOptions::new().with_prefix().with_start_revision(r1),
    )
    .await;
    let response = if created.canceled() {
        created
    } else {
        next_response(&mut too_old, Duration::from_secs(5)).await
    };
    check!(
        response.canceled() && response.events().is_empty(),
        "a watch from a compacted revision: {response:?}"
    );
    check_eq!(
        response.compact_revision(),
        compacted_at,
        "compact_revision of the canceled watch"
    );
    let (mut at_compaction, created) = create(
        &mut client,
        "fut",
        WatchOptions::new().with_start_revision(compacted_at),
    )
    .await;
    check!(!created.canceled(), "a watch from the compaction revision");
    let r = put(&mut client, "fut", "3").await;
    check_eq!(
        collect(&mut at_compaction, created.watch_id(), 2).await,
        vec![
            ev("PUT", "fut", "2", compacted_at),
            ev("PUT", "fut", "3", r)
        ],
        "a watch from the compacted revision itself"
    );
    drop((stream, live_only, single, no_put, no_delete, prev, shared));
    finish_checks();
}

// ---- the chaos test ----

/// A client bound to one endpoint with short timeouts.
async fn quick_client(endpoint: &str) -> Option<Client> {
    Client::connect(
        [endpoint],
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_secs(2)),
        ),
    )
    .await
    .ok()
}

/// Writes unique puts (and deletes of its own earlier keys) under `w/{id}/` through
/// rotating endpoints until `stop`; counts acknowledged writes in `acknowledged`.
async fn writer(
    id: usize,
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
) {
    let mut clients: Vec<Option<Client>> = (0..endpoints.len()).map(|_| None).collect();
    let mut attempt = 0usize;
    let mut sequence = 0usize;
    let give_up = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
        attempt += 1;
        let endpoint = (id + attempt) % endpoints.len();
        if clients[endpoint].is_none() {
            clients[endpoint] = quick_client(&endpoints[endpoint]).await;
        }
        let Some(client) = clients[endpoint].as_mut() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let result = if sequence % 3 == 2 {
            client
                .delete(format!("w/{id}/{:04}", sequence - 2), None)
                .await
                .map(|_| ())
        } else {
            client
                .put(
                    format!("w/{id}/{sequence:04}"),
                    format!("v{id}-{sequence}-{attempt}"),
                    None,
                )
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) => {
                acknowledged.fetch_add(1, Ordering::SeqCst);
                sequence += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                clients[endpoint] = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// What one watcher received, shared with the test.
#[derive(Debug, Default)]
struct Received {
    /// The first revision it watches from (known once its first stream is created).
    start: Option<i64>,
    events: Vec<Ev>,
    /// Members it watched on, in order.
    members: Vec<usize>,
    /// Responses that break the contract other than by their events (unexpected
    /// cancels).
    anomalies: Vec<String>,
}

/// A watcher on prefix `w/` that fails over: whenever its stream breaks or stalls,
/// it watches again on the next member from the revision after the last event it
/// got (or from its first start revision if it has none yet).
async fn watcher(
    endpoints: Vec<String>,
    first_member: usize,
    start: Option<i64>,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
) {
    let mut member = first_member;
    let give_up = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
        let from = {
            let received = received.lock().unwrap();
            match (received.events.last(), received.start) {
                (Some(last), _) => Some(last.3 + 1),
                (None, Some(first)) => Some(first),
                (None, None) => start,
            }
        };
        received.lock().unwrap().members.push(member);
        if let Some(mut client) = quick_client(&endpoints[member]).await {
            let mut options = WatchOptions::new().with_prefix().with_progress_notify();
            if let Some(from) = from {
                options = options.with_start_revision(from);
            }
            if let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_secs(2), client.watch("w/", Some(options)))
                    .await
            {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    // With progress notifications every second, 5 s of silence is a
                    // dead member.
                    let response = match tokio::time::timeout(
                        Duration::from_secs(5),
                        stream.message(),
                    )
                    .await
                    {
                        Ok(Ok(Some(response))) => response,
                        _ => break,
                    };
                    let mut received = received.lock().unwrap();
                    if response.created() {
                        if received.start.is_none() {
                            received.start = Some(from.unwrap_or(header_revision(&response) + 1));
                        }
                        continue;
                    }
                    if response.canceled() {
                        received
                            .anomalies
                            .push(format!("canceled on member {member}: {response:?}"));
                        break;
                    }
                    // Order, gaps and duplicates are judged at the end, by
                    // synod_check::check_watch against the store's history.
                    received.events.extend(events_of(&response));
                }
            }
        }
        member = (member + 1) % endpoints.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The prefix's state (key -> (value, mod revision)) at `revision`, from a range.
async fn state_at(
    client: &mut Client,
    prefix: &str,
    revision: i64,
) -> BTreeMap<String, (String, i64)> {
    let response = must(
        "range at a revision",
        client
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_revision(revision)),
            )
            .await,
    );
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.mod_revision(),
                ),
            )
        })
        .collect()
}

/// Checks a history (every write under `prefix` since `base`, one per revision up
/// to `last`) against the store itself: the revisions are exactly base+1..=last,
/// and replaying the events gives the state a range returns at a sample of
/// revisions and at the last one.
async fn check_history(client: &mut Client, prefix: &str, history: &[Ev], base: i64, last: i64) {
    let revisions: Vec<i64> = history.iter().map(|event| event.3).collect();
    let want: Vec<i64> = (base + 1..=last).collect();
    assert!(
        revisions == want,
        "the history is not one write per revision from {} to {last}: {}",
        base + 1,
        first_difference(
            history,
            &want
                .iter()
                .map(|revision| ev("?", "?", "?", *revision))
                .collect::<Vec<_>>()
        )
    );
    let step = (history.len() / 25).max(1);
    let mut state: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for (index, (kind, key, value, revision)) in history.iter().enumerate() {
        if kind == "PUT" {
            state.insert(key.clone(), (value.clone(), *revision));
        } else {
            state.remove(key);
        }
        if index % step == 0 || index + 1 == history.len() {
            let stored = state_at(client, prefix, *revision).await;
            assert!(
                stored == state,
                "replaying the history up to revision {revision} does not give the stored \
                 state\n  stored:   {stored:?}\n  replayed: {state:?}"
            );
        }
    }
}

/// Where the first difference between two event lists is, for failure messages.
fn first_difference(got: &[Ev], want: &[Ev]) -> String {
    let index = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "got {} events, want {}; first difference at #{index}: got {:?}, want {:?}",
        got.len(),
        want.len(),
        got.get(index),
        want.get(index)
    )
}

/// 5 writers and 20 watchers while the leader is killed and restarted: every
/// watcher gets exactly the MVCC history from its start revision, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_get_every_event_once_across_leader_crash() {
    const WATCHERS: usize = 20;
    let mut cluster = Cluster::start(3, PROGRESS_FLAGS).await;
    let endpoints = cluster.endpoints();
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let mut client = cluster.client(follower).await;
    let base = current_revision(&mut client).await;
    for index in 0..10 {
        put(&mut client, &format!("w/setup/{index}"), "s").await;
    }

    let stop_watchers = Arc::new(AtomicBool::new(false));
    let mut watchers = JoinSet::new();
    let mut received: Vec<Arc<Mutex<Received>>> = Vec::new();
    let mut spawn_watcher = |index: usize, start: Option<i64>| {
        let shared = Arc::new(Mutex::new(Received::default()));
        received.push(shared.clone());
        watchers.spawn(watcher(
            endpoints.clone(),
            index % endpoints.len(),
            start,
            shared,
            stop_watchers.clone(),
        ));
    };
    // 0..6 from now, 6..10 from revision 1, before the writers start.
    for index in 0..6 {
        spawn_watcher(index, None);
    }
    for index in 6..10 {
        spawn_watcher(index, Some(1));
    }

    let stop_writers = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    let counts: Vec<Arc<AtomicUsize>> = (0..5).map(|_| Arc::default()).collect();
    for (id, count) in counts.iter().enumerate() {
        writers.spawn(writer(
            id,
            endpoints.clone(),
            stop_writers.clone(),
            count.clone(),
        ));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let midway = current_revision(&mut client).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(leader);
    eprintln!(
        "{:?}: killed the leader m{leader} (revision ~{midway} at 1 s)",
        t0.elapsed()
    );
    // 10..15 from the revision captured at 1 s, 15..20 from now: created while the
    // cluster elects a new leader.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for index in 10..15 {
        spawn_watcher(index, Some(midway));
    }
    for index in 15..WATCHERS {
        spawn_watcher(index, None);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.spawn(leader);
    eprintln!("{:?}: restarted m{leader}", t0.elapsed());
    // Writers go on for at least 2 s with the old leader back, and until each has
    // 110 acknowledged writes.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while counts
        .iter()
        .any(|count| count.load(Ordering::SeqCst) < 110)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_writers.store(true, Ordering::SeqCst);
    while let Some(result) = writers.join_next().await {
        result.expect("writer task");
    }
    let writes: Vec<usize> = counts
        .iter()
        .map(|count| count.load(Ordering::SeqCst))
        .collect();
    eprintln!(
        "{:?}: writers stopped after {writes:?} writes",
        t0.elapsed()
    );
    assert!(
        writes.iter().all(|count| *count >= 110),
        "writers could not write enough within 40 s: {writes:?}"
    );

    // The cluster is quiet: the history is final.
    cluster.wait_ready().await;
    eprintln!("{:?}: cluster ready", t0.elapsed());
    let new_leader = cluster.leader().await;
    let mut reader = cluster.client(new_leader).await;
    let last = current_revision(&mut reader).await;

    // The history: what a watch from revision 1 replays on each member (all the
    // same), checked against ranges of the store.
    let mut history: Option<Vec<Ev>> = None;
    for (index, endpoint) in endpoints.iter().enumerate() {
        let mut client = common::connect(std::slice::from_ref(endpoint)).await;
        let (mut stream, created) = create(
            &mut client,
            "w/",
            WatchOptions::new().with_prefix().with_start_revision(1),
        )
        .await;
        let mut replay = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while replay.last().is_none_or(|event: &Ev| event.3 < last) {
            let left = deadline.saturating_duration_since(Instant::now());
            let response = next_response(&mut stream, left).await;
            check_eq!(response.watch_id(), created.watch_id(), "replay watch id");
            replay.extend(events_of(&response));
        }
        match &history {
            None => history = Some(replay),
            Some(history) => assert!(
                replay == *history,
                "a watch from revision 1 on member {index} disagrees with member 0: {}",
                first_difference(&replay, history)
            ),
        }
    }
    let history = history.expect("a history");
    check_history(&mut reader, "w/", &history, base, last).await;
    eprintln!(
        "{:?}: history of {} events up to revision {last}, the same on every member \
         and consistent with ranges",
        t0.elapsed(),
        history.len()
    );
    let last_event = last;

    // Every watcher reaches the last event.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let behind: Vec<usize> = received
            .iter()
            .enumerate()
            .filter(|(_, shared)| {
                shared
                    .lock()
                    .unwrap()
                    .events
                    .last()
                    .is_none_or(|last| last.3 < last_event)
            })
            .map(|(index, _)| index)
            .collect();
        if behind.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let states: Vec<String> = behind
                .iter()
                .map(|index| {
                    let state = received[*index].lock().unwrap();
                    format!(
                        "watcher {index}: start {:?}, {} events, last {:?}, members {:?}, anomalies {:?}",
                        state.start,
                        state.events.len(),
                        state.events.last(),
                        state.members,
                        state.anomalies
                    )
                })
                .collect();
            panic!(
                "watchers did not reach revision {last_event} within 30 s:\n{}",
                states.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A little longer, to catch duplicates sent after the last event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_watchers.store(true, Ordering::SeqCst);
    while let Some(result) = watchers.join_next().await {
        result.expect("watcher task");
    }

    let store_history: Vec<Change> = history.iter().map(change_of).collect();
    let mut failures = Vec::new();
    let mut resumed = 0;
    for (index, shared) in received.iter().enumerate() {
        let state = shared.lock().unwrap();
        let Some(start) = state.start else {
            failures.push(format!("watcher {index} never got a created response"));
            continue;
        };
        let spec = WatchSpec {
            keys: WatchedKeys::Prefix("w/".into()),
            start_revision: start,
            delivered_through: last_event,
        };
        let delivered: Vec<Change> = state.events.iter().map(change_of).collect();
        if let Err(violation) = check_watch(&spec, &delivered, &store_history) {
            failures.push(format!(
                "watcher {index} (from revision {start}, members {:?}): {violation}",
                state.members
            ));
        }
        if !state.anomalies.is_empty() {
            failures.push(format!("watcher {index}: {:?}", state.anomalies));
        }
        if state.members.len() > 1 {
            resumed += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} watcher(s) broke the contract:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        resumed >= 2,
        "only {resumed} watchers had to resume on another member; the crash proved nothing"
    );
    eprintln!("{resumed} watchers resumed on another member");
}
