//! The command line of `synod bench`, and the run plan resolved from it.
//!
//! The flags imitate etcd's own `benchmark` tool (`--clients`, `--conns`, `--total`)
//! so that numbers measured with either tool are described the same way.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::error::BenchError;

/// Most concurrent clients in one run; each is a task with its own histogram.
pub const CLIENTS_MAX: usize = 100_000;

/// Most connections in one run.
pub const CONNS_MAX: usize = 1_024;

/// Connections opened when `--conns` is not given: one per client up to this many,
/// so a few hundred clients share a few dozen HTTP/2 connections as etcd's clients
/// would, and neither side's connection handling becomes the bottleneck.
pub const CONNS_DEFAULT_MAX: usize = 32;

/// Largest value a workload writes (etcd's default request limit is 1.5 MiB).
pub const VALUE_SIZE_MAX: usize = 1024 * 1024;

/// How long a run lasts when neither `--duration` nor `--total` is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);

/// What each client does in a loop; one operation is one sample of latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Put one key (random over --key-space, or each key once with
    /// --sequential-keys) with a --value-size value.
    Put,
    /// Linearizable Range of one random key.
    GetLin,
    /// Serializable Range of one random key.
    GetSer,
    /// Compare-and-swap of one random key: a Txn that puts the key if its
    /// mod_revision is still the one this client last saw (else reads it back).
    TxnCas,
    /// Lock then Unlock (etcd's Lock service), with a lease granted per client at
    /// setup and kept alive.
    Lock,
    /// LeaseGrant then LeaseRevoke.
    Lease,
    /// Clients put keys under a prefix that --watchers watch; one sample is the time
    /// from a put being sent to its event reaching a watcher.
    WatchLatency,
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::GetLin => "get-lin",
            Workload::GetSer => "get-ser",
            Workload::TxnCas => "txn-cas",
            Workload::Lock => "lock",
            Workload::Lease => "lease",
            Workload::WatchLatency => "watch-latency",
        }
    }
}

/// Which lock names the `lock` workload's clients contend for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockMode {
    /// One lock name per client: measures the cost of an uncontended acquire and
    /// release.
    PerClient,
    /// Every client on one lock: measures hand-over through the lock's wait queue.
    Shared,
}

/// `synod bench WORKLOAD`: drive load through the etcd v3 API against any endpoints
/// (etcd or synod) and report throughput and latency.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What each client does.
    #[arg(value_enum)]
    pub workload: Workload,

    /// Client endpoints (comma-separated host:port or http:// URLs); connections
    /// are spread over them round-robin.
    #[arg(long, env = "SYNOD_ENDPOINTS", default_value = "127.0.0.1:2379")]
    pub endpoints: String,

    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,

    /// gRPC connections the clients share (default: one per client, at most 32).
    #[arg(long)]
    pub conns: Option<usize>,

    /// How long to measure (e.g. 10s, 1m), after the warm-up. Default 10s unless
    /// --total is given.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "total")]
    pub duration: Option<Duration>,

    /// Stop after this many operations instead of after a duration.
    #[arg(long)]
    pub total: Option<u64>,

    /// Load run before measuring starts, excluded from the results (e.g. 2s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Number of distinct keys the key workloads pick from.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,

    /// Bytes in each written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,

    /// Prefix of every key and lock name the benchmark touches.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,

    /// put: write keys 0, 1, 2, ... in order (wrapping at --key-space) instead of
    /// at random, so that `--total N --key-space N` writes N distinct keys.
    #[arg(long)]
    pub sequential_keys: bool,

    /// lock: one lock per client, or one lock shared by every client.
    #[arg(long, value_enum, default_value_t = LockMode::PerClient)]
    pub lock_mode: LockMode,

    /// watch-latency: how many watchers watch the prefix the clients write to.
    #[arg(long, default_value_t = 1)]
    pub watchers: usize,

    /// Longest a single request may take before it counts as an error (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub request_timeout: Duration,

    /// Print one JSON line per result instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Free text copied into the JSON output (e.g. "etcd round 1").
    #[arg(long, default_value = "")]
    pub label: String,
}

/// When a run stops measuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAfter {
    /// After this long.
    Duration(Duration),
    /// After this many operations (errors included, so a failing server still ends
    /// the run).
    Total(u64),
}

