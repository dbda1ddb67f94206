//! The result of a run: a table for people, or one JSON line for scripts.
//!
//! Throughput counts answered operations over the measured time (from the end of the
//! warm-up until the last client finished); latencies are percentiles of the
//! merged per-client histograms, in microseconds.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::args::{LockMode, Plan, Workload};
use crate::error::BenchError;
use crate::stats::Stats;

/// The result of one run. Field names are the JSON keys `bench/compare.sh` reads.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The workload's name.
    pub workload: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Connections they shared.
    pub conns: usize,
    /// Endpoints, as given.
    pub endpoints: String,
    /// Answered operations (for watch-latency: acknowledged puts).
    pub ops: u64,
    /// Failed operations (for watch-latency also watch errors and missing events).
    pub errors: u64,
    /// Answered operations whose condition did not hold (txn-cas's lost races).
    pub failures: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// `ops / duration_s`.
    pub ops_per_sec: f64,
    /// Median latency (for watch-latency: put sent to event received).
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// 99.9th percentile latency.
    pub p999_us: u64,
    /// Largest latency.
    pub max_us: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Keys picked from.
    pub key_space: u64,
    /// lock: "per-client" or "shared".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_mode: Option<&'static str>,
    /// watch-latency: watchers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchers: Option<usize>,
    /// watch-latency: events received over all watchers (the latency samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// The first error, to act on.
    pub first_error: Option<String>,
    /// `--label`, as given.
    pub label: String,
}

impl Report {
    /// The report of a run of `plan` that measured for `duration`: `operations` from
    /// the clients, and `latency` whose histogram gives the percentiles (the clients'
    /// own, or for watch-latency the watchers').
    pub fn new(plan: &Plan, duration: Duration, operations: &Stats, latency: &Stats) -> Report {
        let args = &plan.args;
        let histogram = &latency.latency_us;
        let duration_s = duration.as_secs_f64();
        let watch = args.workload == Workload::WatchLatency;
        let errors = operations.errors + if watch { latency.errors } else { 0 };
        let first_error = operations
            .first_error
            .clone()
            .or_else(|| latency.first_error.clone().filter(|_| watch));
        Report {
            workload: args.workload.name(),
            clients: args.clients,
            conns: plan.conns,
            endpoints: args.endpoints.clone(),
            ops: operations.ops,
            errors,
            failures: operations.failures,
            duration_s,
            ops_per_sec: if duration_s > 0.0 {
                operations.ops as f64 / duration_s
            } else {
                0.0
            },
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
            value_size: args.value_size,
            key_space: args.key_space,
            lock_mode: (args.workload == Workload::Lock).then_some(match args.lock_mode {
                LockMode::PerClient => "per-client",
                LockMode::Shared => "shared",
            }),
            watchers: watch.then_some(args.watchers),
            events: watch.then_some(latency.ops),
            first_error,
            label: args.label.clone(),
        }
    }

    /// Prints the report to stdout: one JSON line, or a table.
    pub fn print(&self, json: bool) -> Result<(), BenchError> {
        let text = if json {
            serde_json::to_string(self).map_err(|error| {
                BenchError::Runtime(format!("cannot encode the report: {error}"))
            })?
        } else {
            self.table()
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .map_err(|error| BenchError::Runtime(format!("cannot print the report: {error}")))
    }

    /// The human-readable table, with notes under it.
    pub fn table(&self) -> String {
        let mut text = format!(
            "{:<14} {:>7} {:>5} {:>10} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
            "workload", "clients", "conns", "ops", "errors", "ops/s", "p50", "p99", "p99.9", "max"
        );
        text.push_str(&format!(
            "{:<14} {:>7} {:>5} {:>10} {:>7} {:>10.1} {:>9} {:>9} {:>9} {:>9}",
            self.workload,
            self.clients,
            self.conns,
            self.ops,
            self.errors,
            self.ops_per_sec,
            latency(self.p50_us),
            latency(self.p99_us),
            latency(self.p999_us),
            latency(self.max_us),
        ));
        text.push_str(&format!(
            "\nmeasured {:.2}s against {}",
            self.duration_s, self.endpoints
        ));
        if self.workload == Workload::TxnCas.name() {
            text.push_str(&format!(
                "\n{} of the {} compare-and-swaps lost a race (their compare failed)",
                self.failures, self.ops
            ));
        }
        if let (Some(watchers), Some(events)) = (self.watchers, self.events) {
            text.push_str(&format!(
                "\nlatency is put sent -> event received; {events} events over {watchers} \
                 watcher(s)"
            ));
        }
        if let Some(error) = &self.first_error {
            text.push_str(&format!("\nfirst error: {error}"));
        }
        text
    }
}

/// A latency in microseconds, in the unit that keeps it short.
fn latency(micros: u64) -> String {
    match micros {
        0..=999 => format!("{micros}us"),
        1_000..=999_999 => format!("{:.2}ms", micros as f64 / 1_000.0),
        _ => format!("{:.2}s", micros as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::latency;

    #[test]
    fn latencies_pick_their_unit() {
        assert_eq!(latency(850), "850us");
        assert_eq!(latency(12_345), "12.35ms");
        assert_eq!(latency(2_500_000), "2.50s");
    }
}
