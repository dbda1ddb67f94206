//! Model-based property tests of the MVCC store.
//!
//! Random sequences of Put, DeleteRange, Txn, Compact and Range run against the real
//! store (redb, through `MvccWriter` and `MvccReader`) and against [`Model`], a
//! deliberately naive restatement of etcd's semantics that keeps one full
//! `BTreeMap` snapshot per revision. Every response must match. After each sequence,
//! every revision from 0 (current) to current + 1 (future) is read back with Range
//! requests covering every option: spans, limit, sort order and target, keys_only,
//! count_only and the four revision filters.
//!
//! The model is the specification. It is written from etcd's documented behaviour
//! and its apply code (`server/etcdserver/txn/txn.go`), never from the store's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use redb::Durability;
use synod_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_proto::etcdserverpb::request_op::Request;
use synod_proto::etcdserverpb::response_op::Response;
use synod_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use synod_proto::mvccpb::KeyValue;
use synod_proto::synodpb::apply_error::Kind as ApplyErrorKind;
use synod_storage::mvcc::{KeyCreation, MvccError, MvccReader, MvccWriter};
use synod_storage::GroupId;
use synod_storage::Store as Database;

/// Keys chosen so that prefixes and ranges overlap: "a" is a prefix of "ab", and
/// ["ab", "c") holds "ab", "b" and "ba".
const KEYS: [&str; 6] = ["a", "ab", "b", "ba", "c", "d"];
/// Values, including the empty one: a VALUE compare against "" must still fail on a
/// missing key but hold on a key whose value is empty.
const VALUES: [&str; 4] = ["", "x", "y", "z"];
/// The group under test. Groups 0 and 2 hold unrelated keys that must never show.
const GROUP: GroupId = 1;
/// The lease every leased Put names; no lease exists, so such a Put is refused.
const MISSING_LEASE: i64 = 7;

// ---------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------

/// The keys live at one revision.
type Snapshot = BTreeMap<Vec<u8>, KeyValue>;

/// A refusal, in its replicated form; a storage failure fails the test instead.
type Refusal = ApplyErrorKind;

fn refusal(error: MvccError) -> Refusal {
    match error.apply_error_kind() {
        Some(kind) => kind,
        None => panic!("the store failed: {error}"),
    }
}

