//! The key index: every key's versions, in memory, in key order.
//!
//! The database keeps versions in revision order (see [`crate::tables::HISTORY`]),
//! so a write appends to the last pages instead of rewriting a page somewhere in a
//! key-ordered tree: under puts of random keys at 128 clients a member writes about
//! 1.0 KB to disk per put, where the key-ordered layout wrote 6.1 KB. Finding a
//! key's version at a revision, or the keys of a range, is a walk of this index,
//! and only the versions a read returns are fetched from the database. etcd's
//! treeIndex plays the same part.
//!
//! The index is rebuilt from the database when a node opens it, and after a
//! snapshot replaces the data. The writer (apply) updates it as it writes, before
//! its transaction commits: a reader therefore only looks at versions up to the
//! revision its own read transaction has committed, and asks the index itself
//! whether that revision is compacted, under the same lock as the walk.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use redb::ReadableTable;

use super::index_key::IndexKey;
use super::lineage::Lineage;
use super::record::{split_version, KeyRecord};
use super::span::KeySpan;
use super::MvccError;
use crate::error::{StoreError, StoreResult};
use crate::tables::HistoryKey;
use crate::types::GroupId;

/// One version of a key: where it lies in the history, whether it deleted the key,
/// and its lineage. Kept to 24 bytes, as the index holds one per version of every
/// key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The main revision that wrote it: the key's mod revision.
    pub main: i64,
    /// Its position among the changes of that revision.
    pub sub: u32,
    /// Set on the version that deleted the key.
    pub tombstone: bool,
    /// What a put that follows this version needs to know of it.
    pub lineage: Lineage,
}

const _: () = assert!(std::mem::size_of::<Version>() == 24);

impl Version {
    /// A version at `main.sub` of unknown lineage, refusing a sub revision the
    /// index cannot hold.
    pub fn new(main: i64, sub: i64, tombstone: bool) -> StoreResult<Self> {
        let sub = u32::try_from(sub).map_err(|_| {
            StoreError::Corrupt(format!(
                "revision {main} has change {sub}, beyond the {} one revision may hold",
                u32::MAX
            ))
        })?;
        Ok(Self {
            main,
            sub,
            tombstone,
            lineage: Lineage::UNKNOWN,
        })
    }

    /// The row of this version in the history table of `group`.
    pub fn row(self, group: GroupId) -> HistoryKey {
        (group, self.main, i64::from(self.sub))
    }

    fn revision(self) -> (i64, i64) {
        (self.main, i64::from(self.sub))
    }
}

/// A key's versions, oldest first, never none. Most keys have one, held inline:
/// the entry is then the 24 bytes of that [`Version`] alone, the enum's tag taking
/// a spare value of its tombstone flag.
#[derive(Debug)]
enum Versions {
    One(Version),
    // Boxed so the variant fits in 8 bytes beside the tag: a bare Vec's 24
    // would make every entry 32.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Version>>),
}

const _: () = assert!(std::mem::size_of::<Versions>() == 24);

impl Versions {
    fn as_slice(&self) -> &[Version] {
        match self {
            Versions::One(version) => std::slice::from_ref(version),
            Versions::Many(versions) => versions,
        }
    }

    fn newest(&self) -> Version {
        match self {
            Versions::One(version) => *version,
            // `Many` always holds two or more.
            Versions::Many(versions) => versions[versions.len() - 1],
        }
    }

    fn newest_mut(&mut self) -> &mut Version {
        match self {
            Versions::One(version) => version,
            Versions::Many(versions) => {
                let last = versions.len() - 1;
                &mut versions[last]
            }
        }
    }

    /// Appends `version`, returning it as held.
    fn push(&mut self, version: Version) -> &mut Version {
        match self {
            Versions::One(first) => *self = Versions::Many(Box::new(vec![*first, version])),
            Versions::Many(versions) => versions.push(version),
        }
        self.newest_mut()
    }

    /// Drops the newest version; false when none is left.
    fn pop(&mut self) -> bool {
        match self {
            Versions::One(_) => false,
            Versions::Many(versions) => {
                versions.pop();
                if let [only] = versions.as_slice() {
                    *self = Versions::One(*only);
                }
                true
            }
        }
    }

