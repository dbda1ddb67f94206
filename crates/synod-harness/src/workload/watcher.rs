//! One workload watcher: follows every change under the prefix, moving to another
//! (random) member whenever its stream breaks or goes silent, and resuming from
//! the revision after the last change it got — as a client must to get each
//! change exactly once (docs/ARCHITECTURE.md §1). What it received is checked after the run
//! with [`synod_check::check_watch`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::WatchOptions;
use synod_check::Change;

use super::{Counters, Endpoints};
use crate::client::quick_client;
use crate::history::changes_of;
use crate::rng::SeededRng;

/// Streams of [`SeededRng::derive`] for watchers start here (one per watcher).
const WATCHER_STREAM_BASE: u64 = 2_000;

/// How long creating a watch may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Silence after which a stream counts as dead. Members send a progress
/// notification every second (`--experimental-watch-progress-notify-interval`),
/// so a live stream is never this quiet.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause before watching again on another member.
const RESUME_PAUSE: Duration = Duration::from_millis(100);

/// What one watcher received.
#[derive(Debug, Default, Clone)]
pub struct WatchRecord {
    /// The first revision it covers (known once its first stream is created).
    pub start: Option<i64>,
    /// The changes, in the order received.
    pub changes: Vec<Change>,
    /// Streams opened, with the member each was on and the revision it started at.
    pub streams: Vec<(String, Option<i64>)>,
    /// Responses that canceled a stream (each makes the watcher resume).
    pub cancels: Vec<String>,
}

/// Everything one watcher task needs.
pub(super) struct WatcherTask {
    pub id: usize,
    pub seed: u64,
    pub prefix: String,
    pub from_revision_1: bool,
    pub endpoints: Endpoints,
    pub stop: Arc<AtomicBool>,
    pub record: Arc<Mutex<WatchRecord>>,
    pub counters: Arc<Counters>,
}

impl WatcherTask {
    fn record(&self) -> std::sync::MutexGuard<'_, WatchRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The revision the next stream starts at: after the last change received,
    /// or the first revision covered, or (for a watcher that starts "now" and has
    /// no stream yet) none.
    fn resume_revision(&self) -> Option<i64> {
        let record = self.record();
        match (record.changes.last(), record.start) {
            (Some(last), _) => Some(last.revision + 1),
            (None, Some(start)) => Some(start),
            (None, None) => self.from_revision_1.then_some(1),
        }
    }
}

/// Runs one watcher until told to stop.
pub(super) async fn run(task: WatcherTask) {
    let mut rng = SeededRng::derive(task.seed, WATCHER_STREAM_BASE + task.id as u64);
    while !task.stop.load(Ordering::SeqCst) {
        let endpoints = task.endpoints.borrow().clone();
        if let Some(endpoint) = endpoints.get(rng.below(endpoints.len())) {
            follow(&task, endpoint).await;
        }
        tokio::time::sleep(RESUME_PAUSE).await;
    }
}

/// Watches on one member until the stream breaks, goes silent or is canceled, or
/// the watcher is told to stop.
async fn follow(task: &WatcherTask, endpoint: &str) {
    let from = task.resume_revision();
    let Some(mut client) = quick_client(endpoint, CREATE_TIMEOUT).await else {
        return;
    };
    let mut options = WatchOptions::new().with_prefix().with_progress_notify();
    if let Some(from) = from {
        options = options.with_start_revision(from);
    }
    let created = tokio::time::timeout(
        CREATE_TIMEOUT,
        client.watch(task.prefix.as_str(), Some(options)),
    )
    .await;
    let Ok(Ok(mut stream)) = created else {
        return;
    };
    task.record().streams.push((endpoint.to_string(), from));
    while !task.stop.load(Ordering::SeqCst) {
        let response = match tokio::time::timeout(SILENCE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(response))) => response,
            _ => return,
        };
        let mut record = task.record();
        if response.created() && record.start.is_none() {
            let header_revision = response.header().map_or(0, |header| header.revision());
            record.start = Some(from.unwrap_or(header_revision + 1));
        }
        if response.canceled() {
            record.cancels.push(format!(
                "on {endpoint}: compact revision {}, reason {:?}",
                response.compact_revision(),
                response.cancel_reason()
            ));
            return;
        }
        let changes = changes_of(&response);
        task.counters
            .watched
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        record.changes.extend(changes);
    }
}
