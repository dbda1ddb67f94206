//! KV operations for the recipes built on the store (Lock, Election), as etcd builds
//! them with its client library: transactions, reads, and waiting for keys to go.
//!
//! Waiting is done against this member's applied state, woken by each applied
//! revision; a waiter looks at one key only (its predecessor), so a release lets
//! one successor through rather than a herd.

use synod_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use synod_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use synod_proto::mvccpb::event::EventType;
use synod_proto::mvccpb::KeyValue;
use synod_proto::prefix_end;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::command_result::Result as Outcome;

use super::commit::{commit, unexpected};
use super::error::ApiError;
use super::header::stamp;
use super::kv::read_range;
use crate::history_cursor::HistoryCursor;
use crate::node::Node;
use crate::outcome::NodeError;
use synod_storage::mvcc::KeyCreation;

/// Commits a transaction built by a recipe.
pub async fn txn(node: &Node, request: TxnRequest) -> Result<TxnResponse, ApiError> {
    match commit(node, Op::Txn(request)).await? {
        Outcome::Txn(response) => Ok(stamp(node, response)),
        other => Err(unexpected(&other)),
    }
}

/// Deletes one key.
pub async fn delete(node: &Node, key: Vec<u8>) -> Result<DeleteRangeResponse, ApiError> {
    let request = DeleteRangeRequest {
        key,
        ..Default::default()
    };
    match commit(node, Op::DeleteRange(request)).await? {
        Outcome::DeleteRange(response) => Ok(stamp(node, response)),
        other => Err(unexpected(&other)),
    }
}

/// Reads one key, linearizably.
pub async fn get(node: &Node, key: &[u8]) -> Result<RangeResponse, ApiError> {
    read_range(
        node,
        RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        },
    )
    .await
}

/// The oldest key under `prefix` (lowest create revision): a lock's holder or an
/// election's leader.
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    }
}

/// Waits until every key under `prefix` created at or before `max_create_revision`
/// is gone: the caller's turn in a queue ordered by create revision.
pub async fn wait_deletes(
    node: &Node,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<(), ApiError> {
    loop {
        let newest_before = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            max_create_revision,
            limit: 1,
            ..Default::default()
        };
        let response = read_range(node, newest_before).await?;
        let Some(predecessor) = response.kvs.into_iter().next() else {
            return Ok(());
        };
        wait_key_deleted(node, &predecessor.key, predecessor.create_revision).await?;
    }
}

/// Waits until `key`, as it existed at `revision`, is deleted (it is absent, or was
/// re-created with another create revision).
pub async fn wait_key_deleted(
    node: &Node,
    key: &[u8],
    create_revision: i64,
) -> Result<(), ApiError> {
    let mut applied = node.applied.clone();
    loop {
        let revision = applied.borrow_and_update().revision;
        let creation = node
            .reader
            .key_creation(key, revision)
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        let now = match creation {
            KeyCreation::Absent => None,
            KeyCreation::CreatedAt(created) => Some(created),
            KeyCreation::Unknown => read_range(
                node,
                RangeRequest {
                    key: key.to_vec(),
                    serializable: true,
                    ..Default::default()
                },
            )
            .await?
            .kvs
            .first()
            .map(|kv| kv.create_revision),
        };
        if now != Some(create_revision) {
            return Ok(());
        }
        if applied.changed().await.is_err() {
            return Err(NodeError::Stopped.into());
        }
    }
}

/// Follows the changes after `revision` until a key under `prefix` is put, and
/// returns that key.
pub async fn wait_first_put(
    node: &Node,
    prefix: &[u8],
    revision: i64,
) -> Result<KeyValue, ApiError> {
    let end = prefix_end(prefix);
    let mut cursor = HistoryCursor::at(revision + 1, false);
    let mut applied = node.applied.clone();
    loop {
        for change in cursor.next(&node.reader, &mut applied).await? {
            let Some(kv) = change.event.kv else {
                continue;
            };
            if change.event.r#type == EventType::Put as i32
                && kv.key.as_slice() >= prefix
                && kv.key < end
            {
                return Ok(kv);
            }
        }
    }
}
