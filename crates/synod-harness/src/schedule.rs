//! Seeded fault schedules: from a `u64` seed, a sequence of fault steps over a
//! run — which fault, how long the cluster is left alone before it, how long it
//! lasts, and a random number that picks its target among the members at the
//! time. The same seed and options always give the same schedule (it is pure:
//! [`FaultSchedule::generate`] reads no clock and no global state), and the
//! schedule prints itself, so a failing run can be replayed and read.
//!
//! Which member a step hits is decided when it runs (the leader is whoever leads
//! then), so a replay repeats the plan exactly and the execution as closely as
//! the cluster's timing allows.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::rng::SeededRng;

/// The stream of [`SeededRng::derive`] the schedule draws from.
const SCHEDULE_STREAM: u64 = 1;

/// Quiet time before each fault.
const QUIET_MIN: Duration = Duration::from_millis(500);
const QUIET_MAX: Duration = Duration::from_millis(2000);

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the leader; restart it after the hold.
    KillLeader,
    /// SIGKILL a random member (maybe the leader); restart it after the hold.
    KillMember,
    /// SIGSTOP a random member for the hold, then SIGCONT it.
    Pause,
    /// Cut the leader off from every other member, both ways.
    IsolateLeader,
    /// Split the members into a minority and a majority (1/2 of 3, 2/3 of 5).
    Split,
    /// Cut the leader's connections one way: to the others, or from them.
    OneWayLoss,
    /// Remove a random member (maybe the leader) under traffic, then add a fresh
    /// member in its place (a voter once it has caught up).
    ReplaceMember,
    /// Add a fresh member as a learner, promote it, then remove a random old
    /// member, all under traffic.
    LearnerPromote,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillLeader,
        FaultKind::KillMember,
        FaultKind::Pause,
        FaultKind::IsolateLeader,
        FaultKind::Split,
        FaultKind::OneWayLoss,
        FaultKind::ReplaceMember,
        FaultKind::LearnerPromote,
    ];

    /// The kind's name in schedules and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillMember => "kill-member",
            FaultKind::Pause => "pause",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Split => "split",
            FaultKind::OneWayLoss => "one-way-loss",
            FaultKind::ReplaceMember => "replace-member",
            FaultKind::LearnerPromote => "learner-promote",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the kind makes sense on a cluster of `nodes` (partitions and
    /// membership changes need at least three members to keep a quorum).
    pub fn applies_to(self, nodes: usize) -> bool {
        match self {
            FaultKind::KillLeader | FaultKind::KillMember | FaultKind::Pause => true,
            _ => nodes >= 3,
        }
    }

    /// How long the fault may last (for membership changes: the time between
    /// their two halves).
    fn hold_range(self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            FaultKind::KillLeader | FaultKind::KillMember | FaultKind::Pause => (ms(500), ms(3000)),
            FaultKind::IsolateLeader | FaultKind::Split | FaultKind::OneWayLoss => {
                (ms(1000), ms(4000))
            }
            FaultKind::ReplaceMember | FaultKind::LearnerPromote => (ms(500), ms(2000)),
        }
    }

    /// About how long the cluster takes to recover after the fault, for planning
    /// how many steps fit in a run.
    fn recovery_estimate(self) -> Duration {
        match self {
            FaultKind::ReplaceMember | FaultKind::LearnerPromote => Duration::from_secs(5),
            _ => Duration::from_secs(2),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultStep {
    /// The step's number, from 1.
    pub number: usize,
    /// The fault.
    pub kind: FaultKind,
    /// How long the cluster is left alone (under traffic) before the fault.
    pub quiet_before: Duration,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
    /// Seeds the step's choices at run time: which member, which side of a split,
    /// which direction of a cut.
    pub pick: u64,
}

impl fmt::Display for FaultStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{:<3} after {:>5.1}s quiet: {:<15} hold {:.1}s (pick {:016x})",
            self.number,
            self.quiet_before.as_secs_f64(),
            self.kind.name(),
            self.hold.as_secs_f64(),
            self.pick
        )
    }
}

/// What a schedule is generated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleOptions {
    /// Members in the cluster.
    pub nodes: usize,
    /// About how long the steps should take in all (estimated); the schedule may
    /// run over to include every kind of `cover`.
    pub duration: Duration,
    /// Kinds the schedule includes at least once each (in a seeded order), before
    /// random ones fill the rest of the duration.
    pub cover: Vec<FaultKind>,
    /// Kinds the random steps are drawn from (those that apply to `nodes`).
    pub kinds: Vec<FaultKind>,
}

