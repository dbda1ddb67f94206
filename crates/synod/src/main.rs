//! The `synod` command: run a member (`synod serve`, with etcd's flags).

mod cli;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(flags) => cli::serve::run(flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("synod: {error:#}");
            ExitCode::FAILURE
        }
    }
}
