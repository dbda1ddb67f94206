//! Command-line interface: one module per command.

pub mod serve;

use clap::{Parser, Subcommand};

/// synod: a strongly consistent coordination and data service that speaks the etcd v3
/// API.
#[derive(Debug, Parser)]
#[command(name = "synod", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a member. With no flags: a one-node cluster, data in ./synod-data, clients
    /// on 127.0.0.1:2379, peers on 127.0.0.1:2380. Accepts etcd's flags (and its
    /// ETCD_* environment variables).
    Serve(serve::ServeFlags),
}
