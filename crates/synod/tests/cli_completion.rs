//! `synod --version` and `synod completion SHELL`, as a shell user meets them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_command, synod_binary};

const TIMEOUT: Duration = Duration::from_secs(30);

fn stdout_of(args: &[&str]) -> String {
    let mut command = Command::new(synod_binary());
    command.args(args);
    let output = run_command(command, None, TIMEOUT);
    assert_eq!(output.code, 0, "synod {args:?}: {output:?}");
    output.stdout
}

#[test]
fn the_version_names_the_commit_and_the_build() {
    let version = stdout_of(&["--version"]);
    let version = version.trim_end();
    let rest = version
        .strip_prefix(&format!("synod {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{version:?}"));
    let (commit, build) = rest.split_once(", ").unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version:?}"
    );
    assert!(
        build == "debug build)" || build == "release build)",
        "{version:?}"
    );
}

#[test]
fn completion_scripts_cover_the_commands_and_bash_parses_its_own() {
    let bash = stdout_of(&["completion", "bash"]);
    for command in ["serve", "lease", "snapshot", "completion", "--endpoints"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    // bash -n reads the script without running it: it must parse.
    let mut check = Command::new("bash");
    check.arg("-n");
    let checked = run_command(check, Some(bash.into_bytes()), TIMEOUT);
    assert_eq!(
        checked.code, 0,
        "bash cannot parse the script: {}",
        checked.stderr
    );

    assert!(stdout_of(&["completion", "zsh"]).starts_with("#compdef synod"));
    let fish = stdout_of(&["completion", "fish"]);
    assert!(fish.contains("complete -c synod"), "{fish}");
    assert!(fish.contains("lease"), "fish completion lacks lease");
}
