//! `synod bench`: a load generator that speaks the etcd v3 gRPC API, so the same
//! requests measure etcd and synod alike and results can be compared as ratios.
//!
//! A run opens `--conns` HTTP/2 connections over the endpoints, gives each of
//! `--clients` clients its own state for the workload (see [`workload`]), and lets
//! every client send one request at a time, back to back, for `--duration` or until
//! `--total` operations. Each client records its latencies in its own HDR
//! histogram; they are merged at the end into one [`report::Report`]: operations
//! per second and the p50/p99/p99.9/max latency, printed as a table or a JSON line.
//!
//! Modules: [`args`] (flags and the run plan), [`connect`] (connections),
//! [`keys`] (key names and values), [`workload`] (one module per workload),
//! [`runner`] (the clock and the client loop), [`stats`] (histograms and counters),
//! [`progress`] (the stderr progress line), [`report`] (the output).

pub mod args;
pub mod connect;
pub mod error;
pub mod keys;
pub mod progress;
pub mod report;
pub mod runner;
pub mod stats;
pub mod workload;

pub use args::BenchArgs;
pub use error::BenchError;

/// Runs the benchmark `args` describe on its own multi-threaded runtime and prints
/// the result on stdout.
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    let plan = args.plan()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| BenchError::Runtime(format!("cannot start the runtime: {error}")))?;
    let report = runtime.block_on(runner::run(&plan))?;
    report.print(plan.args.json)
}
