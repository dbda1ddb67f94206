//! The progress line on stderr while a run goes on.
//!
//! On a terminal one line is rewritten in place every second; otherwise (a log, a
//! pipe in a script) a plain line is printed every few seconds, so the log shows
//! the run is alive without filling up with carriage returns.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::args::StopAfter;

/// How often the line is refreshed on a terminal.
pub const TERMINAL_PERIOD: Duration = Duration::from_secs(1);

/// How often a line is printed when stderr is not a terminal.
pub const LOG_PERIOD: Duration = Duration::from_secs(5);

/// Counters the clients bump after each measured operation; read only here.
#[derive(Debug, Default)]
pub struct Counters {
    /// Measured operations finished, answered or failed.
    pub completed: AtomicU64,
    /// Measured operations that failed.
    pub errors: AtomicU64,
}

/// The running progress printer.
#[derive(Debug)]
pub struct Progress {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts printing the progress of `workload`, whose measurement starts at
    /// `measure_start` and lasts as `stop_after` says.
    pub fn start(
        workload: &'static str,
        counters: Arc<Counters>,
        measure_start: Instant,
        stop_after: StopAfter,
    ) -> Progress {
        let (stop, stopped) = oneshot::channel();
        let terminal = std::io::stderr().is_terminal();
        let line = Line {
            workload,
            counters,
            measure_start,
            stop_after,
        };
        let task = tokio::spawn(line.print_until(stopped, terminal));
        Progress { stop, task }
    }

    /// Stops printing and clears the line.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct Line {
    workload: &'static str,
    counters: Arc<Counters>,
    measure_start: Instant,
    stop_after: StopAfter,
}

impl Line {
    async fn print_until(self, mut stopped: oneshot::Receiver<()>, terminal: bool) {
        let period = if terminal {
            TERMINAL_PERIOD
        } else {
            LOG_PERIOD
        };
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut last = (Instant::now(), 0);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticks.tick() => {}
            }
            let text = self.describe(Instant::now(), &mut last);
            let mut stderr = std::io::stderr().lock();
            // A progress line that cannot be written is not worth failing the run.
            let _ = if terminal {
                write!(stderr, "\r{text}\x1b[K")
            } else {
                writeln!(stderr, "{text}")
            };
            let _ = stderr.flush();
        }
        if terminal {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
    }

    /// The text of the line at `now`; `last` is the previous line's time and count,
    /// for the current rate.
    fn describe(&self, now: Instant, last: &mut (Instant, u64)) -> String {
        if now < self.measure_start {
            let left = self.measure_start - now;
            return format!(
                "{}: warming up, {:.0}s to go",
                self.workload,
                left.as_secs_f64()
            );
        }
        let completed = self.counters.completed.load(Ordering::Relaxed);
        let errors = self.counters.errors.load(Ordering::Relaxed);
        let (last_time, last_completed) = *last;
        let since = now.duration_since(last_time.max(self.measure_start));
        let rate = if since.is_zero() {
            0.0
        } else {
            completed.saturating_sub(last_completed) as f64 / since.as_secs_f64()
        };
        *last = (now, completed);
        let elapsed = now.duration_since(self.measure_start).as_secs_f64();
        let done = match self.stop_after {
            StopAfter::Duration(duration) => format!(
                "{elapsed:.0}s of {:.0}s, {completed} ops",
                duration.as_secs_f64()
            ),
            StopAfter::Total(total) => format!("{elapsed:.0}s, {completed} of {total} ops"),
        };
        format!(
            "{}: {done}, {rate:.0} ops/s now, {errors} errors",
            self.workload
        )
    }
}
