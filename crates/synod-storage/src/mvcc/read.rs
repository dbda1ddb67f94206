//! Reads of the MVCC store at a revision, shared by read-only transactions (client
//! reads) and the write transaction that applies commands (Txn ranges and compares).

use std::cmp::Ordering;
use std::ops::{Bound, ControlFlow};

use redb::ReadableTable;
use synod_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use synod_proto::mvccpb::KeyValue;

use super::record::KeyRecord;
use super::span::KeySpan;
use super::MvccError;
use crate::error::StoreResult;
use crate::types::GroupId;

/// Key of the [`crate::tables::KV`] table.
pub type KvKey<'a> = (u64, &'a [u8], i64, i64);

/// The newest version of `key` at or below revision `at`, as
/// `(main revision, sub revision, record bytes)`, tombstones included.
pub fn version_at<T>(
    table: &T,
    group: GroupId,
    key: &[u8],
    at: i64,
) -> StoreResult<Option<(i64, i64, Vec<u8>)>>
where
    T: ReadableTable<KvKey<'static>, &'static [u8]>,
{
    let mut range = table.range::<KvKey>((group, key, 0, 0)..=(group, key, at, i64::MAX))?;
    match range.next_back().transpose()? {
        Some((row, value)) => {
            let (_, _, main, sub) = row.value();
            Ok(Some((main, sub, value.value().to_vec())))
        }
        None => Ok(None),
    }
}

/// The live value of `key` at revision `at`, if the key existed then.
pub fn live_at<T>(table: &T, group: GroupId, key: &[u8], at: i64) -> StoreResult<Option<KeyValue>>
where
    T: ReadableTable<KvKey<'static>, &'static [u8]>,
{
    live_version(table, group, key, at, true)
}

/// Like [`live_at`], but with the key and value left empty: what a write needs
/// to know of the version it replaces, without copying the value out.
pub fn live_header_at<T>(
    table: &T,
    group: GroupId,
    key: &[u8],
    at: i64,
) -> StoreResult<Option<KeyValue>>
where
    T: ReadableTable<KvKey<'static>, &'static [u8]>,
{
    live_version(table, group, key, at, false)
}

fn live_version<T>(
    table: &T,
    group: GroupId,
    key: &[u8],
    at: i64,
    with_bytes: bool,
) -> StoreResult<Option<KeyValue>>
where
    T: ReadableTable<KvKey<'static>, &'static [u8]>,
{
    let mut range = table.range::<KvKey>((group, key, 0, 0)..=(group, key, at, i64::MAX))?;
    let Some((row, bytes)) = range.next_back().transpose()? else {
        return Ok(None);
    };
    let (_, _, mod_revision, _) = row.value();
    let record = KeyRecord::decode(bytes.value())?;
    if record.tombstone {
        return Ok(None);
    }
    Ok(Some(if with_bytes {
        key_value(key, mod_revision, &record)
    } else {
        KeyValue {
            create_revision: record.create_revision,
            mod_revision,
            version: record.version,
            lease: record.lease,
            ..Default::default()
        }
    }))
}

/// Builds the wire form of one key version.
pub fn key_value(key: &[u8], mod_revision: i64, record: &KeyRecord<'_>) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: record.create_revision,
        mod_revision,
        version: record.version,
        value: record.value.to_vec(),
        lease: record.lease,
    }
}