impl ScheduleOptions {
    /// Every applicable kind, none required.
    pub fn new(nodes: usize, duration: Duration) -> ScheduleOptions {
        ScheduleOptions {
            nodes,
            duration,
            cover: Vec::new(),
            kinds: FaultKind::ALL.to_vec(),
        }
    }
}

/// A seeded sequence of fault steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSchedule {
    /// The seed it was generated from.
    pub seed: u64,
    /// Members in the cluster it was generated for.
    pub nodes: usize,
    /// The steps, in order.
    pub steps: Vec<FaultStep>,
}

impl FaultSchedule {
    /// The schedule for `seed` and `options`.
    pub fn generate(seed: u64, options: &ScheduleOptions) -> FaultSchedule {
        let mut rng = SeededRng::derive(seed, SCHEDULE_STREAM);
        let applies = |kind: &FaultKind| kind.applies_to(options.nodes);
        let mut cover: Vec<FaultKind> = options
            .cover
            .iter()
            .copied()
            .filter(applies)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        rng.shuffle(&mut cover);
        let kinds: Vec<FaultKind> = options.kinds.iter().copied().filter(applies).collect();
        let mut steps = Vec::new();
        let mut planned = Duration::ZERO;
        loop {
            let kind = match cover.pop() {
                Some(kind) => kind,
                None if planned >= options.duration || kinds.is_empty() => break,
                None => kinds[rng.below(kinds.len())],
            };
            let quiet_before = rng.duration_between(QUIET_MIN, QUIET_MAX);
            let (hold_min, hold_max) = kind.hold_range();
            let hold = rng.duration_between(hold_min, hold_max);
            let pick = rng.next_u64();
            planned += quiet_before + hold + kind.recovery_estimate();
            steps.push(FaultStep {
                number: steps.len() + 1,
                kind,
                quiet_before,
                hold,
                pick,
            });
        }
        FaultSchedule {
            seed,
            nodes: options.nodes,
            steps,
        }
    }

    /// The kinds the schedule includes.
    pub fn kinds(&self) -> BTreeSet<FaultKind> {
        self.steps.iter().map(|step| step.kind).collect()
    }

    /// About how long the schedule takes to play out.
    pub fn estimated_duration(&self) -> Duration {
        self.steps
            .iter()
            .map(|step| step.quiet_before + step.hold + step.kind.recovery_estimate())
            .sum()
    }
}

impl fmt::Display for FaultSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fault schedule for seed {} on {} members: {} steps, about {:.0}s",
            self.seed,
            self.nodes,
            self.steps.len(),
            self.estimated_duration().as_secs_f64()
        )?;
        for step in &self.steps {
            writeln!(f, "  {step}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(nodes: usize, seconds: u64) -> ScheduleOptions {
        ScheduleOptions::new(nodes, Duration::from_secs(seconds))
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let first = FaultSchedule::generate(42, &options(5, 60));
        assert_eq!(first, FaultSchedule::generate(42, &options(5, 60)));
        assert_eq!(
            first.to_string(),
            FaultSchedule::generate(42, &options(5, 60)).to_string()
        );
        assert_ne!(first, FaultSchedule::generate(43, &options(5, 60)));
    }

    #[test]
    fn the_schedule_fills_the_duration() {
        let schedule = FaultSchedule::generate(7, &options(3, 120));
        assert!(schedule.estimated_duration() >= Duration::from_secs(120));
        let without_last = schedule.estimated_duration()
            - schedule.steps.last().map_or(Duration::ZERO, |step| {
                step.quiet_before + step.hold + step.kind.recovery_estimate()
            });
        assert!(without_last < Duration::from_secs(120));
    }

    #[test]
    fn covered_kinds_are_all_included_even_in_a_short_run() {
        for seed in 0..50 {
            let mut short = options(5, 1);
            short.cover = FaultKind::ALL.to_vec();
            let schedule = FaultSchedule::generate(seed, &short);
            assert_eq!(schedule.kinds(), FaultKind::ALL.into_iter().collect());
        }
    }

    #[test]
    fn kinds_that_need_a_quorum_of_three_are_left_out_of_small_clusters() {
        let mut small = options(1, 60);
        small.cover = FaultKind::ALL.to_vec();
        let schedule = FaultSchedule::generate(3, &small);
        assert!(schedule.kinds().iter().all(|kind| kind.applies_to(1)));
        assert!(!schedule.steps.is_empty());
    }

    #[test]
    fn kinds_have_names_that_parse_back() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn durations_stay_in_range() {
        let schedule = FaultSchedule::generate(11, &options(3, 600));
        for step in &schedule.steps {
            let (low, high) = step.kind.hold_range();
            assert!(step.hold >= low && step.hold <= high, "{step}");
            assert!(step.quiet_before >= QUIET_MIN && step.quiet_before <= QUIET_MAX);
        }
    }
}
