//! One run: connect, set up, drive every client until the stop condition, merge.
//!
//! The clock: `epoch` is taken before setup (the origin of watch-latency's
//! timestamps); measuring starts `--warmup` after setup ends. An operation belongs
//! to the measurement if it *started* after that point, and a client stops starting
//! operations once the duration is up or `--total` operations have been claimed, so
//! the measured time ends when the last client's last operation returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::args::{Plan, StopAfter};
use crate::connect::Connections;
use crate::error::{describe_status, BenchError};
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::Stats;
use crate::workload::watch_latency::{Drain, DRAIN_TIMEOUT};
use crate::workload::{self, Op, Outcome};

/// What every client reads to know whether to go on.
#[derive(Debug)]
struct Clock {
    measure_start: Instant,
    stop_after: StopAfter,
    /// Operations claimed against `--total`.
    claimed: AtomicU64,
    counters: Arc<Counters>,
}

impl Clock {
    /// Whether an operation starting at `now`, while measuring, may run.
    fn may_start(&self, now: Instant) -> bool {
        match self.stop_after {
            StopAfter::Duration(duration) => now < self.measure_start + duration,
            StopAfter::Total(total) => self.claimed.fetch_add(1, Ordering::Relaxed) < total,
        }
    }
}

/// Runs `plan` and returns its report.
pub async fn run(plan: &Plan) -> Result<Report, BenchError> {
    let epoch = Instant::now();
    let connections =
        Connections::open(&plan.endpoints, plan.conns, plan.args.request_timeout).await?;
    let setup = workload::setup(plan, &connections, epoch).await?;

    let counters = Arc::new(Counters::default());
    let clock = Arc::new(Clock {
        measure_start: Instant::now() + plan.args.warmup,
        stop_after: plan.stop_after,
        claimed: AtomicU64::new(0),
        counters: counters.clone(),
    });
    let progress = Progress::start(
        plan.args.workload.name(),
        counters,
        clock.measure_start,
        plan.stop_after,
    );

    let (drain_sender, drain) = watch::channel(None);
    let mut watchers = Vec::with_capacity(setup.watchers.len());
    for watcher in setup.watchers {
        let stats = Stats::new()?;
        watchers.push(tokio::spawn(watcher.run(
            epoch,
            clock.measure_start,
            drain.clone(),
            stats,
        )));
    }
    let mut clients = Vec::with_capacity(setup.ops.len());
    for op in setup.ops {
        let stats = Stats::new()?;
        clients.push(tokio::spawn(drive(op, clock.clone(), stats)));
    }

    let mut operations = Stats::new()?;
    for client in clients {
        let stats = client
            .await
            .map_err(|error| BenchError::Runtime(format!("a client task failed: {error}")))?;
        operations.merge(&stats);
    }
    let duration = clock.measure_start.elapsed();

    let _ = drain_sender.send(Some(Drain {
        expected: operations.ops,
        deadline: Instant::now() + DRAIN_TIMEOUT,
    }));
    let mut events = Stats::new()?;
    for watcher in watchers {
        let stats = watcher
            .await
            .map_err(|error| BenchError::Runtime(format!("a watcher task failed: {error}")))?;
        events.merge(&stats);
    }
    if let Some(leases) = setup.leases {
        if let Some(failure) = leases.finish().await {
            operations.record_error(|| failure);
        }
    }
    progress.finish().await;

    let latency = if plan.args.workload == crate::args::Workload::WatchLatency {
        &events
    } else {
        &operations
    };
    Ok(Report::new(plan, duration, &operations, latency))
}

/// One client: runs `op` back to back until the clock says stop, recording each
/// measured operation into `stats`.
async fn drive(mut op: Op, clock: Arc<Clock>, mut stats: Stats) -> Stats {
    loop {
        let start = Instant::now();
        let measuring = start >= clock.measure_start;
        if measuring && !clock.may_start(start) {
            return stats;
        }
        let result = op.run().await;
        if !measuring {
            continue;
        }
        match result {
            Ok(outcome) => {
                stats.record(start.elapsed());
                if outcome == Outcome::ConditionFailed {
                    stats.failures += 1;
                }
            }
            Err(status) => {
                stats.record_error(|| describe_status(&status));
                clock.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        clock.counters.completed.fetch_add(1, Ordering::Relaxed);
    }
}
