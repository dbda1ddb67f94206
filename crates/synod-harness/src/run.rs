//! A fault run: a cluster behind the peer proxy, the recorded workload on it, a
//! seeded fault schedule played against it, then every check. This is what the
//! `fault_schedule` tests and the `synod-soak` command run; they differ only in
//! their [`RunOptions`].
//!
//! The order of the end matters: faults healed and the cluster ready, clients
//! stopped, one last write whose revision every watcher must reach, the store's
//! history read back, replicas hashed — and only then the (CPU-heavy) checkers,
//! on a blocking thread so they never starve the proxy's tasks.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::checks::{check_recorded, write_diagnostics, CheckSummary};
use crate::client::quick_client;
use crate::cluster::Cluster;
use crate::faults::{exited_instead, heal, inject};
use crate::history::{check_history_against_ranges, read_history};
use crate::schedule::{FaultKind, FaultSchedule, FaultStep, ScheduleOptions};
use crate::workload::{Workload, WorkloadOptions};

/// Flags every member of a fault run gets: progress notifications every second
/// (watchers tell a silent stream from a dead one by them), and snapshots often
/// enough that a restarted or fresh member sometimes catches up by one.
pub const FAULT_RUN_SERVE_ARGS: &[&str] = &[
    "--experimental-watch-progress-notify-interval",
    "1s",
    "--snapshot-count",
    "2000",
    "--snapshot-catchup-entries",
    "500",
];

/// How long the end of a run may take at each stage (a last write, watchers
/// catching up).
const END_TIMEOUT: Duration = Duration::from_secs(30);

/// Fault-free traffic after the last step, before the clients stop.
const FINAL_QUIET: Duration = Duration::from_secs(1);

/// What a fault run does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The `synod` binary.
    pub binary: PathBuf,
    /// Members at the start (membership steps keep the count).
    pub nodes: usize,
    /// Decides the schedule and every client's choices.
    pub seed: u64,
    /// About how long the faults should go on.
    pub duration: Duration,
    /// Kinds the schedule must include.
    pub cover: Vec<FaultKind>,
    /// Kinds random steps are drawn from.
    pub kinds: Vec<FaultKind>,
    /// Stop injecting once `duration` has passed even if steps remain (and keep
    /// the workload going until then if they run out early). Without it, every
    /// step runs, however long that takes.
    pub stop_at_duration: bool,
    /// The workload.
    pub workload: WorkloadOptions,
    /// `synod serve` flags of every member.
    pub serve_args: Vec<String>,
    /// How often a progress line reports the counts.
    pub progress_interval: Duration,
}

impl RunOptions {
    /// A run of every kind of fault with the default workload.
    pub fn new(binary: impl Into<PathBuf>, nodes: usize, seed: u64, duration: Duration) -> Self {
        RunOptions {
            binary: binary.into(),
            nodes,
            seed,
            duration,
            cover: Vec::new(),
            kinds: FaultKind::ALL.to_vec(),
            stop_at_duration: false,
            workload: WorkloadOptions::default(),
            serve_args: FAULT_RUN_SERVE_ARGS
                .iter()
                .map(|arg| arg.to_string())
                .collect(),
            progress_interval: Duration::from_secs(10),
        }
    }

    /// The schedule these options give. A run that stops at its duration plans
    /// twice as many steps as the estimates say fit, since steps usually recover
    /// faster than estimated and faults should go on until the end.
    pub fn schedule(&self) -> FaultSchedule {
        let planned = if self.stop_at_duration {
            self.duration.saturating_mul(2)
        } else {
            self.duration
        };
        FaultSchedule::generate(
            self.seed,
            &ScheduleOptions {
                nodes: self.nodes,
                duration: planned,
                cover: self.cover.clone(),
                kinds: self.kinds.clone(),
            },
        )
    }
}

/// One step as it was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedFault {
    /// The planned step.
    pub step: FaultStep,
    /// When it started, from the start of the run.
    pub at: Duration,
    /// How long the fault and the recovery after it took.
    pub took: Duration,
    /// What was done, with the members chosen.
    pub what: String,
}

impl fmt::Display for AppliedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} at {:.1}s: {} (with recovery {:.1}s)",
            self.step.number,
            self.at.as_secs_f64(),
            self.what,
            self.took.as_secs_f64()
        )
    }
}

/// A run that passed every check.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The schedule planned.
    pub schedule: FaultSchedule,
    /// The steps carried out.
    pub applied: Vec<AppliedFault>,
    /// What the checks looked at.
    pub summary: CheckSummary,
    /// The revision of the run's last write.
    pub end_revision: i64,
    /// How long the run took.
    pub elapsed: Duration,
}