    /// Keeps the versions from `keep_from` on, handing the others to `doomed`;
    /// false when none is left.
    fn keep_from(&mut self, keep_from: usize, doomed: &mut Vec<Version>) -> bool {
        if keep_from == 0 {
            return true;
        }
        match self {
            Versions::One(version) => {
                doomed.push(*version);
                false
            }
            Versions::Many(versions) => {
                doomed.extend(versions.drain(..keep_from));
                match versions.as_slice() {
                    [] => false,
                    [only] => {
                        *self = Versions::One(*only);
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

/// The versions of every key of one group that compaction has kept.
#[derive(Debug, Default)]
pub struct KeyIndex {
    keys: BTreeMap<IndexKey, Versions>,
    compacted: i64,
}

impl KeyIndex {
    /// Builds the index of `group` from its history table; `compacted` is the
    /// revision the group was compacted at.
    pub fn load<T>(history: &T, group: GroupId, compacted: i64) -> StoreResult<Self>
    where
        T: ReadableTable<HistoryKey, &'static [u8]>,
    {
        let mut index = Self {
            keys: BTreeMap::new(),
            compacted,
        };
        for row in history.range((group, i64::MIN, i64::MIN)..=(group, i64::MAX, i64::MAX))? {
            let (row, stored) = row?;
            let (_, main, sub) = row.value();
            let (key, record) = split_version(stored.value())?;
            let record = KeyRecord::decode(record)?;
            let mut version = Version::new(main, sub, record.tombstone)?;
            version.lineage = record.lineage(main);
            index.insert(key, version);
        }
        Ok(index)
    }

    /// How many keys have versions (live or deleted) the index holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the index holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The revision history was compacted at: versions older than what it needs to
    /// answer reads at this revision are gone.
    pub fn compacted(&self) -> i64 {
        self.compacted
    }

    /// Records a new version of `key`, newer than every version it has, and
    /// returns the newest one it had, and the new one as recorded: a put learns
    /// what it replaces, and fills in the new version's lineage, in the one walk of
    /// the index that records it.
    pub fn insert(&mut self, key: &[u8], version: Version) -> (Option<Version>, &mut Version) {
        // The entry API wants the key owned, which costs an allocation a get would
        // not for a key too long to hold inline; but it finds the key in one walk
        // whether or not it is there.
        match self.keys.entry(key.into()) {
            Entry::Occupied(entry) => {
                let versions = entry.into_mut();
                (Some(versions.newest()), versions.push(version))
            }
            Entry::Vacant(entry) => (None, entry.insert(Versions::One(version)).newest_mut()),
        }
    }

    /// Takes back `version`, the last one [`KeyIndex::insert`] recorded for `key`,
    /// when the change it stood for is refused before it is written.
    pub fn withdraw(&mut self, key: &[u8], version: Version) {
        if let Some(versions) = self.keys.get_mut(key) {
            if versions.newest().revision() == version.revision() && !versions.pop() {
                self.keys.remove(key);
            }
        }
    }

    /// How many keys `span` holds, deleted ones included, counting no further
    /// than `limit`: what a walk of the span would cost.
    pub fn count_up_to(&self, span: &KeySpan<'_>, limit: usize) -> usize {
        match span {
            _ if span.is_empty() => 0,
            KeySpan::Single(key) => usize::from(self.keys.contains_key(*key)),
            KeySpan::Range { start, end } => {
                let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
                self.keys
                    .range::<[u8], _>((Bound::Included(*start), upper))
                    .take(limit)
                    .count()
            }
        }
    }

    /// The version of `key` current at revision `at` (deleted or not).
    pub fn at(&self, key: &[u8], at: i64) -> Option<Version> {
        let versions = self.keys.get(key)?;
        versions
            .as_slice()
            .iter()
            .rev()
            .find(|version| version.main <= at)
            .copied()
    }

    /// The live version of `key` at `at`, if the key exists then.
    pub fn live_at(&self, key: &[u8], at: i64) -> Option<Version> {
        self.at(key, at).filter(|version| !version.tombstone)
    }

    /// The version of `key` just before the change at `main.sub`, if any.
    pub fn before(&self, key: &[u8], main: i64, sub: i64) -> Option<Version> {
        let versions = self.keys.get(key)?;
        versions
            .as_slice()
            .iter()
            .rev()
            .find(|version| version.revision() < (main, sub))
            .copied()
    }

    /// Visits, in key order, every key of `span` that is live at revision `at`,
    /// with its version then, until `visit` breaks. Refuses a revision that is
    /// compacted away.
    pub fn visit_live<F>(&self, span: &KeySpan<'_>, at: i64, mut visit: F) -> Result<(), MvccError>
    where
        F: FnMut(&[u8], Version) -> ControlFlow<()>,
    {
        if at < self.compacted {
            return Err(MvccError::Compacted);
        }
        let (start, end) = match span {
            _ if span.is_empty() => return Ok(()),
            KeySpan::Single(key) => {
                if let Some(version) = self.live_at(key, at) {
                    let _ = visit(key, version);
                }
                return Ok(());
            }
            KeySpan::Range { start, end } => (*start, *end),
        };
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        for (key, versions) in self.keys.range::<[u8], _>((Bound::Included(start), upper)) {
            let live = versions
                .as_slice()
                .iter()
                .rev()
                .find(|version| version.main <= at)
                .filter(|version| !version.tombstone);
            if let Some(version) = live {
                if visit(key.as_slice(), *version).is_break() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Drops every version superseded at or before `target`, and the versions of
    /// keys deleted at or before it, returning them for removal from the history.
    pub fn compact(&mut self, target: i64) -> Vec<Version> {
        let mut doomed = Vec::new();
        self.keys.retain(|_, versions| {
            // Versions at or before the target, but the newest of them: a read at
            // the target still needs it, unless it deleted the key.
            let held = versions.as_slice();
            let at_or_before = held
                .iter()
                .take_while(|version| version.main <= target)
                .count();
            let keep_from = match at_or_before {
                0 => 0,
                n if held[n - 1].tombstone => n,
                n => n - 1,
            };
            versions.keep_from(keep_from, &mut doomed)
        });
        self.compacted = self.compacted.max(target);
        doomed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::mvcc::lineage::KnownLineage;

    fn version(main: i64, tombstone: bool) -> Version {
        Version::new(main, 0, tombstone).unwrap()
    }

    fn live(index: &KeyIndex, span: KeySpan<'_>, at: i64) -> Vec<(Vec<u8>, i64)> {
        let mut seen = Vec::new();
        index
            .visit_live(&span, at, |key, version| {
                seen.push((key.to_vec(), version.main));
                ControlFlow::Continue(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn insert_returns_the_version_it_follows_and_withdraw_takes_it_back() {
        let mut index = KeyIndex::default();
        assert_eq!(index.insert(b"a", version(2, false)).0, None);
        assert_eq!(
            index.insert(b"a", version(3, true)).0,
            Some(version(2, false))
        );
        let (replaced, recorded) = index.insert(b"a", version(4, false));
        assert_eq!(replaced, Some(version(3, true)));
        // The recorded version is the one the index holds.
        let lineage = Lineage::new(
            4,
            KnownLineage {
                create_revision: 4,
                version: 1,
                leased: false,
            },
        );
        recorded.lineage = lineage;
        assert_eq!(index.at(b"a", i64::MAX).map(|v| v.lineage), Some(lineage));
        index.withdraw(b"a", version(4, false));
        assert_eq!(index.at(b"a", i64::MAX), Some(version(3, true)));
        // Withdrawing a version that is not the newest changes nothing.
        index.withdraw(b"a", version(2, false));
        assert_eq!(index.at(b"a", 2), Some(version(2, false)));
        // A key whose only version is withdrawn is gone.
        index.insert(b"b", version(5, false));
        index.withdraw(b"b", version(5, false));
        assert!(index.at(b"b", i64::MAX).is_none());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn answers_each_revision_from_the_versions_before_it() {
        let mut index = KeyIndex::default();
        index.insert(b"a", version(2, false));
        index.insert(b"b", version(3, false));
        index.insert(b"a", version(4, true));
        index.insert(b"a", version(5, false));
        assert_eq!(index.at(b"a", 1), None);
        assert_eq!(index.live_at(b"a", 3).map(|v| v.main), Some(2));
        assert_eq!(index.live_at(b"a", 4), None);
        assert_eq!(index.at(b"a", 4).map(|v| v.tombstone), Some(true));
        assert_eq!(index.before(b"a", 5, 0).map(|v| v.main), Some(4));
        let all = KeySpan::new(b"a", b"\0");
        assert_eq!(
            live(&index, all.clone(), 3),
            vec![(b"a".to_vec(), 2), (b"b".to_vec(), 3)]
        );
        assert_eq!(live(&index, all.clone(), 4), vec![(b"b".to_vec(), 3)]);
        assert_eq!(
            live(&index, KeySpan::new(b"a", b"b"), 9),
            vec![(b"a".to_vec(), 5)]
        );
        assert_eq!(live(&index, KeySpan::new(b"c", b"a"), 9), vec![]);
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_target_need() {
        let mut index = KeyIndex::default();
        index.insert(b"a", version(2, false));
        index.insert(b"a", version(3, false));
        index.insert(b"gone", version(3, false));
        index.insert(b"gone", version(4, true));
        index.insert(b"a", version(6, false));
        let doomed: Vec<i64> = index.compact(4).iter().map(|v| v.main).collect();
        assert_eq!(doomed, vec![2, 3, 4]);
        assert_eq!(index.len(), 1);
        assert_eq!(index.live_at(b"a", 4).map(|v| v.main), Some(3));
        assert_eq!(index.live_at(b"a", 6).map(|v| v.main), Some(6));
        assert!(matches!(
            index.visit_live(
                &KeySpan::new(b"a", b""),
                3,
                |_, _| ControlFlow::Continue(())
            ),
            Err(MvccError::Compacted)
        ));
    }

    #[test]
    fn a_key_left_with_one_version_holds_it_inline_again() {
        let mut index = KeyIndex::default();
        for main in 2..=4 {
            index.insert(b"a", version(main, false));
        }
        let doomed: Vec<i64> = index.compact(4).iter().map(|v| v.main).collect();
        assert_eq!(doomed, vec![2, 3]);
        assert!(matches!(index.keys.get(&b"a"[..]), Some(Versions::One(_))));
        index.insert(b"a", version(5, false));
        index.withdraw(b"a", version(5, false));
        assert!(matches!(index.keys.get(&b"a"[..]), Some(Versions::One(_))));
        assert_eq!(index.at(b"a", i64::MAX).map(|v| v.main), Some(4));
        // A deleted key compacts away whole.
        index.insert(b"a", version(6, true));
        assert_eq!(index.compact(6).len(), 2);
        assert!(index.is_empty());
    }

    #[test]
    fn refuses_a_sub_revision_it_cannot_hold() {
        assert!(Version::new(2, i64::from(u32::MAX) + 1, false).is_err());
    }
}
