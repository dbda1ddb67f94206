//! Command-line interface: one module per command.

pub mod client;
pub mod completion;
pub mod elect;
pub mod failure;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod serve;
pub mod snapshot;
pub mod watch;

use clap::{ArgMatches, Parser, Subcommand};

/// The version `--version` prints: the release, the commit it was built from and
/// the build profile.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SYNOD_COMMIT"),
    ", ",
    env!("SYNOD_PROFILE"),
    " build)"
);

/// synod: a strongly consistent coordination and data service that speaks the etcd v3
/// API.
#[derive(Debug, Parser)]
#[command(name = "synod", version = VERSION)]
pub struct Cli {
    /// On failure, print the whole chain of causes instead of one line.
    #[arg(long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `--endpoints` value the command in `matches` runs with, if it takes one
/// (every client command does, at whatever depth of subcommand).
pub fn endpoints_in(matches: &ArgMatches) -> Option<String> {
    let here = matches
        .try_get_one::<String>("endpoints")
        .ok()
        .flatten()
        .cloned();
    here.or_else(|| endpoints_in(matches.subcommand()?.1))
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a member. With no flags: a one-node cluster, data in ./synod-data, clients
    /// on 127.0.0.1:2379, peers on 127.0.0.1:2380. Accepts etcd's flags (and its
    /// ETCD_* environment variables).
    Serve(serve::ServeFlags),
    /// Print a key's value.
    Get(kv::GetFlags),
    /// Write a key, optionally only while a lock is still held (fenced).
    Put(kv::PutFlags),
    /// Delete a key.
    Del(kv::DelFlags),
    /// Grant, renew, inspect and revoke leases.
    Lease(lease::LeaseFlags),
    /// Print every change to a key or prefix.
    Watch(watch::WatchFlags),
    /// Hold a lock, and run a command under it with its fencing token.
    Lock(lock::LockFlags),
    /// Campaign for leadership, or follow an election's leader.
    Elect(elect::ElectFlags),
    /// Save a consistent backup of a running cluster, or restore one into a new
    /// data dir to seed a new cluster.
    Snapshot(snapshot::SnapshotFlags),
    /// Drive load through the etcd v3 API (against synod or etcd) and report
    /// operations per second and latency percentiles.
    Bench(synod_bench::BenchArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completion(completion::CompletionFlags),
}
