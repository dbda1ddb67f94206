//! The watch contract (docs/ARCHITECTURE.md §1): a watch delivers every change to its keys
//! from its start revision on, at most and at least once, in revision order, with
//! the values the store wrote — across leader changes and reconnects.
//!
//! [`check_watch`] compares what one watcher received (over all the streams it
//! opened, resuming each time from the revision after the last change it got)
//! with the store's own history, obtained after the run (see
//! [`crate::history`]).

use std::collections::{HashMap, HashSet};

use crate::history::Change;

/// The keys a watch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchedKeys {
    /// One key.
    Key(String),
    /// Every key that starts with the prefix (the empty prefix is every key).
    Prefix(String),
}

impl WatchedKeys {
    /// Whether the watch covers `key`.
    pub fn contains(&self, key: &str) -> bool {
        match self {
            WatchedKeys::Key(watched) => key == watched,
            WatchedKeys::Prefix(prefix) => key.starts_with(prefix.as_str()),
        }
    }
}

/// What a watcher asked for and how far it must have got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The keys watched.
    pub keys: WatchedKeys,
    /// The first revision the watch covers: its `start_revision`, or for a watch
    /// created without one, the created response's header revision + 1.
    pub start_revision: i64,
    /// Every change up to and including this revision must have been delivered
    /// (the watcher waited until it had seen a change at least this new).
    pub delivered_through: i64,
}

/// How a watcher's events break the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchViolation {
    /// A change the watch covers was never delivered.
    Gap {
        /// The change that is missing.
        missing: Change,
        /// The last change delivered before it in history order, if any.
        after: Option<Change>,
    },
    /// A change was delivered twice.
    Duplicate {
        /// The change delivered again.
        change: Change,
    },
    /// A change was delivered after one that comes later in the history.
    OutOfOrder {
        /// The change delivered too late.
        change: Change,
        /// The later change delivered before it.
        after: Change,
    },
    /// A change was delivered with another value (or kind) than the store made.
    WrongValue {
        /// What the watcher got.
        delivered: Change,
        /// What the store made at that revision.
        stored: Change,
    },
    /// A delivered change the store never made to a watched key at or after the
    /// start revision.
    Unexpected {
        /// The change delivered.
        change: Change,
    },
}

impl std::fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchViolation::Gap { missing, after } => match after {
                Some(after) => write!(f, "gap: {missing} was never delivered (after {after})"),
                None => write!(f, "gap: {missing} was never delivered (the first change)"),
            },
            WatchViolation::Duplicate { change } => write!(f, "duplicate: {change} twice"),
            WatchViolation::OutOfOrder { change, after } => {
                write!(f, "out of order: {change} delivered after {after}")
            }
            WatchViolation::WrongValue { delivered, stored } => {
                write!(
                    f,
                    "wrong value: delivered {delivered}, the store made {stored}"
                )
            }
            WatchViolation::Unexpected { change } => write!(
                f,
                "unexpected: {change} is no change the store made to a watched key \
                 from the start revision on"
            ),
        }
    }
}

