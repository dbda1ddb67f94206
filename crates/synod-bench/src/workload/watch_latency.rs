//! `watch-latency`: how long a change takes to reach a watcher.
//!
//! The clients are ordinary put clients whose values carry their send time (see
//! [`super::put::stamp`]); each watcher watches the prefix they write under and
//! records, for every event, the time from the put being sent to the event
//! arriving. When the clients stop, each watcher waits (bounded) until it has seen
//! as many measured events as there were acknowledged measured puts; events it never
//! got are reported as missing, because a watch must deliver every change.

use std::time::{Duration, Instant};

use futures::StreamExt;
use synod_proto::etcdserverpb::watch_client::WatchClient;
use synod_proto::etcdserverpb::watch_request::RequestUnion;
use synod_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::Streaming;

use super::put::read_stamp;
use crate::error::{describe_status, BenchError};
use crate::stats::Stats;

/// How long watchers may take, after the clients stop, to receive the last events.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Sub-prefix (under `--key-prefix`) the watch-latency clients write to, apart from
/// the keys of the other workloads.
pub const WATCH_KEYS_PREFIX: &str = "watch/";

/// What a watcher waits for once the clients have stopped.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Acknowledged puts sent while measuring: the events each watcher should see.
    pub expected: u64,
    /// When to give up waiting.
    pub deadline: Instant,
}

/// An open watch on the clients' prefix.
#[derive(Debug)]
pub struct Watcher {
    events: Streaming<WatchResponse>,
}

impl Watcher {
    /// Creates a watch on every key under `prefix`, waiting until the server
    /// confirms it, so no put of the run can precede it.
    pub async fn open(channel: Channel, prefix: &[u8]) -> Result<Watcher, BenchError> {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: synod_proto::prefix_end(prefix),
                ..Default::default()
            })),
        };
        // The request stream stays open after the create: a client that closes its
        // side of a Watch stream cancels its watchers.
        let requests = futures::stream::iter([create]).chain(futures::stream::pending());
        let setup_error = |reason: String| BenchError::Setup {
            what: "creating a watch".into(),
            reason,
        };
        let mut events = WatchClient::new(channel)
            .watch(requests)
            .await
            .map_err(|status| setup_error(describe_status(&status)))?
            .into_inner();
        match events.message().await {
            Ok(Some(response)) if response.created && !response.canceled => Ok(Watcher { events }),
            Ok(Some(response)) => Err(setup_error(format!(
                "the server answered the create with {response:?}"
            ))),
            Ok(None) => Err(setup_error("the server closed the stream".into())),
            Err(status) => Err(setup_error(describe_status(&status))),
        }
    }

    /// Records the latency of every event of a put sent at or after `measure_start`,
    /// until the [`Drain`] sent on `drain` is satisfied or expires.
    pub async fn run(
        mut self,
        epoch: Instant,
        measure_start: Instant,
        mut drain: watch::Receiver<Option<Drain>>,
        mut stats: Stats,
    ) -> Stats {
        loop {
            let target = *drain.borrow_and_update();
            if let Some(target) = target {
                if stats.ops >= target.expected {
                    return stats;
                }
                if Instant::now() >= target.deadline {
                    let missing = target.expected - stats.ops;
                    stats.errors += missing;
                    stats.first_error.get_or_insert_with(|| {
                        format!(
                            "a watcher missed {missing} of {} events (not delivered within \
                             {DRAIN_TIMEOUT:?} of the last put)",
                            target.expected
                        )
                    });
                    return stats;
                }
            }
            let deadline = target.map(|target| tokio::time::Instant::from_std(target.deadline));
            tokio::select! {
                message = self.events.message() => match message {
                    Ok(Some(response)) if response.canceled => {
                        stats.record_error(|| {
                            format!("the server cancelled a watch: {}", response.cancel_reason)
                        });
                        return stats;
                    }
                    Ok(Some(response)) => record(&response, epoch, measure_start, &mut stats),
                    Ok(None) => {
                        stats.record_error(|| "the server ended a watch stream".into());
                        return stats;
                    }
                    Err(status) => {
                        stats.record_error(|| format!("watch: {}", describe_status(&status)));
                        return stats;
                    }
                },
                changed = drain.changed() => {
                    if changed.is_err() {
                        return stats;
                    }
                }
                () = sleep_until_some(deadline) => {}
            }
        }
    }
}

/// Records the latency of each event in `response` whose put was sent while
/// measuring (events of the warm-up are not counted).
fn record(response: &WatchResponse, epoch: Instant, measure_start: Instant, stats: &mut Stats) {
    let received = Instant::now();
    for event in &response.events {
        let Some(sent) = event
            .kv
            .as_ref()
            .and_then(|kv| read_stamp(&kv.value, epoch))
        else {
            continue;
        };
        if sent >= measure_start {
            stats.record(received.saturating_duration_since(sent));
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => futures::future::pending().await,
    }
}