/// A validated run: the arguments with defaults filled in and limits checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The arguments as given.
    pub args: BenchArgs,
    /// The endpoints, as URLs.
    pub endpoints: Vec<String>,
    /// Connections to open.
    pub conns: usize,
    /// When measuring stops.
    pub stop_after: StopAfter,
}

impl BenchArgs {
    /// Checks the arguments and fills in the defaults that depend on others.
    pub fn plan(self) -> Result<Plan, BenchError> {
        let endpoints = parse_endpoints(&self.endpoints)?;
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(BenchError::Usage(format!(
                "--clients must be between 1 and {CLIENTS_MAX}, not {}",
                self.clients
            )));
        }
        let conns = self
            .conns
            .unwrap_or_else(|| self.clients.min(CONNS_DEFAULT_MAX));
        if conns == 0 || conns > CONNS_MAX {
            return Err(BenchError::Usage(format!(
                "--conns must be between 1 and {CONNS_MAX}, not {conns}"
            )));
        }
        if self.key_space == 0 {
            return Err(BenchError::Usage("--key-space must be at least 1".into()));
        }
        if self.value_size > VALUE_SIZE_MAX {
            return Err(BenchError::Usage(format!(
                "--value-size must be at most {VALUE_SIZE_MAX} bytes, not {}",
                self.value_size
            )));
        }
        if self.watchers == 0 && self.workload == Workload::WatchLatency {
            return Err(BenchError::Usage(
                "watch-latency needs at least one watcher (--watchers)".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(BenchError::Usage(
                "--request-timeout must be longer than zero".into(),
            ));
        }
        let stop_after = match (self.total, self.duration) {
            (Some(0), _) => {
                return Err(BenchError::Usage("--total must be at least 1".into()));
            }
            (Some(total), _) => StopAfter::Total(total),
            (None, Some(duration)) if duration.is_zero() => {
                return Err(BenchError::Usage(
                    "--duration must be longer than zero".into(),
                ));
            }
            (None, Some(duration)) => StopAfter::Duration(duration),
            (None, None) => StopAfter::Duration(DURATION_DEFAULT),
        };
        Ok(Plan {
            args: self,
            endpoints,
            conns,
            stop_after,
        })
    }
}

/// Splits a comma-separated endpoint list into URLs (`host:port` gets `http://`).
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, BenchError> {
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty())
        .map(|endpoint| {
            if endpoint.contains("://") {
                endpoint.to_string()
            } else {
                format!("http://{endpoint}")
            }
        })
        .collect();
    if endpoints.is_empty() {
        return Err(BenchError::Usage(
            "--endpoints names no endpoint (give host:port,...)".into(),
        ));
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn plan_of(args: &[&str]) -> Result<Plan, BenchError> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        match Command::try_parse_from(argv) {
            Ok(command) => command.bench.plan(),
            Err(error) => Err(BenchError::Usage(error.to_string())),
        }
    }

    #[test]
    fn defaults_follow_the_client_count() {
        let Ok(plan) = plan_of(&["put", "--clients", "4"]) else {
            panic!("valid arguments refused");
        };
        assert_eq!(plan.conns, 4);
        assert_eq!(plan.stop_after, StopAfter::Duration(DURATION_DEFAULT));
        assert_eq!(plan.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        let Ok(plan) = plan_of(&["lock", "--clients", "512", "--total", "100"]) else {
            panic!("valid arguments refused");
        };
        assert_eq!(plan.conns, CONNS_DEFAULT_MAX);
        assert_eq!(plan.stop_after, StopAfter::Total(100));
    }

    #[test]
    fn endpoints_become_urls() {
        let Ok(endpoints) = parse_endpoints("a:1, http://b:2,,") else {
            panic!("valid endpoints refused");
        };
        assert_eq!(endpoints, vec!["http://a:1", "http://b:2"]);
        assert!(parse_endpoints(" , ").is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(plan_of(&["put", "--clients", "0"]).is_err());
        assert!(plan_of(&["put", "--conns", "0"]).is_err());
        assert!(plan_of(&["put", "--key-space", "0"]).is_err());
        assert!(plan_of(&["put", "--total", "0"]).is_err());
        assert!(plan_of(&["put", "--total", "5", "--duration", "1s"]).is_err());
        assert!(plan_of(&["watch-latency", "--watchers", "0"]).is_err());
        assert!(plan_of(&["no-such-workload"]).is_err());
    }
}
