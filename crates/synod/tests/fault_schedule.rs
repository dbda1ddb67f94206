//! Seeded fault schedules against real clusters (the `synod-harness` crate): a
//! 3-member and a 5-member cluster, each under a workload of 8 clients and 2
//! watchers, go through crashes, pauses, partitions and membership changes
//! planned from one seed; then the history must be linearizable, revisions
//! monotonic, no acknowledged write lost, every watcher gap- and duplicate-free,
//! and every replica's HashKV equal. Between them the two runs carry out every
//! kind of fault.
//!
//! The seed is `SYNOD_TEST_SEED` or a fixed default; a failure prints it with
//! the command that replays the run. Longer runs: the `synod-soak` command.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use synod_harness::run::Progress;
use synod_harness::{replay_test_command, run, seed_from_env, FaultKind, RunOptions};

/// The seed when `SYNOD_TEST_SEED` is not set.
const DEFAULT_SEED: u64 = 20_251_126;

/// Fewest answered operations for a run to count: a cluster that answers nothing
/// passes every check.
const ANSWERED_MIN: usize = 1_000;

/// Runs a fault schedule on `nodes` members that includes every kind of `cover`,
/// and fails the test (with the seed and the replay command) if a check fails.
async fn fault_run(test_name: &str, nodes: usize, duration: Duration, cover: &[FaultKind]) {
    let seed = seed_from_env(DEFAULT_SEED);
    let replay = replay_test_command("fault_schedule", test_name, seed);
    println!("seed {seed}; replay with: {replay}");
    let mut options = RunOptions::new(env!("CARGO_BIN_EXE_synod"), nodes, seed, duration);
    options.cover = cover.to_vec();
    let progress: Arc<Progress> = Arc::new(|line: &str| println!("{line}"));
    let report = match run(&options, progress).await {
        Ok(report) => report,
        Err(failure) => panic!("{failure}\nseed {seed}; replay with: {replay}"),
    };
    println!("{report}");
    let missing: BTreeSet<FaultKind> = cover
        .iter()
        .copied()
        .filter(|kind| !report.kinds_applied().contains(kind))
        .collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: faults {missing:?} never happened; replay with: {replay}"
    );
    assert!(
        report.summary.answered >= ANSWERED_MIN,
        "seed {seed}: only {} operations answered; replay with: {replay}",
        report.summary.answered
    );
}

/// Crashes, pauses and every partition on 3 members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_under_a_seeded_fault_schedule() {
    fault_run(
        "three_members_under_a_seeded_fault_schedule",
        3,
        Duration::from_secs(40),
        &[
            FaultKind::KillLeader,
            FaultKind::KillMember,
            FaultKind::Pause,
            FaultKind::IsolateLeader,
            FaultKind::Split,
            FaultKind::OneWayLoss,
        ],
    )
    .await;
}

/// Membership changes under traffic, a 2/3 split and crashes on 5 members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_under_a_seeded_fault_schedule() {
    fault_run(
        "five_members_under_a_seeded_fault_schedule",
        5,
        Duration::from_secs(45),
        &[
            FaultKind::ReplaceMember,
            FaultKind::LearnerPromote,
            FaultKind::Split,
            FaultKind::KillLeader,
            FaultKind::Pause,
        ],
    )
    .await;
}
