//! `synod --version` and `synod completion SHELL`, as a shell user meets them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::synod_binary;

fn stdout_of(args: &[&str]) -> String {
    let output = Command::new(synod_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run synod");
    assert!(output.status.success(), "synod {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
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
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(bash.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "bash cannot parse the script: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    assert!(stdout_of(&["completion", "zsh"]).starts_with("#compdef synod"));
    let fish = stdout_of(&["completion", "fish"]);
    assert!(fish.contains("complete -c synod"), "{fish}");
    assert!(fish.contains("lease"), "fish completion lacks lease");
}
