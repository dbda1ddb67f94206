//! No acknowledged write is lost (docs/ARCHITECTURE.md §1): every write a client saw
//! acknowledged is in the store's history at the revision its response reported.
//! So the write is either the key's value at the end of the history or was
//! superseded by a later change — never silently undone by a crash, a failover or
//! a snapshot.

use std::collections::HashMap;

use crate::history::Change;

/// A write a client saw acknowledged: the change it made, with the revision its
/// response's header reported (a put, a delete that deleted something, or the
/// write of a transaction that succeeded).
pub type AcknowledgedWrite = Change;

/// An acknowledged write the history does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostWrite {
    /// The write the client saw acknowledged.
    pub write: AcknowledgedWrite,
    /// What the history holds for that key at that revision, if anything.
    pub found: Option<Change>,
    /// The key's last change in the history, if any.
    pub latest: Option<Change>,
}

impl std::fmt::Display for LostWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acknowledged write {} is not in the store's history",
            self.write
        )?;
        match &self.found {
            Some(found) => write!(f, "; at that revision the store made {found}")?,
            None => write!(f, "; the store made no change to the key at that revision")?,
        }
        match &self.latest {
            Some(latest) => write!(f, "; the key's last change is {latest}"),
            None => write!(f, "; the key was never changed"),
        }
    }
}

/// Checks that every write of `acknowledged` is in `history`, with its value, at
/// its revision. (The failure is boxed: it is large and rare.)
pub fn check_acknowledged_writes(
    acknowledged: &[AcknowledgedWrite],
    history: &[Change],
) -> Result<(), Box<LostWrite>> {
    let by_identity: HashMap<(i64, &str), &Change> = history
        .iter()
        .map(|change| (change.identity(), change))
        .collect();
    for write in acknowledged {
        let found = by_identity.get(&write.identity()).copied();
        if found.is_some_and(|found| found.value == write.value) {
            continue;
        }
        let latest = history
            .iter()
            .rev()
            .find(|change| change.key == write.key)
            .cloned();
        return Err(Box::new(LostWrite {
            write: write.clone(),
            found: found.cloned(),
            latest,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_and_superseded_writes_pass() {
        let history = [
            Change::put(2, "a", "1"),
            Change::put(3, "a", "2"),
            Change::delete(4, "a"),
            Change::put(5, "b", "1"),
        ];
        let acknowledged = [
            Change::put(2, "a", "1"),
            Change::delete(4, "a"),
            Change::put(5, "b", "1"),
        ];
        assert_eq!(check_acknowledged_writes(&acknowledged, &history), Ok(()));
    }

    #[test]
    fn a_lost_write_is_caught() {
        let history = [Change::put(2, "a", "1"), Change::put(4, "a", "3")];
        // Acknowledged at revision 3, which the store never made (rolled back).
        let lost = Change::put(3, "a", "2");
        let error = check_acknowledged_writes(std::slice::from_ref(&lost), &history);
        assert_eq!(
            error,
            Err(Box::new(LostWrite {
                write: lost,
                found: None,
                latest: Some(Change::put(4, "a", "3")),
            }))
        );
    }

    #[test]
    fn a_write_replaced_at_its_revision_is_caught() {
        // The revision exists, but holds another value for the key.
        let history = [Change::put(2, "a", "other")];
        let error = check_acknowledged_writes(&[Change::put(2, "a", "mine")], &history);
        assert!(error.is_err_and(|lost| lost.found.is_some()));
    }
}
