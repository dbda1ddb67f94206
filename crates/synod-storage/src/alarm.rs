//! Cluster alarms (etcd's NOSPACE): replicated state, so every replica refuses the
//! same writes while an alarm is raised, and the space cost etcd's quota charges.

use redb::ReadableTable;
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::request_op::Request as TxnOp;
use synod_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType, PutRequest};
use synod_proto::synodpb::command::Op;

use crate::codec::{decode, encode};
use crate::error::StoreResult;
use crate::tables::{sm_meta, MetaTable};
use crate::types::GroupId;

/// Bytes etcd charges per key on top of its key and value (`kvOverhead`).
const KV_OVERHEAD_BYTES: u64 = 256;

/// Bytes etcd charges a lease grant against the quota (`leaseOverhead`).
const LEASE_OVERHEAD_BYTES: u64 = 64;

/// What `op` would add to the database, as etcd's backend quota counts it; zero for
/// requests that only read or delete, which the quota always lets through.
pub fn write_cost(op: &Op) -> u64 {
    match op {
        Op::Put(put) => put_cost(put),
        Op::Txn(txn) => {
            let branch = |ops: &[synod_proto::etcdserverpb::RequestOp]| -> u64 {
                ops.iter()
                    .map(|op| match &op.request {
                        Some(TxnOp::RequestPut(put)) => put_cost(put),
                        _ => 0,
                    })
                    .sum()
            };
            branch(&txn.success).max(branch(&txn.failure))
        }
        Op::LeaseGrant(_) => LEASE_OVERHEAD_BYTES,
        _ => 0,
    }
}

fn put_cost(put: &PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + put.key.len() as u64 + put.value.len() as u64
}

/// Whether the NOSPACE alarm caps `op`: puts, Txns that may put, and lease grants
/// are refused while it is raised (etcd's capped applier).
pub fn capped(op: &Op) -> bool {
    write_cost(op) > 0
}

/// The alarms raised in `group`, in (member, alarm) order, read from its metadata
/// table.
pub fn read(
    meta: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    group: GroupId,
) -> StoreResult<Vec<AlarmMember>> {
    let alarms = match meta.get((group, sm_meta::ALARMS))? {
        Some(value) => decode::<Vec<(u64, i32)>>(value.value())?,
        None => Vec::new(),
    };
    Ok(alarms
        .into_iter()
        .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
        .collect())
}

/// Whether NOSPACE is raised by any member.
pub fn no_space(alarms: &[AlarmMember]) -> bool {
    alarms
        .iter()
        .any(|alarm| alarm.alarm == AlarmType::Nospace as i32)
}

/// Raises or clears an alarm in `meta`, the metadata table, and answers as etcd
/// does: the alarm that changed, or nothing when it was already in that state.
/// Also returns the alarms raised after the change.
pub fn apply(
    meta: &mut MetaTable<'_>,
    group: GroupId,
    request: &AlarmRequest,
) -> StoreResult<(AlarmResponse, Vec<AlarmMember>)> {
    let mut alarms = read(meta, group)?;
    let member = AlarmMember {
        member_id: request.member_id,
        alarm: request.alarm,
    };
    let position = alarms.iter().position(|alarm| *alarm == member);
    let changed = match (AlarmAction::try_from(request.action), position) {
        (Ok(AlarmAction::Activate), None) if request.alarm != AlarmType::None as i32 => {
            alarms.push(member);
            alarms.sort_by_key(|alarm| (alarm.member_id, alarm.alarm));
            true
        }
        (Ok(AlarmAction::Deactivate), Some(position)) => {
            alarms.remove(position);
            true
        }
        _ => false,
    };
    if changed {
        save(meta, group, &alarms)?;
    }
    let response = AlarmResponse {
        header: None,
        alarms: if changed { vec![member] } else { Vec::new() },
    };
    Ok((response, alarms))
}

/// Replaces the alarms of `group` in `meta`, the metadata table.
pub fn save(meta: &mut MetaTable<'_>, group: GroupId, alarms: &[AlarmMember]) -> StoreResult<()> {
    let stored: Vec<(u64, i32)> = alarms
        .iter()
        .map(|alarm| (alarm.member_id, alarm.alarm))
        .collect();
    meta.insert((group, sm_meta::ALARMS), encode(&stored)?.as_slice())?;
    Ok(())
}
