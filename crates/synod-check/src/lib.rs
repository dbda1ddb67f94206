//! History checkers for black-box tests.
//!
//! [`check_linearizable`] decides whether a concurrent history of key-value
//! operations (each with the interval in which it was in flight and what it
//! returned) can be explained by some order of the operations, one at a time,
//! that respects real time: the Wing–Gong search with Lowe's memoization, run per
//! key as Porcupine does (a key-value store is linearizable iff each key is).

use std::collections::{BTreeMap, HashSet};

/// What a client did to one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A read; `None` means the key was absent.
    Get,
    /// A write of the value.
    Put(String),
    /// A delete.
    Delete,
    /// A compare-and-swap: write `new` if the value is `expected` (`None`: absent).
    CompareAndSwap {
        /// The value required.
        expected: Option<String>,
        /// The value written.
        new: String,
    },
}

/// What the operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A read's answer.
    Value(Option<String>),
    /// A write or delete that was acknowledged.
    Done,
    /// A compare-and-swap's answer: whether it swapped.
    Swapped(bool),
    /// No answer (timeout, lost connection): the operation may or may not have
    /// taken effect, at any time after its call.
    Unknown,
}

/// One operation of a history. Times are in any monotonic unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The key.
    pub key: String,
    /// What was done.
    pub operation: Operation,
    /// When the call was made.
    pub call: u64,
    /// When the answer arrived (ignored for [`Outcome::Unknown`]).
    pub ret: u64,
    /// The answer.
    pub outcome: Outcome,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history has no linearization.
    pub key: String,
    /// That key's operations, for the report.
    pub events: Vec<Event>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "no linearization for key {:?}; its {} operations:",
            self.key,
            self.events.len()
        )?;
        for event in &self.events {
            writeln!(
                f,
                "  [{}, {}] {:?} -> {:?}",
                event.call, event.ret, event.operation, event.outcome
            )?;
        }
        Ok(())
    }
}

/// Most search states explored for one key before the check gives up (and fails,
/// so an inconclusive check never passes).
pub const SEARCH_STATES_MAX: usize = 5_000_000;

/// Checks a history; `Err` names the first key with no linearization (or whose
/// search was too large to finish, which is reported the same way).
pub fn check_linearizable(history: &[Event]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for event in history {
        by_key.entry(&event.key).or_default().push(event.clone());
    }
    for (key, events) in by_key {
        if !key_is_linearizable(&events) {
            return Err(Violation {
                key: key.to_string(),
                events,
            });
        }
    }
    Ok(())
}

/// Applies `operation` to `state`; returns the new state if `outcome` is what the
/// register would answer.
fn step(
    state: &Option<String>,
    operation: &Operation,
    outcome: &Outcome,
) -> Option<Option<String>> {
    let (next, answer) = match operation {
        Operation::Get => (state.clone(), Outcome::Value(state.clone())),
        Operation::Put(value) => (Some(value.clone()), Outcome::Done),
        Operation::Delete => (None, Outcome::Done),
        Operation::CompareAndSwap { expected, new } => {
            if state == expected {
                (Some(new.clone()), Outcome::Swapped(true))
            } else {
                (state.clone(), Outcome::Swapped(false))
            }
        }
    };
    (*outcome == Outcome::Unknown || *outcome == answer).then_some(next)
}

fn key_is_linearizable(events: &[Event]) -> bool {
    // Unanswered operations may take effect at any time after their call.
    let returns: Vec<u64> = events
        .iter()
        .map(|event| {
            if event.outcome == Outcome::Unknown {
                u64::MAX
            } else {
                event.ret
            }
        })
        .collect();
    let count = events.len();
    let mut done = vec![false; count];
    let mut seen: HashSet<(Vec<bool>, Option<String>)> = HashSet::new();
    // Depth-first search over linearization prefixes: (state, candidates tried).
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut state: Option<String> = None;
    let mut remaining = count;
    let mut next_candidate = 0;
    let mut explored = 0usize;
    loop {
        if remaining == 0
            || remaining
                == (0..count)
                    .filter(|i| !done[*i] && returns[*i] == u64::MAX && is_read(&events[*i]))
                    .count()
        {
            return true;
        }
        explored += 1;
        if explored > SEARCH_STATES_MAX {
            return false;
        }
        // An operation can go next if it was called before every pending
        // operation returned.
        let horizon = (0..count)
            .filter(|i| !done[*i])
            .map(|i| returns[i])
            .min()
            .unwrap_or(u64::MAX);
        let candidate = (next_candidate..count).find(|i| !done[*i] && events[*i].call <= horizon);
        match candidate {
            Some(i) => {
                next_candidate = i + 1;
                if let Some(next) = step(&state, &events[i].operation, &events[i].outcome) {
                    done[i] = true;
                    if seen.insert((done.clone(), next.clone())) {
                        stack.push((i, state.clone()));
                        state = next;
                        remaining -= 1;
                        next_candidate = 0;
                    } else {
                        done[i] = false;
                    }
                }
            }
            None => {
                // Dead end: undo the last choice and try the next candidate.
                let Some((last, previous)) = stack.pop() else {
                    return false;
                };
                done[last] = false;
                state = previous;
                remaining += 1;
                next_candidate = last + 1;
            }
        }
    }
}

fn is_read(event: &Event) -> bool {
    event.operation == Operation::Get
}

/// A response's store revision, with the interval its request was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionObservation {
    /// When the request was made.
    pub call: u64,
    /// When the response arrived.
    pub ret: u64,
    /// The header revision of the response.
    pub revision: i64,
}