/// etcd's key-range convention: an empty `range_end` names the single key, `"\0"`
/// every key from `key` on, anything else the half-open range `[key, range_end)`.
fn in_span(key: &[u8], start: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

/// etcd's MVCC store, one full snapshot per revision. `snapshots[r]` is the state at
/// revision `r`; `snapshots[0]` is the empty store.
struct Model {
    snapshots: Vec<Snapshot>,
    compacted: i64,
}

/// The state a Txn builds while its ops run.
struct TxnWork {
    state: Snapshot,
    /// The revision the Txn's changes get.
    revision: i64,
    changed: bool,
}

impl Model {
    fn new() -> Self {
        Self {
            // An empty store is at revision 1, as etcd's: the first write is 2.
            snapshots: vec![Snapshot::new(), Snapshot::new()],
            compacted: 0,
        }
    }

    fn current(&self) -> i64 {
        self.snapshots.len() as i64 - 1
    }

    fn latest(&self) -> &Snapshot {
        self.snapshots.last().unwrap()
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.current(),
            ..Default::default()
        })
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Refusal> {
        if request.revision > self.current() {
            return Err(Refusal::FutureRevision);
        }
        let revision = if request.revision <= 0 {
            self.current()
        } else {
            request.revision
        };
        if revision < self.compacted {
            return Err(Refusal::Compacted);
        }
        let mut response = range_of(&self.snapshots[revision as usize], request);
        // The header names the store's current revision, not the one read.
        response.header = self.header();
        Ok(response)
    }

    fn put(&mut self, request: &PutRequest) -> Result<PutResponse, Refusal> {
        check_put(self.latest(), request)?;
        let mut next = self.latest().clone();
        let prev_kv = put_into(&mut next, self.current() + 1, request);
        self.snapshots.push(next);
        Ok(PutResponse {
            header: self.header(),
            prev_kv,
        })
    }

    fn delete_range(&mut self, request: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut next = self.latest().clone();
        let mut response = delete_from(&mut next, request);
        // Deleting nothing creates no revision.
        if response.deleted > 0 {
            self.snapshots.push(next);
        }
        response.header = self.header();
        response
    }

    fn txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, Refusal> {
        let base = self.latest().clone();
        self.check_txn(&base, request)?;
        let mut work = TxnWork {
            state: base.clone(),
            revision: self.current() + 1,
            changed: false,
        };
        let mut response = self.run_txn(&base, &mut work, request);
        // One revision for the whole Txn, and only if something changed.
        if work.changed {
            self.snapshots.push(work.state);
        }
        response.header = self.header();
        Ok(response)
    }

    fn compact(&mut self, request: &CompactionRequest) -> Result<CompactionResponse, Refusal> {
        if request.revision <= self.compacted {
            return Err(Refusal::Compacted);
        }
        if request.revision > self.current() {
            return Err(Refusal::FutureRevision);
        }
        self.compacted = request.revision;
        Ok(CompactionResponse {
            header: self.header(),
        })
    }

    /// etcd checks a Txn completely before running it, op by op in request order,
    /// against the store as it was when the Txn began; nested Txns take the branch
    /// their compares choose on that same state (etcd's `compareToPath`).
    fn check_txn(&self, base: &Snapshot, request: &TxnRequest) -> Result<(), Refusal> {
        let branch = if compares_hold(base, &request.compare) {
            &request.success
        } else {
            &request.failure
        };
        for op in branch {
            match &op.request {
                Some(Request::RequestRange(range)) => {
                    if range.revision > self.current() {
                        return Err(Refusal::FutureRevision);
                    }
                    if range.revision > 0 && range.revision < self.compacted {
                        return Err(Refusal::Compacted);
                    }
                }
                Some(Request::RequestPut(put)) => check_put(base, put)?,
                Some(Request::RequestTxn(txn)) => self.check_txn(base, txn)?,
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    /// Runs the chosen branch. Ops see the changes of the ops before them.
    ///
    /// Every compare — a nested Txn's included — is evaluated against `base`, the
    /// store as it was when the outermost Txn began: etcd computes the whole branch
    /// path (`compareToPath`) on one read view before it runs any op.
    fn run_txn(&self, base: &Snapshot, work: &mut TxnWork, request: &TxnRequest) -> TxnResponse {
        let succeeded = compares_hold(base, &request.compare);
        let branch = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let mut responses = Vec::new();
        for op in branch {
            let response = match &op.request {
                Some(Request::RequestRange(range)) => {
                    let snapshot = if range.revision == 0 {
                        &work.state
                    } else {
                        &self.snapshots[range.revision as usize]
                    };
                    Some(Response::ResponseRange(range_of(snapshot, range)))
                }
                Some(Request::RequestPut(put)) => {
                    let prev_kv = put_into(&mut work.state, work.revision, put);
                    work.changed = true;
                    Some(Response::ResponsePut(PutResponse {
                        header: None,
                        prev_kv,
                    }))
                }
                Some(Request::RequestDeleteRange(delete)) => {
                    let response = delete_from(&mut work.state, delete);
                    work.changed |= response.deleted > 0;
                    Some(Response::ResponseDeleteRange(response))
                }
                Some(Request::RequestTxn(txn)) => {
                    Some(Response::ResponseTxn(self.run_txn(base, work, txn)))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }
}

/// A Put naming a lease fails (no lease exists); one with `ignore_value` fails on a
/// missing key. The generator never sets both, so their order does not matter.
fn check_put(state: &Snapshot, request: &PutRequest) -> Result<(), Refusal> {
    if (request.ignore_value || request.ignore_lease) && !state.contains_key(&request.key) {
        return Err(Refusal::KeyNotFound);
    }
    if request.lease != 0 && !request.ignore_lease {
        return Err(Refusal::LeaseNotFound);
    }
    Ok(())
}

/// Writes a Put at `revision`; returns the previous value if the request asks.
fn put_into(state: &mut Snapshot, revision: i64, request: &PutRequest) -> Option<KeyValue> {
    let previous = state.get(&request.key).cloned();
    let value = match (&previous, request.ignore_value) {
        (Some(previous), true) => previous.value.clone(),
        _ => request.value.clone(),
    };
    let next = match &previous {
        // An update keeps the creation revision and counts one more version.
        Some(previous) => KeyValue {
            key: request.key.clone(),
            create_revision: previous.create_revision,
            mod_revision: revision,
            version: previous.version + 1,
            value,
            lease: request.lease,
        },
        // A new (or re-created) key starts over at version 1.
        None => KeyValue {
            key: request.key.clone(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            value,
            lease: request.lease,
        },
    };
    state.insert(request.key.clone(), next);
    previous.filter(|_| request.prev_kv)
}

fn delete_from(state: &mut Snapshot, request: &DeleteRangeRequest) -> DeleteRangeResponse {
    let doomed: Vec<KeyValue> = state
        .values()
        .filter(|kv| in_span(&kv.key, &request.key, &request.range_end))
        .cloned()
        .collect();
    for kv in &doomed {
        state.remove(&kv.key);
    }
    DeleteRangeResponse {
        header: None,
        deleted: doomed.len() as i64,
        prev_kvs: if request.prev_kv { doomed } else { Vec::new() },
    }
}

/// etcd's Range over one snapshot, without the header.
fn range_of(snapshot: &Snapshot, request: &RangeRequest) -> RangeResponse {
    let in_range: Vec<&KeyValue> = snapshot
        .values()
        .filter(|kv| in_span(&kv.key, &request.key, &request.range_end))
        .collect();
    // The count ignores the limit and the revision filters.
    let count = in_range.len() as i64;
    let mut kvs: Vec<KeyValue> = in_range
        .into_iter()
        .filter(|kv| {
            (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                && (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
                && (request.min_create_revision == 0
                    || kv.create_revision >= request.min_create_revision)
                && (request.max_create_revision == 0
                    || kv.create_revision <= request.max_create_revision)
        })
        .cloned()
        .collect();
    // etcd's quirk: with no requested order and no filters, only the first
    // `limit + 1` keys (in key order) are read, and only those get sorted.
    let filtered = request.min_mod_revision != 0
        || request.max_mod_revision != 0
        || request.min_create_revision != 0
        || request.max_create_revision != 0;
    if request.limit > 0 && request.sort_order == SortOrder::None as i32 && !filtered {
        kvs.truncate(request.limit as usize + 1);
    }
    // A target other than KEY with no order means ascending. Sorting is stable from
    // ascending key order, so ties stay in ascending key order either way.
    let target = SortTarget::try_from(request.sort_target).unwrap();
    let order = match SortOrder::try_from(request.sort_order).unwrap() {
        SortOrder::None if target != SortTarget::Key => SortOrder::Ascend,
        order => order,
    };
    if order != SortOrder::None {
        kvs.sort_by(|a, b| {
            let ordering = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    // The limit cuts after sorting and filtering.
    let mut more = false;
    if request.limit > 0 && kvs.len() as i64 > request.limit {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    // keys_only drops values only after sorting (etcd clears them while assembling
    // the response), so sorting by VALUE still orders by the real values.
    if request.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    // count_only fetches no key-values at all, so nothing can be cut either.
    if request.count_only {
        kvs.clear();
        more = false;
    }
    RangeResponse {
        header: None,
        kvs,
        more,
        count,
    }
}

fn compares_hold(state: &Snapshot, compares: &[Compare]) -> bool {
    compares.iter().all(|compare| compare_holds(state, compare))
}

/// A compare must hold for every key in its range. With no key there, it compares
/// against zeros — except VALUE, which then always fails.
fn compare_holds(state: &Snapshot, compare: &Compare) -> bool {
    let target = CompareTarget::try_from(compare.target).unwrap();
    let keys: Vec<&KeyValue> = state
        .values()
        .filter(|kv| in_span(&kv.key, &compare.key, &compare.range_end))
        .collect();
    if keys.is_empty() {
        return target != CompareTarget::Value && compare_one(compare, &KeyValue::default());
    }
    keys.into_iter().all(|kv| compare_one(compare, kv))
}

fn compare_one(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering: Ordering = match compare.target_union.as_ref().unwrap() {
        TargetUnion::Value(value) => kv.value.cmp(value),
        TargetUnion::Version(version) => kv.version.cmp(version),
        TargetUnion::CreateRevision(revision) => kv.create_revision.cmp(revision),
        TargetUnion::ModRevision(revision) => kv.mod_revision.cmp(revision),
        TargetUnion::Lease(lease) => kv.lease.cmp(lease),
    };
    match CompareResult::try_from(compare.result).unwrap() {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

// ---------------------------------------------------------------------------------
// The store under test.
// ---------------------------------------------------------------------------------

/// The real store, driven as the state machine drives it: a batch of commands
/// shares one redb write transaction and one `MvccWriter`, and refusals do not abort
/// the batch (the state machine commits them as outcomes).
struct Store {
    _dir: tempfile::TempDir,
    db: Arc<Database>,
    reader: MvccReader,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = synod_storage::open_database(
            &dir.path().join("db.redb"),
            synod_storage::DEFAULT_CACHE_BYTES,
        )
        .unwrap();
        let store = Self {
            reader: MvccReader::new(db.clone(), GROUP),
            _dir: dir,
            db,
        };
        // Neighbouring groups hold keys inside every span the test reads; none may
        // ever appear in the group under test.
        for group in [GROUP - 1, GROUP + 1] {
            store.batch(group, |writer| {
                for key in ["a", "b", "bb", "zz"] {
                    let request = PutRequest {
                        key: key.into(),
                        value: b"other group".to_vec(),
                        ..Default::default()
                    };
                    writer.put(&request).unwrap();
                }
            });
        }
        store
    }

    /// Runs `apply` with one writer of `group` in one write transaction, then
    /// commits it.
    fn batch<T>(&self, group: GroupId, apply: impl FnOnce(&mut MvccWriter<'_>) -> T) -> T {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(Durability::None).unwrap();
        let mut writer = MvccWriter::open(&self.db, &txn, group).unwrap();
        let result = apply(&mut writer);
        writer.save().unwrap();
        txn.commit().unwrap();
        result
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Refusal> {
        self.reader.range(request).map_err(refusal)
    }
}

/// Inner responses of a Txn carry headers whose revision etcd fills inconsistently
/// (a nested TxnResponse's is left zero); only the payloads are compared.
fn strip_headers(responses: &mut [ResponseOp]) {
    for op in responses {
        match &mut op.response {
            Some(Response::ResponseRange(range)) => range.header = None,
            Some(Response::ResponsePut(put)) => put.header = None,
            Some(Response::ResponseDeleteRange(delete)) => delete.header = None,
            Some(Response::ResponseTxn(txn)) => {
                txn.header = None;
                strip_headers(&mut txn.responses);
            }
            None => {}
        }
    }
}

// ---------------------------------------------------------------------------------
// Generated commands. Revisions are drawn as hints and resolved against the model's
// current revision when the step runs, so they land near the interesting values.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum SpanSpec {
    Single(&'static str),
    Prefix(&'static str),
    /// `[start, end)`; may be empty or reversed.
    Range(&'static str, &'static str),
    FromKey(&'static str),
    All,
}

impl SpanSpec {
    fn bytes(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            SpanSpec::Single(key) => (key.as_bytes().to_vec(), Vec::new()),
            SpanSpec::Prefix(prefix) => {
                let mut end = prefix.as_bytes().to_vec();
                *end.last_mut().unwrap() += 1;
                (prefix.as_bytes().to_vec(), end)
            }
            SpanSpec::Range(start, end) => (start.as_bytes().to_vec(), end.as_bytes().to_vec()),
            SpanSpec::FromKey(key) => (key.as_bytes().to_vec(), vec![0]),
            SpanSpec::All => (vec![0], vec![0]),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum PutFlavour {
    Plain,
    /// `ignore_value`: keep the current value; refused on a missing key.
    IgnoreValue,
    /// Names a lease that does not exist; always refused.
    Leased,
}

#[derive(Debug, Clone)]
struct PutSpec {
    key: &'static str,
    value: &'static str,
    prev_kv: bool,
    flavour: PutFlavour,
}

impl PutSpec {
    fn request(&self) -> PutRequest {
        let mut request = PutRequest {
            key: self.key.into(),
            value: self.value.into(),
            prev_kv: self.prev_kv,
            ..Default::default()
        };
        match self.flavour {
            PutFlavour::Plain => {}
            PutFlavour::IgnoreValue => {
                // etcd's API refuses a value together with ignore_value.
                request.value.clear();
                request.ignore_value = true;
            }
            PutFlavour::Leased => request.lease = MISSING_LEASE,
        }
        request
    }
}

#[derive(Debug, Clone)]
struct DeleteSpec {
    span: SpanSpec,
    prev_kv: bool,
}

impl DeleteSpec {
    fn request(&self) -> DeleteRangeRequest {
        let (key, range_end) = self.span.bytes();
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        }
    }
}

#[derive(Debug, Clone)]
struct RangeSpec {
    span: SpanSpec,
    revision: u8,
    limit: i64,
    sort_order: i32,
    sort_target: i32,
    keys_only: bool,
    count_only: bool,
    /// min mod, max mod, min create, max create.
    filters: [Option<u8>; 4],
}

impl RangeSpec {
    fn request(&self, current: i64) -> RangeRequest {
        let (key, range_end) = self.span.bytes();
        // A quarter of reads take the current revision; the rest name one of
        // 1..=current + 1, the last being a future revision.
        let revision = if self.revision.is_multiple_of(4) {
            0
        } else {
            1 + i64::from(self.revision) % (current + 1)
        };
        let bound = |filter: Option<u8>| filter.map_or(0, |hint| i64::from(hint) % (current + 2));
        RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision,
            sort_order: self.sort_order,
            sort_target: self.sort_target,
            serializable: self.revision.is_multiple_of(2),
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: bound(self.filters[0]),
            max_mod_revision: bound(self.filters[1]),
            min_create_revision: bound(self.filters[2]),
            max_create_revision: bound(self.filters[3]),
        }
    }
}

#[derive(Debug, Clone)]
struct CompareSpec {
    span: SpanSpec,
    target: CompareTarget,
    result: i32,
    operand: u8,
    value: &'static str,
}

impl CompareSpec {
    fn compare(&self, current: i64) -> Compare {
        let (key, range_end) = self.span.bytes();
        let revision = i64::from(self.operand) % (current + 2);
        let target_union = match self.target {
            CompareTarget::Version => TargetUnion::Version(i64::from(self.operand % 4)),
            CompareTarget::Create => TargetUnion::CreateRevision(revision),
            CompareTarget::Mod => TargetUnion::ModRevision(revision),
            CompareTarget::Value => TargetUnion::Value(self.value.into()),
            CompareTarget::Lease => TargetUnion::Lease(i64::from(self.operand % 2)),
        };
        Compare {
            result: self.result,
            target: self.target as i32,
            key,
            target_union: Some(target_union),
            range_end,
        }
    }
}

#[derive(Debug, Clone)]
enum TxnOpSpec {
    Range(RangeSpec),
    Put(PutSpec),
    Delete(DeleteSpec),
    Txn(Box<TxnSpec>),
}

#[derive(Debug, Clone)]
struct TxnSpec {
    compares: Vec<CompareSpec>,
    success: Vec<TxnOpSpec>,
    failure: Vec<TxnOpSpec>,
}

/// The keys a Txn branch writes. etcd's API refuses a Txn that writes one key twice
/// or puts a key that a delete in the same branch covers (overlapping deletes are
/// allowed), so such ops are dropped before they reach either side. Nested
/// branches share their parent's set, which is stricter than etcd needs.
#[derive(Default)]
struct WriteSet {
    puts: Vec<Vec<u8>>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TxnSpec {
    fn request(&self, current: i64) -> TxnRequest {
        TxnRequest {
            compare: self.compares.iter().map(|c| c.compare(current)).collect(),
            success: lower_ops(&self.success, current, &mut WriteSet::default()),
            failure: lower_ops(&self.failure, current, &mut WriteSet::default()),
        }
    }

    fn nested_request(&self, current: i64, writes: &mut WriteSet) -> TxnRequest {
        TxnRequest {
            compare: self.compares.iter().map(|c| c.compare(current)).collect(),
            success: lower_ops(&self.success, current, writes),
            failure: lower_ops(&self.failure, current, writes),
        }
    }
}

fn lower_ops(specs: &[TxnOpSpec], current: i64, writes: &mut WriteSet) -> Vec<RequestOp> {
    let mut ops = Vec::new();
    for spec in specs {
        let request = match spec {
            TxnOpSpec::Range(range) => Request::RequestRange(range.request(current)),
            TxnOpSpec::Put(put) => {
                let request = put.request();
                let clashes = writes.puts.contains(&request.key)
                    || writes
                        .deletes
                        .iter()
                        .any(|(start, end)| in_span(&request.key, start, end));
                if clashes {
                    continue;
                }
                writes.puts.push(request.key.clone());
                Request::RequestPut(request)
            }
            TxnOpSpec::Delete(delete) => {
                let request = delete.request();
                if writes
                    .puts
                    .iter()
                    .any(|key| in_span(key, &request.key, &request.range_end))
                {
                    continue;
                }
                writes
                    .deletes
                    .push((request.key.clone(), request.range_end.clone()));
                Request::RequestDeleteRange(request)
            }
            TxnOpSpec::Txn(txn) => Request::RequestTxn(txn.nested_request(current, writes)),
        };
        ops.push(RequestOp {
            request: Some(request),
        });
    }
    ops
}

#[derive(Debug, Clone)]
enum CommandSpec {
    Put(PutSpec),
    Delete(DeleteSpec),
    Txn(TxnSpec),
    /// A hint resolved to a revision in 0..=current + 1.
    Compact(u8),
    Range(RangeSpec),
    /// Rebuilds the key index from the database, as a restart does.
    Restart,
}

#[derive(Debug, Clone)]
struct Step {
    command: CommandSpec,
    /// Whether the redb write transaction commits after this step.
    commit: bool,
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&KEYS[..])
}

fn value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&VALUES[..])
}

fn span() -> impl Strategy<Value = SpanSpec> {
    prop_oneof![
        3 => key().prop_map(SpanSpec::Single),
        2 => key().prop_map(SpanSpec::Prefix),
        2 => (key(), key()).prop_map(|(start, end)| SpanSpec::Range(start, end)),
        1 => key().prop_map(SpanSpec::FromKey),
        1 => Just(SpanSpec::All),
    ]
}

fn put_spec() -> impl Strategy<Value = PutSpec> {
    let flavour = prop_oneof![
        16 => Just(PutFlavour::Plain),
        3 => Just(PutFlavour::IgnoreValue),
        1 => Just(PutFlavour::Leased),
    ];
    (key(), value(), any::<bool>(), flavour).prop_map(|(key, value, prev_kv, flavour)| PutSpec {
        key,
        value,
        prev_kv,
        flavour,
    })
}

fn delete_spec() -> impl Strategy<Value = DeleteSpec> {
    (span(), any::<bool>()).prop_map(|(span, prev_kv)| DeleteSpec { span, prev_kv })
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    let filter = || proptest::option::weighted(0.15, any::<u8>());
    (
        span(),
        any::<u8>(),
        0..4i64,
        0..3i32,
        0..5i32,
        any::<bool>(),
        proptest::bool::weighted(0.2),
        [filter(), filter(), filter(), filter()],
    )
        .prop_map(
            |(span, revision, limit, sort_order, sort_target, keys_only, count_only, filters)| {
                RangeSpec {
                    span,
                    revision,
                    limit,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    filters,
                }
            },
        )
}

fn compare_spec() -> impl Strategy<Value = CompareSpec> {
    let span = prop_oneof![4 => key().prop_map(SpanSpec::Single), 1 => span()];
    let target = prop::sample::select(vec![
        CompareTarget::Version,
        CompareTarget::Create,
        CompareTarget::Mod,
        CompareTarget::Value,
        CompareTarget::Lease,
    ]);
    (span, target, 0..4i32, any::<u8>(), value()).prop_map(
        |(span, target, result, operand, value)| CompareSpec {
            span,
            target,
            result,
            operand,
            value,
        },
    )
}

fn txn_op(nested: bool) -> BoxedStrategy<TxnOpSpec> {
    let plain = prop_oneof![
        2 => range_spec().prop_map(TxnOpSpec::Range),
        3 => put_spec().prop_map(TxnOpSpec::Put),
        2 => delete_spec().prop_map(TxnOpSpec::Delete),
    ];
    if nested {
        prop_oneof![
            4 => plain,
            1 => txn_spec(false).prop_map(|txn| TxnOpSpec::Txn(Box::new(txn))),
        ]
        .boxed()
    } else {
        plain.boxed()
    }
}

/// A Txn; with `nested`, its branches may hold one more level of Txn.
fn txn_spec(nested: bool) -> BoxedStrategy<TxnSpec> {
    (
        prop::collection::vec(compare_spec(), 0..=2),
        prop::collection::vec(txn_op(nested), 0..=3),
        prop::collection::vec(txn_op(nested), 0..=3),
    )
        .prop_map(|(compares, success, failure)| TxnSpec {
            compares,
            success,
            failure,
        })
        .boxed()
}

fn step() -> impl Strategy<Value = Step> {
    let command = prop_oneof![
        6 => put_spec().prop_map(CommandSpec::Put),
        2 => delete_spec().prop_map(CommandSpec::Delete),
        4 => txn_spec(true).prop_map(CommandSpec::Txn),
        1 => any::<u8>().prop_map(CommandSpec::Compact),
        1 => range_spec().prop_map(CommandSpec::Range),
        1 => Just(CommandSpec::Restart),
    ];
    (command, proptest::bool::weighted(0.7)).prop_map(|(command, commit)| Step { command, commit })
}

// ---------------------------------------------------------------------------------
// Running and checking.
// ---------------------------------------------------------------------------------

/// Applies one write command to the store's writer and to the model.
fn apply_step(
    writer: &mut MvccWriter<'_>,
    model: &mut Model,
    index: usize,
    command: &CommandSpec,
) -> Result<(), TestCaseError> {
    let current = model.current();
    match command {
        CommandSpec::Put(spec) => {
            let request = spec.request();
            let got = writer.put(&request).map_err(refusal);
            let want = model.put(&request);
            prop_assert_eq!(got, want, "step {}: {:?}", index, request);
        }
        CommandSpec::Delete(spec) => {
            let request = spec.request();
            let got = writer.delete_range(&request).map_err(refusal);
            let want = model.delete_range(&request);
            prop_assert_eq!(got, Ok(want), "step {}: {:?}", index, request);
        }
        CommandSpec::Txn(spec) => {
            let request = spec.request(current);
            let got = writer.txn(&request).map_err(refusal).map(|mut response| {
                strip_headers(&mut response.responses);
                response
            });
            let want = model.txn(&request);
            prop_assert_eq!(got, want, "step {}: {:?}", index, request);
        }
        CommandSpec::Compact(hint) => {
            let request = CompactionRequest {
                revision: i64::from(*hint) % (current + 2),
                physical: false,
            };
            let got = writer.compact(&request).map_err(refusal);
            let want = model.compact(&request);
            prop_assert_eq!(got, want, "step {}: {:?}", index, request);
        }
        CommandSpec::Range(_) | CommandSpec::Restart => {
            unreachable!("reads and restarts run between batches")
        }
    }
    prop_assert_eq!(
        (writer.revision(), writer.compacted()),
        (model.current(), model.compacted),
        "writer revisions after step {}",
        index
    );
    Ok(())
}

/// After a commit, the reader sees the model's revisions and its current keys.
fn check_committed(store: &Store, model: &Model, index: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        store.reader.revisions().unwrap(),
        (model.current(), model.compacted),
        "revisions after step {}",
        index
    );
    let everything = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    prop_assert_eq!(
        store.range(&everything),
        model.range(&everything),
        "every key after step {}",
        index
    );
    Ok(())
}

/// Spans read back at every revision: each key, a missing key, prefixes, ranges
/// (including an empty and a reversed one), from-key and everything.
const CHECK_SPANS: [(&[u8], &[u8]); 14] = [
    (b"a", b""),
    (b"ab", b""),
    (b"b", b""),
    (b"ba", b""),
    (b"c", b""),
    (b"d", b""),
    (b"aa", b""),
    (b"a", b"b"),
    (b"b", b"c"),
    (b"ab", b"c"),
    (b"a", b"a"),
    (b"c", b"a"),
    (b"b", b"\0"),
    (b"\0", b"\0"),
];

const SORT_ORDERS: [SortOrder; 3] = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
const SORT_TARGETS: [SortTarget; 5] = [
    SortTarget::Key,
    SortTarget::Version,
    SortTarget::Create,
    SortTarget::Mod,
    SortTarget::Value,
];
const LIMITS: [i64; 4] = [0, 1, 2, 4];
/// Which revision filters a request sets: none, each alone, or all four.
const FILTER_SETS: usize = 6;
/// Every combination of the Range options, per span and revision.
const COMBINATIONS: usize =
    SORT_ORDERS.len() * SORT_TARGETS.len() * LIMITS.len() * 2 * 2 * FILTER_SETS;
/// Each (span, revision) checks one combination in `STRIDE`, shifted so that
/// neighbouring spans and revisions check different ones; across the revisions of
/// one case and across cases every combination is exercised.
const STRIDE: usize = 36;

/// Builds option combination `combination` for a read of `span` at `revision`.
fn range_combination(
    span: (&[u8], &[u8]),
    revision: i64,
    current: i64,
    combination: usize,
) -> RangeRequest {
    let mut rest = combination;
    let mut pick = |n: usize| {
        let chosen = rest % n;
        rest /= n;
        chosen
    };
    let sort_order = SORT_ORDERS[pick(SORT_ORDERS.len())];
    let sort_target = SORT_TARGETS[pick(SORT_TARGETS.len())];
    let limit = LIMITS[pick(LIMITS.len())];
    let keys_only = pick(2) == 1;
    let count_only = pick(2) == 1;
    let filters = pick(FILTER_SETS);
    // Bounds in the middle of the history read, so they cut something.
    let read_at = if revision == 0 { current } else { revision };
    let low = (read_at / 3).max(1);
    let high = (read_at * 2 / 3).max(1);
    let mut request = RangeRequest {
        key: span.0.to_vec(),
        range_end: span.1.to_vec(),
        limit,
        revision,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        keys_only,
        count_only,
        ..Default::default()
    };
    match filters {
        0 => {}
        1 => request.min_mod_revision = high,
        2 => request.max_mod_revision = high,
        3 => request.min_create_revision = low,
        4 => request.max_create_revision = high,
        _ => {
            request.min_mod_revision = low;
            request.max_mod_revision = read_at;
            request.min_create_revision = 1;
            request.max_create_revision = high;
        }
    }
    request
}

/// Reads every revision, 0 (current) through current + 1 (future), with the
/// option combinations, and compares with the model. Revisions below the compacted
/// one must all answer Compacted.
fn check_every_revision(store: &Store, model: &Model, salt: usize) -> Result<(), TestCaseError> {
    let current = model.current();
    for revision in 0..=current + 1 {
        let compacted_away = revision != 0 && revision < model.compacted;
        for (span_index, span) in CHECK_SPANS.into_iter().enumerate() {
            let shift = (span_index * 5 + revision as usize * 7 + salt) % STRIDE;
            let combinations = (shift..COMBINATIONS).step_by(STRIDE);
            // Every read of a compacted revision fails alike; a few suffice.
            let combinations = combinations.take(if compacted_away { 2 } else { usize::MAX });
            for combination in combinations {
                let request = range_combination(span, revision, current, combination);
                prop_assert_eq!(
                    store.range(&request),
                    model.range(&request),
                    "final read: {:?} (current {}, compacted {})",
                    request,
                    current,
                    model.compacted
                );
            }
        }
        if revision >= 1 && revision <= current && !compacted_away {
            check_key_creation(store, model, revision)?;
        }
    }
    Ok(())
}

/// What the key index alone says of each key (and of a missing one) at
/// `revision`, where it says anything, is what a read there finds.
fn check_key_creation(store: &Store, model: &Model, revision: i64) -> Result<(), TestCaseError> {
    for key in KEYS.iter().map(|key| key.as_bytes()).chain([&b"aa"[..]]) {
        let request = RangeRequest {
            key: key.to_vec(),
            revision,
            ..Default::default()
        };
        let read = model
            .range(&request)
            .map(|response| response.kvs.first().map(|kv| kv.create_revision));
        let indexed = match store.reader.key_creation(key, revision).unwrap() {
            KeyCreation::Unknown => continue,
            KeyCreation::Absent => None,
            KeyCreation::CreatedAt(created) => Some(created),
        };
        prop_assert_eq!(read, Ok(indexed), "key index on {:?} at {}", key, revision);
    }
    Ok(())
}

/// Runs `steps` in batches: each batch ends at a step that commits, and a Range
/// step reads through the reader between batches.
fn run_sequence(steps: &[Step]) -> Result<(), TestCaseError> {
    let store = Store::new();
    let mut model = Model::new();
    let mut next = 0;
    while next < steps.len() {
        if let CommandSpec::Range(spec) = &steps[next].command {
            let request = spec.request(model.current());
            prop_assert_eq!(
                store.range(&request),
                model.range(&request),
                "step {}: {:?}",
                next,
                request
            );
            next += 1;
            continue;
        }
        if let CommandSpec::Restart = &steps[next].command {
            store.db.reload_key_index(GROUP).unwrap();
            next += 1;
            continue;
        }
        store.batch(GROUP, |writer| {
            while let Some(step) = steps.get(next) {
                if matches!(step.command, CommandSpec::Range(_) | CommandSpec::Restart) {
                    break;
                }
                apply_step(writer, &mut model, next, &step.command)?;
                next += 1;
                if step.commit {
                    break;
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
        check_committed(&store, &model, next)?;
    }
    check_every_revision(&store, &model, steps.len() * 11)?;
    // A key index rebuilt from the database, as a restart builds it, answers alike.
    store.db.reload_key_index(GROUP).unwrap();
    check_every_revision(&store, &model, steps.len() * 13)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Failures print their minimal sequence; nothing is written beside the test.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec(step(), 1..=40)) {
        run_sequence(&steps)?;
    }
}

// ---------------------------------------------------------------------------------
// Minimal sequences for the discrepancies the property test found, kept so each
// names its cause directly. They go through the same model and harness.
// ---------------------------------------------------------------------------------

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

/// A Txn that puts "b", then runs a nested Txn guarded by "b is missing", with
/// `failure` as the nested failure branch.
fn put_then_nested_txn(failure: RequestOp) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: vec![
            put_op("b", "x"),
            RequestOp {
                request: Some(Request::RequestTxn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Version as i32,
                        key: b"b".to_vec(),
                        target_union: Some(TargetUnion::Version(0)),
                        range_end: Vec::new(),
                    }],
                    success: vec![put_op("c", "success")],
                    failure: vec![failure],
                })),
            },
        ],
        failure: Vec::new(),
    }
}

fn everything() -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    }
}

/// Regression (keys_only + VALUE sort): etcd sorts first and clears values while
/// assembling the response, so keys_only does not change the order.
#[test]
fn keys_only_still_sorts_by_value() {
    let store = Store::new();
    let mut model = Model::new();
    store.batch(GROUP, |writer| {
        for (key, value) in [("a", "y"), ("b", "x")] {
            let request = PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            };
            assert_eq!(writer.put(&request).map_err(refusal), model.put(&request));
        }
    });
    let request = RangeRequest {
        sort_target: SortTarget::Value as i32,
        keys_only: true,
        ..everything()
    };
    // etcd answers "b" (value "x") before "a" (value "y").
    assert_eq!(store.range(&request), model.range(&request));
}

/// Regression (nested compares): etcd decides the branch of every Txn, nested ones
/// included, on the store as it was when the outermost Txn began
/// (`compareToPath`), before any op runs. "b" is missing then, so the nested
/// success branch must run, not the failure branch that sees the Put of "b".
#[test]
fn nested_compares_see_the_store_before_the_txn() {
    let store = Store::new();
    let mut model = Model::new();
    let request = put_then_nested_txn(put_op("d", "failure"));
    let got = store.batch(GROUP, |writer| writer.txn(&request).map_err(refusal));
    let got = got.map(|mut response| {
        strip_headers(&mut response.responses);
        response
    });
    assert_eq!(got, model.txn(&request));
}

/// Regression (nested compares), the worst consequence: a store that checked one
/// branch and ran the other met a refusal mid-run (an `ignore_value` Put on a
/// missing key), and the Put of "b" made before it stayed behind, committed with
/// the next command of the batch. A refused Txn must leave no trace.
#[test]
fn refused_txn_leaves_no_trace() {
    let store = Store::new();
    let mut model = Model::new();
    let request = put_then_nested_txn(RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b"d".to_vec(),
            ignore_value: true,
            ..Default::default()
        })),
    });
    let next = PutRequest {
        key: b"e".to_vec(),
        value: b"next".to_vec(),
        ..Default::default()
    };
    let (got, got_next) = store.batch(GROUP, |writer| {
        let got = writer.txn(&request).map_err(refusal);
        (got, writer.put(&next).map_err(refusal))
    });
    let keys = store.range(&everything()).unwrap();
    if got.is_err() {
        let keys: Vec<&[u8]> = keys.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [b"e"], "the refused Txn left a write behind");
    }
    // etcd runs the nested success branch: "b" and "c" at revision 1, "e" at 2.
    let want = model.txn(&request).map(|response| response.succeeded);
    assert_eq!(got.map(|response| response.succeeded), want);
    assert_eq!(got_next, model.put(&next));
    assert_eq!(Ok(keys), model.range(&everything()));
}