impl RunReport {
    /// The kinds of fault carried out.
    pub fn kinds_applied(&self) -> BTreeSet<FaultKind> {
        self.applied
            .iter()
            .map(|applied| applied.step.kind)
            .collect()
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = &self.summary;
        write!(
            f,
            "seed {}: {} faults ({}) in {:.0}s; {} operations ({} answered, {} unknown of \
             which {} never applied, {} writes acknowledged), {} changes up to revision {}, \
             watchers got {:?}; every check passed (checked in {:.1}s)",
            self.seed,
            self.applied.len(),
            self.kinds_applied()
                .iter()
                .map(|kind| kind.name())
                .collect::<Vec<_>>()
                .join(", "),
            self.elapsed.as_secs_f64(),
            summary.operations,
            summary.answered,
            summary.unknown,
            summary.unknown_unapplied,
            summary.acknowledged,
            summary.changes,
            self.end_revision,
            summary.watched,
            summary.took.as_secs_f64()
        )
    }
}

/// A run that failed: a check, or the cluster not recovering.
#[derive(Debug, Clone)]
pub struct RunFailure {
    /// The seed, to replay the run.
    pub seed: u64,
    /// Where the run was when it failed.
    pub stage: String,
    /// What went wrong.
    pub message: String,
    /// The steps carried out before the failure.
    pub applied: Vec<AppliedFault>,
    /// The cluster's directory (data dirs and member logs), kept for reading.
    pub logs: Option<PathBuf>,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fault run with seed {} failed while {}:",
            self.seed, self.stage
        )?;
        writeln!(f, "{}", self.message)?;
        if !self.applied.is_empty() {
            writeln!(f, "faults carried out:")?;
            for applied in &self.applied {
                writeln!(f, "  {applied}")?;
            }
        }
        if let Some(logs) = &self.logs {
            writeln!(f, "member logs and data dirs kept in {}", logs.display())?;
        }
        Ok(())
    }
}

/// Receives progress lines.
pub type Progress = dyn Fn(&str) + Send + Sync;

/// A failed stage: where, and what went wrong.
type StageError = (String, String);

fn stage_error(stage: impl Into<String>) -> impl FnOnce(String) -> StageError {
    let stage = stage.into();
    move |message| (stage, message)
}