/// Two observations whose revisions went backwards in real time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRegression {
    /// The earlier, completed observation.
    pub earlier: RevisionObservation,
    /// The later one, which saw an older revision.
    pub later: RevisionObservation,
}

/// Model-free check: the store's revision never goes backwards in real time. If one
/// linearizable request completed before another began (on any member), the second
/// must report a revision at least as new.
pub fn check_revisions_monotonic(
    observations: &[RevisionObservation],
) -> Result<(), RevisionRegression> {
    let mut by_call: Vec<RevisionObservation> = observations.to_vec();
    by_call.sort_by_key(|observation| observation.call);
    let mut by_ret: Vec<RevisionObservation> = observations.to_vec();
    by_ret.sort_by_key(|observation| observation.ret);
    // Sweep in call order, folding in every observation that completed earlier.
    let mut completed = by_ret.iter().peekable();
    let mut newest: Option<RevisionObservation> = None;
    for later in by_call {
        while let Some(earlier) = completed.next_if(|earlier| earlier.ret < later.call) {
            if newest.is_none_or(|newest| earlier.revision > newest.revision) {
                newest = Some(*earlier);
            }
        }
        if let Some(earlier) = newest {
            if later.revision < earlier.revision {
                return Err(RevisionRegression { earlier, later });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(call: u64, ret: u64, operation: Operation, outcome: Outcome) -> Event {
        Event {
            key: "k".into(),
            operation,
            call,
            ret,
            outcome,
        }
    }

    fn put(call: u64, ret: u64, value: &str) -> Event {
        event(call, ret, Operation::Put(value.into()), Outcome::Done)
    }

    fn get(call: u64, ret: u64, value: Option<&str>) -> Event {
        event(
            call,
            ret,
            Operation::Get,
            Outcome::Value(value.map(str::to_string)),
        )
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            put(0, 1, "a"),
            get(2, 3, Some("a")),
            put(4, 5, "b"),
            get(6, 7, Some("b")),
        ];
        assert!(check_linearizable(&history).is_ok());
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // The read overlaps the write: it may see the old or the new value.
        let history = [
            put(0, 1, "a"),
            put(2, 6, "b"),
            get(3, 5, Some("a")),
            get(4, 7, Some("b")),
        ];
        assert!(check_linearizable(&history).is_ok());
    }

    #[test]
    fn stale_read_is_caught() {
        // "b" was acknowledged before the read began, yet the read saw "a".
        let history = [put(0, 1, "a"), put(2, 3, "b"), get(4, 5, Some("a"))];
        match check_linearizable(&history) {
            Err(violation) => assert_eq!(violation.key, "k"),
            Ok(()) => panic!("a stale read passed the check"),
        }
    }

    #[test]
    fn lost_write_is_caught() {
        let history = [put(0, 1, "a"), get(2, 3, None)];
        assert!(check_linearizable(&history).is_err());
    }

    #[test]
    fn read_going_back_in_time_is_caught() {
        // Two sequential reads see "b" then "a" while "b" replaced "a".
        let history = [
            put(0, 1, "a"),
            put(2, 10, "b"),
            get(3, 4, Some("b")),
            get(5, 6, Some("a")),
        ];
        assert!(check_linearizable(&history).is_err());
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_apply() {
        let maybe = event(0, 1, Operation::Put("x".into()), Outcome::Unknown);
        assert!(check_linearizable(&[maybe.clone(), get(2, 3, None)]).is_ok());
        assert!(check_linearizable(&[maybe.clone(), get(2, 3, Some("x"))]).is_ok());
        // But it cannot take effect before it was called.
        let late = event(5, 6, Operation::Put("x".into()), Outcome::Unknown);
        assert!(check_linearizable(&[late, get(2, 3, Some("x"))]).is_err());
    }

    #[test]
    fn compare_and_swap_follows_the_register() {
        let cas = |call, ret, expected: Option<&str>, new: &str, swapped| {
            event(
                call,
                ret,
                Operation::CompareAndSwap {
                    expected: expected.map(str::to_string),
                    new: new.into(),
                },
                Outcome::Swapped(swapped),
            )
        };
        assert!(check_linearizable(&[
            put(0, 1, "a"),
            cas(2, 3, Some("a"), "b", true),
            get(4, 5, Some("b"))
        ])
        .is_ok());
        // Two sequential swaps from the same value cannot both succeed.
        assert!(check_linearizable(&[
            put(0, 1, "a"),
            cas(2, 3, Some("a"), "b", true),
            cas(4, 5, Some("a"), "c", true)
        ])
        .is_err());
        assert!(check_linearizable(&[cas(0, 1, None, "a", true), get(2, 3, Some("a"))]).is_ok());
    }

    #[test]
    fn revisions_may_not_go_backwards_in_real_time() {
        let seen = |call, ret, revision| RevisionObservation {
            call,
            ret,
            revision,
        };
        assert!(check_revisions_monotonic(&[seen(0, 1, 5), seen(2, 3, 5), seen(4, 5, 9)]).is_ok());
        // Overlapping requests may see either order.
        assert!(check_revisions_monotonic(&[seen(0, 10, 9), seen(1, 2, 5)]).is_ok());
        match check_revisions_monotonic(&[seen(0, 1, 9), seen(2, 3, 5)]) {
            Err(regression) => assert_eq!(regression.later.revision, 5),
            Ok(()) => panic!("a revision going backwards passed"),
        }
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put(0, 1, "z");
        other.key = "other".into();
        let history = [put(0, 1, "a"), other, get(2, 3, Some("a"))];
        assert!(check_linearizable(&history).is_ok());
    }
}
