//! The change history in revision order: what watchers replay.
//!
//! Every change is a row of the history table; reading a range of it rebuilds the
//! events exactly as they were applied, so a watcher that starts in the past, or
//! falls behind, sees the same events, in the same order, as one that kept up.

use std::sync::RwLock;

use redb::ReadableTable;
use synod_proto::mvccpb::event::EventType;
use synod_proto::mvccpb::{Event, KeyValue};

use super::index::KeyIndex;
use super::read::{key_value, with_version};
use super::record::decode_version;
use crate::error::StoreResult;
use crate::sync;
use crate::tables::HistoryKey;
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
pub fn changes<T>(
    history: &T,
    group: GroupId,
    from: i64,
    to: i64,
    limit: usize,
) -> StoreResult<Vec<Change>>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    let mut changes = Vec::new();
    if from > to {
        return Ok(changes);
    }
    for row in history.range((group, from, 0)..=(group, to, i64::MAX))? {
        if changes.len() >= limit {
            break;
        }
        let (revision, stored) = row?;
        let (_, main, sub) = revision.value();
        let (key, record) = decode_version(stored.value())?;
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

/// The live version of `key` just before the change at `revision.sub`, if any
/// (and if compaction has kept it).
pub fn previous<T>(
    history: &T,
    index: &RwLock<KeyIndex>,
    group: GroupId,
    key: &[u8],
    revision: i64,
    sub: i64,
) -> StoreResult<Option<KeyValue>>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    let before = sync::read(index).before(key, revision, sub);
    match before {
        Some(version) if !version.tombstone => {
            with_version(history, group, version, |key, record| {
                Some(key_value(key, version.main, &record))
            })
        }
        _ => Ok(None),
    }
}
