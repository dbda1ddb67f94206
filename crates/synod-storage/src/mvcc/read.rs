//! Reads of the MVCC store at a revision, shared by read-only transactions (client
//! reads) and the write transaction that applies commands (Txn ranges and compares).

use std::cmp::Ordering;
use std::ops::ControlFlow;
use std::sync::RwLock;

use redb::ReadableTable;
use synod_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use synod_proto::mvccpb::KeyValue;

use super::index::{KeyIndex, Version};
use super::record::{decode_version, KeyRecord};
use super::span::KeySpan;
use super::MvccError;
use crate::error::{StoreError, StoreResult};
use crate::limits::BULK_READ_VERSIONS;
use crate::sync;
use crate::tables::HistoryKey;
use crate::types::GroupId;

/// Calls `read` with the key and record of `version`, as `table` holds it.
pub fn with_version<T, R>(
    table: &T,
    group: GroupId,
    version: Version,
    read: impl FnOnce(&[u8], KeyRecord<'_>) -> R,
) -> StoreResult<R>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    let row = table.get(version.row(group))?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the key index names version {}.{}, which the history lacks",
            version.main, version.sub
        ))
    })?;
    let (key, record) = decode_version(row.value())?;
    Ok(read(key, record))
}

/// The key, value and header of `version`.
pub fn version_value<T>(table: &T, group: GroupId, version: Version) -> StoreResult<KeyValue>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    with_version(table, group, version, |key, record| {
        key_value(key, version.main, &record)
    })
}

/// The header of `version`, with the key and value left empty: what a write
/// needs to know of the version it replaces, without copying the value out.
pub fn version_header<T>(table: &T, group: GroupId, version: Version) -> StoreResult<KeyValue>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    with_version(table, group, version, |_, record| KeyValue {
        create_revision: record.create_revision,
        mod_revision: version.main,
        version: record.version,
        lease: record.lease,
        ..Default::default()
    })
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

/// The versions of the keys live at revision `at` within `span`, in key order:
/// all of them counted, the first `keep` returned. The index is locked only for
/// the walk; the records are read after.
fn live_versions(
    index: &RwLock<KeyIndex>,
    span: &KeySpan<'_>,
    at: i64,
    keep: usize,
) -> Result<(Vec<Version>, i64), MvccError> {
    let mut versions = Vec::new();
    let mut count: i64 = 0;
    sync::read(index).visit_live(span, at, |_, version| {
        count += 1;
        if versions.len() < keep {
            versions.push(version);
        }
        ControlFlow::Continue(())
    })?;
    Ok((versions, count))
}

/// Calls `visit` with every key live at revision `at` within `span`, in key order,
/// until it breaks.
pub fn visit_live<T, F>(
    table: &T,
    index: &RwLock<KeyIndex>,
    group: GroupId,
    span: &KeySpan<'_>,
    at: i64,
    mut visit: F,
) -> Result<(), MvccError>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
    F: FnMut(&[u8], i64, KeyRecord<'_>) -> ControlFlow<()>,
{
    let (versions, _) = live_versions(index, span, at, usize::MAX)?;
    for version in versions {
        let flow = with_version(table, group, version, |key, record| {
            visit(key, version.main, record)
        })?;
        if flow.is_break() {
            break;
        }
    }
    Ok(())
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

/// The key values of `versions`, read from `table`.
fn read_versions<T>(table: &T, group: GroupId, versions: &[Version]) -> StoreResult<Vec<KeyValue>>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    versions
        .iter()
        .map(|version| {
            with_version(table, group, *version, |key, record| {
                key_value(key, version.main, &record)
            })
        })
        .collect()
}

/// Serves a Range request with etcd's exact semantics: `count` ignores `limit` and
/// the revision filters, sorting happens before the limit, and `more` says whether
/// the limit cut anything. The records are read on the calling thread: the write
/// transaction's reads (Txn ranges, compares) use this.
pub fn range<T>(
    table: &T,
    index: &RwLock<KeyIndex>,
    group: GroupId,
    request: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse, MvccError>
where
    T: ReadableTable<HistoryKey, &'static [u8]>,
{
    let read = |versions: &[Version]| read_versions(table, group, versions);
    range_reading(index, request, current, compacted, read)
}

/// A client's Range: as [`range`], but a read of [`BULK_READ_VERSIONS`] records
/// or more runs at low CPU priority (see `synod_proto::low_priority`), so that a
/// full-keyspace read yields the cores to writes. Only the records are read
/// there: the walk of the key index, under its lock, stays at full priority, or
/// an apply waiting for that lock would wait on the slowest thread there is.
pub fn client_range<T>(
    table: &T,
    index: &RwLock<KeyIndex>,
    group: GroupId,
    request: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse, MvccError>
where
    T: ReadableTable<HistoryKey, &'static [u8]> + Sync,
{
    let read = |versions: &[Version]| {
        if versions.len() >= BULK_READ_VERSIONS {
            synod_proto::low_priority::at_low_priority(|| read_versions(table, group, versions))
        } else {
            read_versions(table, group, versions)
        }
    };
    range_reading(index, request, current, compacted, read)
}

fn range_reading(
    index: &RwLock<KeyIndex>,
    request: &RangeRequest,
    current: i64,
    compacted: i64,
    read: impl FnOnce(&[Version]) -> StoreResult<Vec<KeyValue>>,
) -> Result<RangeResponse, MvccError> {
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

    let (versions, count) = live_versions(index, &span, revision, keep)?;
    let mut kvs = read(&versions)?;

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
