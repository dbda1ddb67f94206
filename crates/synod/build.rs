//! Stamps the binary with the commit it was built from and its build profile, for
//! `synod --version` (a bug report then says exactly what ran).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|commit| commit.trim().to_string())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=SYNOD_COMMIT={commit}");
    println!("cargo:rustc-env=SYNOD_PROFILE={profile}");
    // A new commit changes HEAD or the branch it points to. Only paths that exist
    // are named: cargo takes a missing one as changed on every build.
    let git_paths = ["--git-dir", "--git-common-dir"].map(|flag| {
        Command::new("git")
            .args(["rev-parse", flag])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|dir| std::path::PathBuf::from(dir.trim()))
    });
    let mut watched = false;
    if let [Some(git_dir), Some(common_dir)] = git_paths {
        for path in [
            git_dir.join("HEAD"),
            common_dir.join("refs/heads"),
            common_dir.join("packed-refs"),
        ] {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
                watched = true;
            }
        }
    }
    if !watched {
        println!("cargo:rerun-if-changed=build.rs");
    }
}
