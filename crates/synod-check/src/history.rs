//! The store's own history: the changes it made, one per key and revision, as a
//! watch from revision 1 replays them (or as ranges at every revision show them).
//! The watch and durability checkers compare what clients saw against it.

use std::collections::BTreeMap;

/// One change the store made to one key at one revision: a put of `value`, or a
/// delete (`value` is `None`). A revision may hold several changes (a transaction
/// writes several keys), but never two to the same key, so `(revision, key)`
/// identifies a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// The revision that made the change (the key's mod revision after a put).
    pub revision: i64,
    /// The key.
    pub key: String,
    /// The value written, or `None` for a delete.
    pub value: Option<String>,
}

impl Change {
    /// A put of `value` to `key` at `revision`.
    pub fn put(revision: i64, key: impl Into<String>, value: impl Into<String>) -> Change {
        Change {
            revision,
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// A delete of `key` at `revision`.
    pub fn delete(revision: i64, key: impl Into<String>) -> Change {
        Change {
            revision,
            key: key.into(),
            value: None,
        }
    }

    /// What identifies the change in a history.
    pub fn identity(&self) -> (i64, &str) {
        (self.revision, &self.key)
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(value) => write!(f, "@{} put {:?} = {:?}", self.revision, self.key, value),
            None => write!(f, "@{} delete {:?}", self.revision, self.key),
        }
    }
}

/// The keys' values after every change of `history` up to and including
/// `revision`: what a range of those keys at `revision` must return.
pub fn state_at(history: &[Change], revision: i64) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for change in history.iter().filter(|change| change.revision <= revision) {
        match &change.value {
            Some(value) => {
                state.insert(change.key.clone(), value.clone());
            }
            None => {
                state.remove(&change.key);
            }
        }
    }
    state
}

/// Why a history cannot be the store's: revisions must not decrease along it, and
/// no key may change twice in one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedHistory {
    /// The change that breaks the order.
    pub change: Change,
    /// The change before it.
    pub previous: Change,
}

impl std::fmt::Display for MalformedHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed history: {} follows {}",
            self.change, self.previous
        )
    }
}

/// Checks that `history` is in revision order with each `(revision, key)` once.
pub fn check_history_order(history: &[Change]) -> Result<(), MalformedHistory> {
    // The keys changed so far in the current revision.
    let mut keys_in_revision: Vec<&str> = Vec::new();
    for pair in history.windows(2) {
        let (previous, change) = (&pair[0], &pair[1]);
        if change.revision == previous.revision {
            keys_in_revision.push(&previous.key);
        } else {
            keys_in_revision.clear();
        }
        let repeated = keys_in_revision.contains(&change.key.as_str());
        if change.revision < previous.revision || repeated {
            return Err(MalformedHistory {
                change: change.clone(),
                previous: previous.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_at_replays_puts_and_deletes() {
        let history = [
            Change::put(2, "a", "1"),
            Change::put(3, "b", "1"),
            Change::delete(4, "a"),
            Change::put(5, "b", "2"),
        ];
        assert_eq!(
            state_at(&history, 3),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "1".into())])
        );
        assert_eq!(
            state_at(&history, 5),
            BTreeMap::from([("b".into(), "2".into())])
        );
        assert!(state_at(&history, 1).is_empty());
    }

    #[test]
    fn history_order_is_checked() {
        let ordered = [
            Change::put(2, "a", "1"),
            Change::put(2, "b", "1"),
            Change::put(3, "a", "2"),
        ];
        assert!(check_history_order(&ordered).is_ok());
        let backwards = [Change::put(3, "a", "1"), Change::put(2, "b", "1")];
        assert!(check_history_order(&backwards).is_err());
        let twice = [Change::put(2, "a", "1"), Change::put(2, "a", "2")];
        assert!(check_history_order(&twice).is_err());
    }
}
