//! The verdicts of a fault run, from what the workload recorded and the store's
//! history read back after it: every contract of docs/ARCHITECTURE.md §1 the run exercises.

use std::fmt;
use std::time::{Duration, Instant};

use synod_check::{
    check_acknowledged_writes, check_linearizable, check_revisions_monotonic, check_watch,
    without_unapplied_unknowns, Change, Outcome, WatchSpec, WatchedKeys,
};

use crate::workload::{Recorded, WatchRecord};

/// A contract the run broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The contract.
    pub contract: &'static str,
    /// The counterexample.
    pub detail: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.contract, self.detail)
    }
}

/// What the checks looked at, when they pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSummary {
    /// Operations in the history.
    pub operations: usize,
    /// Of which answered.
    pub answered: usize,
    /// Operations without an answer.
    pub unknown: usize,
    /// Of which left out of the linearizability search, since the store's history
    /// shows they never took effect.
    pub unknown_unapplied: usize,
    /// Writes acknowledged.
    pub acknowledged: usize,
    /// Changes in the store's history.
    pub changes: usize,
    /// Changes each watcher received.
    pub watched: Vec<usize>,
    /// How long the checks took.
    pub took: Duration,
}

/// Runs every check; `end_revision` is the revision of the run's last write,
/// which every watcher must have received.
pub fn check_recorded(
    recorded: &Recorded,
    watchers: &[WatchRecord],
    prefix: &str,
    history: &[Change],
    end_revision: i64,
) -> Result<CheckSummary, CheckFailure> {
    let started = Instant::now();
    let searched = without_unapplied_unknowns(&recorded.history, history);
    check_linearizable(&searched).map_err(|violation| CheckFailure {
        contract: "linearizability",
        detail: violation.to_string(),
    })?;
    check_revisions_monotonic(&recorded.revisions).map_err(|regression| {
        let describe = |call, ret| {
            recorded
                .operations_between(call, ret)
                .iter()
                .map(|(event, endpoint)| {
                    format!(
                        "{:?} {:?} -> {:?} via {endpoint}",
                        event.key, event.operation, event.outcome
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        CheckFailure {
            contract: "revisions never go backwards",
            detail: format!(
                "a response at revision {} (in flight {}..{} µs: {}) came after one at revision \
                 {} (in flight {}..{} µs: {})",
                regression.later.revision,
                regression.later.call,
                regression.later.ret,
                describe(regression.later.call, regression.later.ret),
                regression.earlier.revision,
                regression.earlier.call,
                regression.earlier.ret,
                describe(regression.earlier.call, regression.earlier.ret),
            ),
        }
    })?;
    check_acknowledged_writes(&recorded.acknowledged, history).map_err(|lost| CheckFailure {
        contract: "no acknowledged write lost",
        detail: lost.to_string(),
    })?;
    let mut watched = Vec::new();
    for (index, record) in watchers.iter().enumerate() {
        let Some(start_revision) = record.start else {
            return Err(CheckFailure {
                contract: "watches deliver every change once, in order",
                detail: format!("watcher {index} never had a watch created"),
            });
        };
        let spec = WatchSpec {
            keys: WatchedKeys::Prefix(prefix.to_string()),
            start_revision,
            delivered_through: end_revision,
        };
        check_watch(&spec, &record.changes, history).map_err(|violation| CheckFailure {
            contract: "watches deliver every change once, in order",
            detail: format!(
                "watcher {index} (from revision {start_revision}; streams (member, start) {:?}; \
                 cancels {:?}): {violation}",
                record.streams, record.cancels
            ),
        })?;
        watched.push(record.changes.len());
    }
    let unknown = recorded
        .history
        .iter()
        .filter(|event| event.outcome == Outcome::Unknown)
        .count();
    Ok(CheckSummary {
        operations: recorded.history.len(),
        answered: recorded.history.len() - unknown,
        unknown,
        unknown_unapplied: recorded.history.len() - searched.len(),
        acknowledged: recorded.acknowledged.len(),
        changes: history.len(),
        watched,
        took: started.elapsed(),
    })
}

/// Writes what a failed run recorded into `dir` (beside the members' logs), for
/// reading after the fact: which endpoint is which member and when the clients'
/// clock started, every client operation in call order, the store's history, and
/// what each watcher received.
pub fn write_diagnostics(
    dir: &std::path::Path,
    recorded: &Recorded,
    watchers: &[WatchRecord],
    history: &[Change],
    members: &[(String, String)],
    workload_started: std::time::SystemTime,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = format!(
        "# the clients' times are microseconds since {} (the members' logs are in UTC)\n\
         # endpoint member\n",
        humantime::format_rfc3339_micros(workload_started)
    );
    for (endpoint, name) in members {
        let _ = writeln!(text, "{endpoint} {name}");
    }
    std::fs::write(dir.join("members.txt"), text)?;
    let mut operations: Vec<(&synod_check::Event, &String)> =
        recorded.history.iter().zip(&recorded.served_by).collect();
    operations.sort_by_key(|(event, _)| event.call);
    let mut text = String::from("# call_us return_us endpoint key operation -> outcome\n");
    for (event, endpoint) in operations {
        let _ = writeln!(
            text,
            "{} {} {endpoint} {} {:?} -> {:?}",
            event.call, event.ret, event.key, event.operation, event.outcome
        );
    }
    std::fs::write(dir.join("client-history.txt"), text)?;
    let mut text = String::new();
    for change in history {
        let _ = writeln!(text, "{change}");
    }
    std::fs::write(dir.join("store-history.txt"), text)?;
    for (index, record) in watchers.iter().enumerate() {
        let mut text = format!(
            "# start {:?}; streams (member, start) {:?}; cancels {:?}\n",
            record.start, record.streams, record.cancels
        );
        for change in &record.changes {
            let _ = writeln!(text, "{change}");
        }
        std::fs::write(dir.join(format!("watcher-{index}.txt")), text)?;
    }
    Ok(())
}
