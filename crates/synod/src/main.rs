//! The `synod` command: run a member (`synod serve`, with etcd's flags), and the
//! client commands for keys, leases, watches, locks and elections, and `synod bench`,
//! the load generator.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{endpoints_in, failure, Cli, Command};

/// jemalloc, not the system allocator: the request path allocates many small
/// buffers on one thread and frees them on another, which glibc's malloc serves
/// with more CPU (its free lists' consolidation and chunk bookkeeping were a
/// tenth of a member's CPU under load); measured in bench/RESULTS.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let debug = cli.debug;
    let result = match cli.command {
        Command::Serve(flags) => cli::serve::run(flags).map(|()| 0),
        Command::Get(flags) => cli::kv::get(flags).map(|()| 0),
        Command::Put(flags) => cli::kv::put(flags).map(|()| 0),
        Command::Del(flags) => cli::kv::del(flags).map(|()| 0),
        Command::Lease(flags) => cli::lease::run(flags).map(|()| 0),
        Command::Watch(flags) => cli::watch::run(flags).map(|()| 0),
        Command::Lock(flags) => cli::lock::run(flags),
        Command::Elect(flags) => cli::elect::run(flags).map(|()| 0),
        Command::Snapshot(flags) => cli::snapshot::run(flags).map(|()| 0),
        Command::Completion(flags) => cli::completion::run(&flags).map(|()| 0),
        Command::Bench(args) => synod_bench::run(args)
            .map(|()| 0)
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) if debug => {
            eprintln!("synod: {error:?}");
            ExitCode::FAILURE
        }
        Err(error) => {
            let endpoints = endpoints_in(&matches);
            eprintln!("synod: {}", failure::explain(&error, endpoints.as_deref()));
            ExitCode::FAILURE
        }
    }
}