/// Runs the workload against a fresh cluster under the schedule of `options`,
/// then checks everything. `progress` gets the schedule, a line per step and a
/// line of counts every [`RunOptions::progress_interval`].
pub async fn run(options: &RunOptions, progress: Arc<Progress>) -> Result<RunReport, RunFailure> {
    let started = Instant::now();
    let schedule = options.schedule();
    progress(schedule.to_string().trim_end());
    if options.stop_at_duration {
        progress(&format!(
            "(the run stops injecting faults after {:.0}s, wherever it is in the schedule)",
            options.duration.as_secs_f64()
        ));
    }
    let serve_args: Vec<&str> = options.serve_args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_behind_proxy(&options.binary, options.nodes, &serve_args)
        .await
        .map_err(|error| RunFailure {
            seed: options.seed,
            stage: "starting the cluster".into(),
            message: error.to_string(),
            applied: Vec::new(),
            logs: None,
        })?;
    let (endpoints, endpoints_receiver) = watch::channel(cluster.live_endpoints());
    let mut workload = Workload::start(options.seed, options.workload.clone(), endpoints_receiver);
    let steps_done = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn(report_progress(
        progress.clone(),
        workload.counters(),
        steps_done.clone(),
        schedule.steps.len(),
        options.progress_interval,
        started,
    ));
    let mut applied = Vec::new();
    let outcome = drive(
        options,
        &schedule,
        &mut cluster,
        &endpoints,
        &mut workload,
        &mut applied,
        &steps_done,
        &*progress,
        started,
    )
    .await;
    ticker.abort();
    match outcome {
        Ok((summary, end_revision)) => Ok(RunReport {
            seed: options.seed,
            schedule,
            applied,
            summary,
            end_revision,
            elapsed: started.elapsed(),
        }),
        Err((stage, message)) => Err(RunFailure {
            seed: options.seed,
            stage,
            message,
            applied,
            logs: Some(cluster.keep_files()),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    options: &RunOptions,
    schedule: &FaultSchedule,
    cluster: &mut Cluster,
    endpoints: &watch::Sender<Vec<String>>,
    workload: &mut Workload,
    applied: &mut Vec<AppliedFault>,
    steps_done: &AtomicUsize,
    progress: &Progress,
    started: Instant,
) -> Result<(CheckSummary, i64), StageError> {
    let stamp = |message: &str| {
        progress(&format!(
            "[{:>6.1}s] {message}",
            started.elapsed().as_secs_f64()
        ))
    };
    for step in &schedule.steps {
        if options.stop_at_duration && started.elapsed() >= options.duration {
            break;
        }
        tokio::time::sleep(step.quiet_before).await;
        let at = started.elapsed();
        stamp(&format!("step {step}"));
        let what = match inject(cluster, step).await {
            Ok(what) => what,
            Err(error) => {
                let error = exited_instead(cluster).unwrap_or(error);
                return Err(stage_error(format!("injecting step {step}"))(
                    error.to_string(),
                ));
            }
        };
        heal(cluster)
            .await
            .map_err(|error| error.to_string())
            .map_err(stage_error(format!(
                "recovering from step #{}: {what}",
                step.number
            )))?;
        endpoints.send_replace(cluster.live_endpoints());
        let done = AppliedFault {
            step: step.clone(),
            at,
            took: started.elapsed().saturating_sub(at),
            what,
        };
        stamp(&format!("  done: {done}"));
        applied.push(done);
        steps_done.fetch_add(1, Ordering::Relaxed);
    }
    if options.stop_at_duration {
        tokio::time::sleep(options.duration.saturating_sub(started.elapsed())).await;
    }
    tokio::time::sleep(FINAL_QUIET).await;
    stamp("faults over; stopping the clients");
    let recorded = workload.stop_clients().await;

    let prefix = workload.options().prefix.clone();
    let end_revision = write_end_marker(cluster, &prefix)
        .await
        .map_err(stage_error("writing the end marker"))?;
    wait_for_watchers(workload, end_revision)
        .await
        .map_err(stage_error("waiting for the watchers"))?;
    let watchers = workload.stop_watchers().await;

    stamp(&format!(
        "reading the history up to revision {end_revision}"
    ));
    let leader = cluster
        .leader()
        .await
        .map_err(|error| error.to_string())
        .map_err(stage_error("finding the leader at the end"))?;
    let mut client = cluster
        .client(leader)
        .await
        .map_err(|error| error.to_string())
        .map_err(stage_error("connecting to the leader at the end"))?;
    let history = read_history(&mut client, &prefix, end_revision)
        .await
        .map_err(|error| error.to_string())
        .map_err(stage_error("reading the store's history"))?;
    check_history_against_ranges(&mut client, &prefix, &history)
        .await
        .map_err(stage_error("comparing the history with ranges"))?;
    cluster
        .check_replicas_agree(end_revision)
        .await
        .map_err(|error| error.to_string())
        .map_err(stage_error("comparing the replicas' hashes"))?;
    if let Some((index, status)) = cluster.exited_members().into_iter().next() {
        return Err(stage_error("checking the members at the end")(
            cluster.exited_error(index, status).to_string(),
        ));
    }

    stamp(&format!(
        "checking {} operations, {} acknowledged writes, {} watchers",
        recorded.history.len(),
        recorded.acknowledged.len(),
        watchers.len()
    ));
    let dir = cluster.dir().to_path_buf();
    let members: Vec<(String, String)> = cluster
        .members
        .iter()
        .map(|member| (member.endpoint(), member.name.clone()))
        .collect();
    let workload_started = workload.started_at();
    let summary = tokio::task::spawn_blocking(move || {
        let verdict = check_recorded(&recorded, &watchers, &prefix, &history, end_revision);
        if verdict.is_err() {
            // Best effort: the verdict matters more than the files.
            let _ = write_diagnostics(
                &dir,
                &recorded,
                &watchers,
                &history,
                &members,
                workload_started,
            );
        }
        verdict
    })
    .await
    .map_err(|error| ("checking".to_string(), error.to_string()))?
    .map_err(|failure| {
        (
            "checking".to_string(),
            format!(
                "{failure}\n(members.txt, client-history.txt, store-history.txt and \
                 watcher-N.txt are in the kept directory below)"
            ),
        )
    })?;
    Ok((summary, end_revision))
}

/// Writes `{prefix}end` and returns its revision: every watcher must get this far.
async fn write_end_marker(cluster: &Cluster, prefix: &str) -> Result<i64, String> {
    let deadline = Instant::now() + END_TIMEOUT;
    let mut turn = 0;
    loop {
        turn += 1;
        let live = cluster.live_endpoints();
        let error = match live.get(turn % live.len().max(1)) {
            Some(endpoint) => match quick_client(endpoint, Duration::from_secs(5)).await {
                Some(mut client) => match client.put(format!("{prefix}end"), "end", None).await {
                    Ok(response) => match response.header() {
                        Some(header) => return Ok(header.revision()),
                        None => "a put response without a header".to_string(),
                    },
                    Err(error) => error.to_string(),
                },
                None => format!("cannot connect to {endpoint}"),
            },
            None => "no live member".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the end marker was not written within {END_TIMEOUT:?}: {error}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_watchers(workload: &Workload, end_revision: i64) -> Result<(), String> {
    let deadline = Instant::now() + END_TIMEOUT;
    while workload.watched_through() < end_revision {
        if Instant::now() >= deadline {
            return Err(format!(
                "the watchers did not all reach revision {end_revision} within {END_TIMEOUT:?} \
                 (the slowest is at {})",
                workload.watched_through()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn report_progress(
    progress: Arc<Progress>,
    counters: Arc<crate::workload::Counters>,
    steps_done: Arc<AtomicUsize>,
    steps: usize,
    interval: Duration,
    started: Instant,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        progress(&format!(
            "[{:>6.1}s] {} faults of {steps} done; {} operations answered, {} unknown; {} \
             changes watched",
            started.elapsed().as_secs_f64(),
            steps_done.load(Ordering::Relaxed),
            counters.answered.load(Ordering::Relaxed),
            counters.unknown.load(Ordering::Relaxed),
            counters.watched.load(Ordering::Relaxed),
        ));
    }
}
