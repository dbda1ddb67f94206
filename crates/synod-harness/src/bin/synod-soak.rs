//! `synod-soak`: a long fault run against a cluster of a given synod binary — the
//! `fault_schedule` tests' harness for as long as you like. Prints the schedule,
//! a line per fault and a line of counts every few seconds; at the end, either
//! the report or the failure with the seed and the command that replays it (and
//! exits non-zero).
//!
//! ```sh
//! cargo build --release -p synod
//! cargo run -p synod-harness --release --bin synod-soak -- \
//!     --duration 10m --seed 42 --nodes 5 --synod-bin target/release/synod
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use synod_harness::run::Progress;
use synod_harness::seed::parse_seed;
use synod_harness::{run, FaultKind, RunOptions};

/// Soak a synod cluster: seeded crashes, pauses, partitions and membership
/// changes under a recorded workload, checked for linearizability, lost writes,
/// watch gaps and replica divergence.
#[derive(Debug, Parser)]
#[command(name = "synod-soak", version)]
struct Args {
    /// How long to inject faults (e.g. 90s, 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the schedule and the clients' choices (decimal or 0x hex); a fresh
    /// one if not given. The same seed plans the same run.
    #[arg(long, value_parser = parse_seed_arg)]
    seed: Option<u64>,
    /// Members in the cluster (3 or 5 make sense; fewer leave out partitions and
    /// membership changes).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The synod binary to run.
    #[arg(long, default_value = "target/release/synod")]
    synod_bin: PathBuf,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Keys the clients share at a time (fresh ones every --key-epoch).
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// How long the clients use one set of keys.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    key_epoch: Duration,
    /// Watchers following every change.
    #[arg(long, default_value_t = 2)]
    watchers: usize,
    /// Kinds of fault to draw from, comma-separated (default: all of them):
    /// kill-leader, kill-member, pause, isolate-leader, split, one-way-loss,
    /// replace-member, learner-promote.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    faults: Vec<FaultKind>,
    /// How often to print a line of counts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    progress_every: Duration,
}

fn parse_seed_arg(text: &str) -> Result<u64, String> {
    parse_seed(text).ok_or_else(|| format!("{text:?} is not a number (decimal or 0x hex)"))
}

fn parse_kind(text: &str) -> Result<FaultKind, String> {
    FaultKind::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|kind| kind.name()).collect();
        format!("unknown fault {text:?}; one of {}", names.join(", "))
    })
}

impl Args {
    /// The command line that replays this run with `seed`.
    fn replay_command(&self, seed: u64) -> String {
        let mut command = format!(
            "cargo run -p synod-harness --release --bin synod-soak -- --duration {} --seed {seed} \
             --nodes {} --synod-bin {} --clients {} --keys {} --key-epoch {} --watchers {}",
            humantime::format_duration(self.duration),
            self.nodes,
            self.synod_bin.display(),
            self.clients,
            self.keys,
            humantime::format_duration(self.key_epoch),
            self.watchers
        );
        if !self.faults.is_empty() {
            let names: Vec<&str> = self.faults.iter().map(|kind| kind.name()).collect();
            command.push_str(&format!(" --faults {}", names.join(",")));
        }
        command
    }

    fn run_options(&self, seed: u64) -> RunOptions {
        let mut options = RunOptions::new(&self.synod_bin, self.nodes, seed, self.duration);
        options.stop_at_duration = true;
        if !self.faults.is_empty() {
            options.kinds = self.faults.clone();
        }
        options.workload.clients = self.clients;
        options.workload.keys = self.keys;
        options.workload.key_epoch = self.key_epoch;
        options.workload.watchers = self.watchers;
        options.progress_interval = self.progress_every;
        options
    }
}

/// A seed from the clock, for runs without --seed.
fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.synod_bin.is_file() {
        eprintln!(
            "error: no synod binary at {} (build it with `cargo build --release -p synod`, or \
             pass --synod-bin)",
            args.synod_bin.display()
        );
        return ExitCode::from(2);
    }
    if args.clients == 0 || args.keys == 0 || args.nodes == 0 {
        eprintln!("error: --nodes, --clients and --keys must be at least 1");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(fresh_seed);
    let replay = args.replay_command(seed);
    println!("synod-soak: seed {seed}; replay with:\n  {replay}");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let options = args.run_options(seed);
    let progress: Arc<Progress> = Arc::new(|line: &str| println!("{line}"));
    match runtime.block_on(run(&options, progress)) {
        Ok(report) => {
            println!("PASS {report}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAIL {failure}");
            println!("seed {seed}; replay with:\n  {replay}");
            ExitCode::FAILURE
        }
    }
}