/// Checks the changes one watcher received, in the order received, against the
/// store's `history` (in revision order, as [`crate::check_history_order`]
/// accepts): exactly the history's changes to the watched keys from
/// `spec.start_revision` through `spec.delivered_through`, each once, in order,
/// with the stored values. Changes delivered beyond `delivered_through` are
/// checked the same way, but need not be complete.
pub fn check_watch(
    spec: &WatchSpec,
    delivered: &[Change],
    history: &[Change],
) -> Result<(), WatchViolation> {
    let covered: Vec<&Change> = history
        .iter()
        .filter(|change| change.revision >= spec.start_revision && spec.keys.contains(&change.key))
        .collect();
    let position: HashMap<(i64, &str), usize> = covered
        .iter()
        .enumerate()
        .map(|(index, change)| (change.identity(), index))
        .collect();
    let mut seen: HashSet<usize> = HashSet::new();
    let mut last: Option<(usize, &Change)> = None;
    for change in delivered {
        let Some(&at) = position.get(&change.identity()) else {
            return Err(WatchViolation::Unexpected {
                change: change.clone(),
            });
        };
        if !seen.insert(at) {
            return Err(WatchViolation::Duplicate {
                change: change.clone(),
            });
        }
        if let Some((last_at, last_change)) = last {
            if at < last_at {
                return Err(WatchViolation::OutOfOrder {
                    change: change.clone(),
                    after: last_change.clone(),
                });
            }
        }
        if covered[at].value != change.value {
            return Err(WatchViolation::WrongValue {
                delivered: change.clone(),
                stored: covered[at].clone(),
            });
        }
        last = Some((at, change));
    }
    let missing = covered
        .iter()
        .enumerate()
        .take_while(|(_, change)| change.revision <= spec.delivered_through)
        .find(|(at, _)| !seen.contains(at));
    if let Some((at, missing)) = missing {
        let after = covered[..at].last().map(|change| (*change).clone());
        return Err(WatchViolation::Gap {
            missing: (*missing).clone(),
            after,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<Change> {
        vec![
            Change::put(2, "w/a", "1"),
            Change::put(3, "other", "x"),
            Change::put(4, "w/b", "1"),
            Change::delete(5, "w/a"),
            Change::put(6, "w/b", "2"),
            Change::put(6, "w/c", "1"),
            Change::put(7, "w/a", "2"),
        ]
    }

    fn spec(start_revision: i64, delivered_through: i64) -> WatchSpec {
        WatchSpec {
            keys: WatchedKeys::Prefix("w/".into()),
            start_revision,
            delivered_through,
        }
    }

    fn watched(history: &[Change], start_revision: i64) -> Vec<Change> {
        history
            .iter()
            .filter(|change| change.key.starts_with("w/") && change.revision >= start_revision)
            .cloned()
            .collect()
    }

    #[test]
    fn the_exact_history_passes() {
        let history = history();
        assert_eq!(
            check_watch(&spec(1, 7), &watched(&history, 1), &history),
            Ok(())
        );
        // From a later start revision, and a single key.
        assert_eq!(
            check_watch(&spec(5, 7), &watched(&history, 5), &history),
            Ok(())
        );
        let single = WatchSpec {
            keys: WatchedKeys::Key("w/b".into()),
            start_revision: 1,
            delivered_through: 7,
        };
        let delivered = [Change::put(4, "w/b", "1"), Change::put(6, "w/b", "2")];
        assert_eq!(check_watch(&single, &delivered, &history), Ok(()));
    }

    #[test]
    fn changes_after_delivered_through_may_be_missing() {
        let history = history();
        let delivered: Vec<Change> = watched(&history, 1)
            .into_iter()
            .filter(|change| change.revision <= 5)
            .collect();
        assert_eq!(check_watch(&spec(1, 5), &delivered, &history), Ok(()));
        assert!(matches!(
            check_watch(&spec(1, 6), &delivered, &history),
            Err(WatchViolation::Gap { .. })
        ));
    }

    #[test]
    fn a_gap_is_rejected() {
        let history = history();
        let mut delivered = watched(&history, 1);
        let missing = delivered.remove(2);
        match check_watch(&spec(1, 7), &delivered, &history) {
            Err(WatchViolation::Gap {
                missing: reported,
                after,
            }) => {
                assert_eq!(reported, missing);
                assert_eq!(after, Some(Change::put(4, "w/b", "1")));
            }
            other => panic!("a gap passed as {other:?}"),
        }
        // One change of a revision with two is a gap too.
        let mut delivered = watched(&history, 1);
        delivered.retain(|change| change.key != "w/c");
        assert!(matches!(
            check_watch(&spec(1, 7), &delivered, &history),
            Err(WatchViolation::Gap { .. })
        ));
    }

    #[test]
    fn a_duplicate_is_rejected() {
        let history = history();
        let mut delivered = watched(&history, 1);
        // A resumed watch that starts again at the last revision it already got.
        delivered.insert(3, delivered[2].clone());
        assert_eq!(
            check_watch(&spec(1, 7), &delivered, &history),
            Err(WatchViolation::Duplicate {
                change: Change::delete(5, "w/a")
            })
        );
    }

    #[test]
    fn reordering_is_rejected() {
        let history = history();
        let mut delivered = watched(&history, 1);
        delivered.swap(1, 2);
        assert_eq!(
            check_watch(&spec(1, 7), &delivered, &history),
            Err(WatchViolation::OutOfOrder {
                change: Change::put(4, "w/b", "1"),
                after: Change::delete(5, "w/a"),
            })
        );
    }

    #[test]
    fn wrong_values_and_foreign_changes_are_rejected() {
        let history = history();
        let mut delivered = watched(&history, 1);
        delivered[1].value = Some("stale".into());
        assert!(matches!(
            check_watch(&spec(1, 7), &delivered, &history),
            Err(WatchViolation::WrongValue { .. })
        ));
        // A delete reported as a put.
        let mut delivered = watched(&history, 1);
        delivered[2].value = Some("1".into());
        assert!(matches!(
            check_watch(&spec(1, 7), &delivered, &history),
            Err(WatchViolation::WrongValue { .. })
        ));
        // A key outside the prefix, a revision the store never made, and a change
        // before the start revision.
        for foreign in [
            Change::put(3, "other", "x"),
            Change::put(8, "w/a", "3"),
            Change::put(2, "w/a", "1"),
        ] {
            let mut delivered = watched(&history, 4);
            delivered.push(foreign.clone());
            assert_eq!(
                check_watch(&spec(4, 7), &delivered, &history),
                Err(WatchViolation::Unexpected { change: foreign })
            );
        }
    }
}
