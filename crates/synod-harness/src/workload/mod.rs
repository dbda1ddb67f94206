//! The workload of a fault run: concurrent clients doing gets, puts, deletes and
//! compare-and-swap transactions on a few keys through random members (seeded
//! choices), and watchers following every change — all recorded for the checkers.
//!
//! Keys rotate every [`WorkloadOptions::key_epoch`]: the linearizability search is
//! per key and grows with a key's history, so a long soak uses a fresh set of
//! keys every epoch (the way Jepsen's independent keys do) and stays checkable.
//!
//! The members clients talk to come from a [`tokio::sync::watch`] channel the
//! run updates as membership changes.

mod client;
mod watcher;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use synod_check::{AcknowledgedWrite, Change, Event, RevisionObservation};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use watcher::WatchRecord;

/// The members' client endpoints, as the run last published them.
pub type Endpoints = watch::Receiver<Vec<String>>;

/// What the workload does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys per epoch.
    pub keys: usize,
    /// Every key starts with it; the watchers watch it.
    pub prefix: String,
    /// How long a set of keys is used before the clients move to fresh ones.
    pub key_epoch: Duration,
    /// How long one request may take before its outcome is unknown.
    pub request_timeout: Duration,
    /// Watchers following the prefix (the first from revision 1, the others from
    /// the revision at which they start).
    pub watchers: usize,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            clients: 8,
            keys: 3,
            prefix: "fault/".into(),
            key_epoch: Duration::from_secs(10),
            request_timeout: Duration::from_secs(3),
            watchers: 2,
        }
    }
}

/// Counts the run prints progress from.
#[derive(Debug, Default)]
pub struct Counters {
    /// Operations with an answer.
    pub answered: AtomicU64,
    /// Operations whose outcome is unknown (timeouts, lost connections).
    pub unknown: AtomicU64,
    /// Changes delivered to watchers.
    pub watched: AtomicU64,
}

/// What the clients recorded.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    /// Every operation, for the linearizability checker.
    pub history: Vec<Event>,
    /// The endpoint each operation of `history` was sent to (same positions), for
    /// reports.
    pub served_by: Vec<String>,
    /// The header revision of every answered operation.
    pub revisions: Vec<RevisionObservation>,
    /// Every write acknowledged, at the revision its response reported.
    pub acknowledged: Vec<AcknowledgedWrite>,
}

impl Recorded {
    /// The operations that were in flight from `call` to `ret` (the ones a revision
    /// observation came from), with the endpoint each was sent to.
    pub fn operations_between(&self, call: u64, ret: u64) -> Vec<(&Event, &str)> {
        self.history
            .iter()
            .zip(&self.served_by)
            .filter(|(event, _)| event.call == call && event.ret == ret)
            .map(|(event, endpoint)| (event, endpoint.as_str()))
            .collect()
    }

    fn extend(&mut self, other: Recorded) {
        self.history.extend(other.history);
        self.served_by.extend(other.served_by);
        self.revisions.extend(other.revisions);
        self.acknowledged.extend(other.acknowledged);
    }
}

/// The running workload.
pub struct Workload {
    options: WorkloadOptions,
    start: Instant,
    started_at: std::time::SystemTime,
    stop_clients: Arc<AtomicBool>,
    stop_watchers: Arc<AtomicBool>,
    clients: JoinSet<Recorded>,
    watchers: JoinSet<()>,
    watch_records: Vec<Arc<Mutex<WatchRecord>>>,
    counters: Arc<Counters>,
}

impl Workload {
    /// Starts the clients and watchers; `seed` decides every client's choices.
    pub fn start(seed: u64, options: WorkloadOptions, endpoints: Endpoints) -> Workload {
        let start = Instant::now();
        let stop_clients = Arc::new(AtomicBool::new(false));
        let stop_watchers = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut clients = JoinSet::new();
        for id in 0..options.clients {
            clients.spawn(client::run(client::ClientTask {
                id,
                seed,
                options: options.clone(),
                endpoints: endpoints.clone(),
                start,
                stop: stop_clients.clone(),
                counters: counters.clone(),
            }));
        }
        let mut watchers = JoinSet::new();
        let mut watch_records = Vec::new();
        for id in 0..options.watchers {
            let record = Arc::new(Mutex::new(WatchRecord::default()));
            watch_records.push(record.clone());
            watchers.spawn(watcher::run(watcher::WatcherTask {
                id,
                seed,
                prefix: options.prefix.clone(),
                from_revision_1: id == 0,
                endpoints: endpoints.clone(),
                stop: stop_watchers.clone(),
                record,
                counters: counters.clone(),
            }));
        }
        Workload {
            options,
            start,
            started_at: std::time::SystemTime::now(),
            stop_clients,
            stop_watchers,
            clients,
            watchers,
            watch_records,
            counters,
        }
    }

    /// The workload's options.
    pub fn options(&self) -> &WorkloadOptions {
        &self.options
    }

    /// The counters, for progress lines.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The wall-clock time the recorded times count from.
    pub fn started_at(&self) -> std::time::SystemTime {
        self.started_at
    }

    /// How long the workload has run.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops the clients (each finishes its request in flight, bounded by the
    /// request timeout) and returns what they recorded.
    pub async fn stop_clients(&mut self) -> Recorded {
        self.stop_clients.store(true, Ordering::SeqCst);
        let mut recorded = Recorded::default();
        while let Some(result) = self.clients.join_next().await {
            if let Ok(part) = result {
                recorded.extend(part);
            }
        }
        recorded
    }

    /// The newest revision every watcher has seen a change at (0 if some watcher
    /// has seen none).
    pub fn watched_through(&self) -> i64 {
        self.watch_records
            .iter()
            .map(|record| {
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .changes
                    .last()
                    .map_or(0, |change: &Change| change.revision)
            })
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Stops the watchers and returns what each received.
    pub async fn stop_watchers(&mut self) -> Vec<WatchRecord> {
        self.stop_watchers.store(true, Ordering::SeqCst);
        while self.watchers.join_next().await.is_some() {}
        self.watch_records
            .iter()
            .map(|record| {
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }
}

/// Microseconds since `start`: the time unit of recorded histories.
fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}
