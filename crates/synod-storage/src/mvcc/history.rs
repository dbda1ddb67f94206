//! The change history in revision order: what watchers replay.
//!
//! Every change is a row of the revisions table; reading a range of it rebuilds the
//! events exactly as they were applied, so a watcher that starts in the past, or
//! falls behind, sees the same events, in the same order, as one that kept up.

use redb::ReadableTable;
use synod_proto::mvccpb::event::EventType;
use synod_proto::mvccpb::{Event, KeyValue};

use super::read::{key_value, KvKey};
use super::record::KeyRecord;
use crate::error::{StoreError, StoreResult};
use crate::types::GroupId;

/// One change, as applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Main revision of the change.
    pub revision: i64,
    /// Position of the change within its revision.
    pub sub: i64,
    /// The event as etcd reports it (without `prev_kv`).
    pub event: Event,
}

/// Reads up to `limit` changes with revisions in `from..=to`, in order.
pub fn changes<R, K>(
    revisions: &R,
    kv: &K,
    group: GroupId,
    from: i64,
    to: i64,
    limit: usize,
) -> StoreResult<Vec<Change>>
where
    R: ReadableTable<(u64, i64, i64), &'static [u8]>,
    K: ReadableTable<KvKey<'static>, &'static [u8]>,
{
    let mut changes = Vec::new();
    if from > to {
        return Ok(changes);
    }
    for row in revisions.range((group, from, 0)..=(group, to, i64::MAX))? {
        if changes.len() >= limit {
            break;
        }
        let (revision, key) = row?;
        let (_, main, sub) = revision.value();
        let key = key.value();
        let stored = kv.get((group, key, main, sub))?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "revision {main}.{sub} names a key version that is missing"
            ))
        })?;
        let record = KeyRecord::decode(stored.value())?;
        let event = if record.tombstone {
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.to_vec(),
                    mod_revision: main,
                    ..Default::default()
                }),
                prev_kv: None,
            }
        } else {
            Event {
                r#type: EventType::Put as i32,
                kv: Some(key_value(key, main, &record)),
                prev_kv: None,
            }
        };
        changes.push(Change {
            revision: main,
            sub,
            event,
        });
    }
    Ok(changes)
}

/// The live version of `key` just before the change at `revision.sub`, if any.
pub fn previous<K>(
    kv: &K,
    group: GroupId,
    key: &[u8],
    revision: i64,
    sub: i64,
) -> StoreResult<Option<KeyValue>>
where
    K: ReadableTable<KvKey<'static>, &'static [u8]>,
{
    let mut range = kv.range::<KvKey>((group, key, 0, 0)..(group, key, revision, sub))?;
    match range.next_back().transpose()? {
        Some((row, value)) => {
            let record = KeyRecord::decode(value.value())?;
            Ok((!record.tombstone).then(|| key_value(key, row.value().2, &record)))
        }
        None => Ok(None),
    }
}
