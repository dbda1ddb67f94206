//! `synod completion SHELL`: the shell completion script for every command and
//! flag, generated from the same definitions the parser uses.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// `synod completion bash|zsh|fish|elvish|powershell`.
#[derive(Debug, Args)]
pub struct CompletionFlags {
    /// The shell to complete for. Bash: `source <(synod completion bash)`; zsh:
    /// `synod completion zsh > "${fpath[1]}/_synod"`; fish:
    /// `synod completion fish > ~/.config/fish/completions/synod.fish`.
    shell: Shell,
}

/// Prints the completion script for the shell `flags` names. The script is
/// generated into memory first: clap_complete panics on a failed write, and a
/// reader that stops early (`| head`) is no error.
pub fn run(flags: &CompletionFlags) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(flags.shell, &mut Cli::command(), "synod", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => Ok(written?),
    }
}