/// Calls `visit` with every key live at revision `at` within `span`, in key order,
/// until it breaks. Each distinct key costs two B-tree lookups, however long its
/// history.
pub fn visit_live<T, F>(
    table: &T,
    group: GroupId,
    span: &KeySpan<'_>,
    at: i64,
    mut visit: F,
) -> StoreResult<()>
where
    T: ReadableTable<KvKey<'static>, &'static [u8]>,
    F: FnMut(&[u8], i64, KeyRecord<'_>) -> ControlFlow<()>,
{
    if span.is_empty() {
        return Ok(());
    }
    let (start, end) = match span {
        KeySpan::Single(key) => {
            if let Some((mod_revision, _, bytes)) = version_at(table, group, key, at)? {
                let record = KeyRecord::decode(&bytes)?;
                if !record.tombstone {
                    let _ = visit(key, mod_revision, record);
                }
            }
            return Ok(());
        }
        KeySpan::Range { start, end } => (*start, *end),
    };
    let upper: Bound<KvKey> = match end {
        Some(end) => Bound::Excluded((group, end, 0, 0)),
        None => Bound::Excluded((group.saturating_add(1), &[], 0, 0)),
    };
    let mut lower: Bound<Vec<u8>> = Bound::Included(start.to_vec());
    loop {
        let next_key = {
            let lower_bound: Bound<KvKey> = match &lower {
                Bound::Included(key) => Bound::Included((group, key.as_slice(), 0, 0)),
                Bound::Excluded(key) => {
                    Bound::Excluded((group, key.as_slice(), i64::MAX, i64::MAX))
                }
                Bound::Unbounded => Bound::Unbounded,
            };
            let mut range = table.range::<KvKey>((lower_bound, upper))?;
            match range.next().transpose()? {
                Some((row, _)) => row.value().1.to_vec(),
                None => return Ok(()),
            }
        };
        if let Some((mod_revision, _, bytes)) = version_at(table, group, &next_key, at)? {
            let record = KeyRecord::decode(&bytes)?;
            if !record.tombstone && visit(&next_key, mod_revision, record).is_break() {
                return Ok(());
            }
        }
        lower = Bound::Excluded(next_key);
    }
}

/// Resolves a request's revision against the store's current and compacted ones.
pub fn resolve_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, MvccError> {
    if requested > current {
        return Err(MvccError::FutureRevision);
    }
    let revision = if requested <= 0 { current } else { requested };
    if revision < compacted {
        return Err(MvccError::Compacted);
    }
    Ok(revision)
}

/// Serves a Range request with etcd's exact semantics: `count` ignores `limit` and
/// the revision filters, sorting happens before the limit, and `more` says whether
/// the limit cut anything.
pub fn range<T>(
    table: &T,
    group: GroupId,
    request: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse, MvccError>
where
    T: ReadableTable<KvKey<'static>, &'static [u8]>,
{
    let revision = resolve_revision(request.revision, current, compacted)?;
    let span = KeySpan::new(&request.key, &request.range_end);
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    let requested_order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let order = match (requested_order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (SortOrder::Ascend, SortTarget::Key) => SortOrder::None,
        (order, _) => order,
    };
    // Without a requested sort order or filters, etcd reads only the first
    // `limit + 1` keys (in key order) and sorts those, even when a sort target
    // other than KEY makes it sort them ascending.
    let keep = if request.limit > 0 && requested_order == SortOrder::None && !filtered {
        usize::try_from(request.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    } else {
        usize::MAX
    };
    let keep = if request.count_only { 0 } else { keep };

    let mut count: i64 = 0;
    let mut kvs = Vec::new();
    visit_live(
        table,
        group,
        &span,
        revision,
        |key, mod_revision, record| {
            count += 1;
            if kvs.len() < keep {
                kvs.push(key_value(key, mod_revision, &record));
            }
            ControlFlow::Continue(())
        },
    )?;

    if filtered {
        kvs.retain(|kv| passes_filters(request, kv));
    }
    if order != SortOrder::None {
        sort(&mut kvs, target, order);
    }
    let mut more = false;
    if request.limit > 0 && kvs.len() as i64 > request.limit {
        kvs.truncate(usize::try_from(request.limit).unwrap_or(usize::MAX));
        more = true;
    }
    if request.count_only {
        kvs.clear();
    }
    // Values go only now: a VALUE sort must see them even for keys_only.
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader {
            revision: current,
            ..Default::default()
        }),
        kvs,
        more,
        count,
    })
}

fn passes_filters(request: &RangeRequest, kv: &KeyValue) -> bool {
    (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
        && (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
        && (request.max_create_revision == 0 || kv.create_revision <= request.max_create_revision)
        && (request.min_create_revision == 0 || kv.create_revision >= request.min_create_revision)
}

fn sort(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    let compare = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| compare(b, a)),
        _ => kvs.sort_by(compare),
    }
}
