//! Snapshot files: a group's whole MVCC state (every retained version, so history
//! reads and compaction behave the same after install) plus its member attributes.
//!
//! A file is a sequence of frames, each a little-endian `u32` length and a postcard
//! [`Frame`]. It starts with a header and ends with a trailer that counts the rows,
//! so a truncated file is detected instead of installed.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::database::Store;
use redb::{Durability, ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::error::{StoreError, StoreResult};
use crate::limits::SNAPSHOT_FRAME_BYTES_MAX;
use crate::mvcc::record::{encode_version, split_version};
use crate::partial_file::PartialFile;
use crate::tables::{read_counter, sm_meta, HISTORY, LEASES, LEASE_KEYS, MEMBERS, SM_META};
use crate::types::{GroupId, LogId, StoredMembership};
use synod_proto::etcdserverpb::AlarmMember;

/// Version of the snapshot file format written; version 2 (no alarms) is still read.
const FORMAT_VERSION: u32 = 3;

#[derive(Debug, Serialize, Deserialize)]
enum Frame<'a> {
    Header {
        format: u32,
        revision: i64,
        compacted: i64,
    },
    Version {
        key: &'a [u8],
        main: i64,
        sub: i64,
        record: &'a [u8],
    },
    Member {
        id: u64,
        attributes: &'a [u8],
    },
    Lease {
        id: i64,
        ttl: i64,
    },
    LeaseKey {
        id: i64,
        key: &'a [u8],
    },
    Trailer {
        rows: u64,
    },
    Alarm {
        member_id: u64,
        alarm: i32,
    },
}

/// Describes the snapshot file currently kept for a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// openraft's id of the snapshot; also the file's stem.
    pub id: String,
    /// The last log entry the snapshot covers.
    pub last_log_id: Option<LogId>,
    /// The membership in force at that entry.
    pub last_membership: StoredMembership,
}

/// Where a group's snapshot files live.
pub fn snapshot_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.snap"))
}

fn write_frame(out: &mut impl Write, frame: &Frame<'_>) -> StoreResult<()> {
    let bytes = encode(frame)?;
    let len = u32::try_from(bytes.len())
        .map_err(|_| StoreError::Corrupt("snapshot frame over 4 GiB".into()))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&bytes)?;
    Ok(())
}

fn read_frame_bytes(input: &mut impl Read, buffer: &mut Vec<u8>) -> StoreResult<()> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > SNAPSHOT_FRAME_BYTES_MAX {
        return Err(StoreError::Corrupt(format!(
            "snapshot frame of {len} bytes"
        )));
    }
    buffer.resize(len, 0);
    input.read_exact(buffer)?;
    Ok(())
}

/// Writes the applied state of `group`, as of one read transaction, to a new file
/// in `dir`, and makes it the group's current snapshot.
pub fn build(db: &Store, group: GroupId, dir: &Path) -> StoreResult<SnapshotRecord> {
    fs::create_dir_all(dir)?;
    let txn = db.begin_read()?;
    let meta = txn.open_table(SM_META)?;
    let last_log_id: Option<LogId> = match meta.get((group, sm_meta::LAST_APPLIED))? {
        Some(value) => decode(value.value())?,
        None => None,
    };
    let last_membership: StoredMembership = match meta.get((group, sm_meta::LAST_MEMBERSHIP))? {
        Some(value) => decode(value.value())?,
        None => StoredMembership::default(),
    };
    let revision = read_counter(&meta, group, sm_meta::REVISION)?;
    let compacted = read_counter(&meta, group, sm_meta::COMPACT_REVISION)?;
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let id = match &last_log_id {
        Some(log_id) => format!(
            "{}-{}-{}-{unique}",
            log_id.leader_id.term, log_id.index, group
        ),
        None => format!("0-0-{group}-{unique}"),
    };
    let path = snapshot_path(dir, &id);
    let partial = PartialFile::new(path.with_extension("partial"));
    {
        let mut out = BufWriter::new(File::create(partial.path())?);
        write_state(&txn, group, revision, compacted, &mut out)?;
        let file = out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
    }
    fs::rename(partial.path(), &path)?;
    partial.keep();
    sync_dir(dir)?;
    let record = SnapshotRecord {
        id,
        last_log_id,
        last_membership,
    };
    set_current(db, group, dir, &record)?;
    Ok(record)
}

/// Writes the frames of `group`'s state as `txn` sees it: header, every version,
/// member attributes, leases and their keys, alarms, and the trailer.
fn write_state(
    txn: &ReadTransaction,
    group: GroupId,
    revision: i64,
    compacted: i64,
    out: &mut impl Write,
) -> StoreResult<()> {
    let meta = txn.open_table(SM_META)?;
    write_frame(
        out,
        &Frame::Header {
            format: FORMAT_VERSION,
            revision,
            compacted,
        },
    )?;
    let mut rows = 0u64;
    let history = txn.open_table(HISTORY)?;
    for row in history.range((group, i64::MIN, i64::MIN)..=(group, i64::MAX, i64::MAX))? {
        let (revision, stored) = row?;
        let (_, main, sub) = revision.value();
        let (key, record) = split_version(stored.value())?;
        write_frame(
            out,
            &Frame::Version {
                key,
                main,
                sub,
                record,
            },
        )?;
        rows += 1;
    }
    let members = txn.open_table(MEMBERS)?;
    for row in members.range((group, 0)..=(group, u64::MAX))? {
        let (key, attributes) = row?;
        write_frame(
            out,
            &Frame::Member {
                id: key.value().1,
                attributes: attributes.value(),
            },
        )?;
        rows += 1;
    }
    let leases = txn.open_table(LEASES)?;
    for row in leases.range((group, i64::MIN)..=(group, i64::MAX))? {
        let (key, ttl) = row?;
        write_frame(
            out,
            &Frame::Lease {
                id: key.value().1,
                ttl: ttl.value(),
            },
        )?;
        rows += 1;
    }
    let lease_keys = txn.open_table(LEASE_KEYS)?;
    for row in lease_keys.range::<(u64, i64, &[u8])>(
        (group, i64::MIN, &[][..])..(group.saturating_add(1), i64::MIN, &[][..]),
    )? {
        let (key, ()) = row.map(|(key, value)| (key, value.value()))?;
        let (_, id, key) = key.value();
        write_frame(out, &Frame::LeaseKey { id, key })?;
        rows += 1;
    }
    for alarm in crate::alarm::read(&meta, group)? {
        write_frame(
            out,
            &Frame::Alarm {
                member_id: alarm.member_id,
                alarm: alarm.alarm,
            },
        )?;
        rows += 1;
    }
    write_frame(out, &Frame::Trailer { rows })?;
    Ok(())
}

/// Replaces the state of `group` with the snapshot in `source`, keeps a copy of the
/// file in `dir`, and makes it the group's current snapshot.
pub fn install(
    db: &Store,
    group: GroupId,
    dir: &Path,
    source: &mut File,
    record: &SnapshotRecord,
) -> StoreResult<()> {
    fs::create_dir_all(dir)?;
    let path = snapshot_path(dir, &record.id);
    let partial = PartialFile::new(path.with_extension("partial"));
    {
        use std::io::Seek;
        source.seek(std::io::SeekFrom::Start(0))?;
        let mut copy = File::create(partial.path())?;
        std::io::copy(source, &mut copy)?;
        copy.sync_all()?;
    }
    fs::rename(partial.path(), &path)?;
    partial.keep();
    sync_dir(dir)?;

    db.replace_group(group, || {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        wipe_group(&txn, group)?;
        load_frames(
            &txn,
            group,
            &mut BufReader::new(File::open(&path)?),
            Scope::Replica,
        )?;
        {
            let mut meta = txn.open_table(SM_META)?;
            meta.insert(
                (group, sm_meta::LAST_APPLIED),
                encode(&record.last_log_id)?.as_slice(),
            )?;
            meta.insert(
                (group, sm_meta::LAST_MEMBERSHIP),
                encode(&record.last_membership)?.as_slice(),
            )?;
            meta.insert((group, sm_meta::SNAPSHOT), encode(record)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    })?;
    remove_other_snapshots(dir, &record.id)?;
    Ok(())
}

/// What of a snapshot's content to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Everything: the node becomes a replica of the snapshot's cluster.
    Replica,
    /// The data only (versions, leases): the node seeds a new cluster, which has
    /// its own members and no alarms.
    Data,
}

/// What a restore loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The store's revision in the backup.
    pub revision: i64,
    /// Key versions loaded.
    pub versions: u64,
    /// Leases loaded.
    pub leases: u64,
}

/// Writes a consistent copy of `group`'s applied state to `out` (the frames a Raft
/// snapshot holds): the payload of a backup. Returns the revision it covers.
pub fn backup(db: &Store, group: GroupId, out: &mut impl Write) -> StoreResult<i64> {
    let txn = db.begin_read()?;
    let (revision, compacted) = {
        let meta = txn.open_table(SM_META)?;
        (
            read_counter(&meta, group, sm_meta::REVISION)?,
            read_counter(&meta, group, sm_meta::COMPACT_REVISION)?,
        )
    };
    write_state(&txn, group, revision, compacted, out)?;
    Ok(revision)
}

/// Seeds `group` of a new, empty database with the data of a backup made by
/// [`backup`]: every key version and lease, at the backup's revision. The old
/// cluster's members and alarms are left behind, and there is no Raft state, so
/// the node that opens the database starts a new cluster on this data.
pub fn restore(db: &Store, group: GroupId, input: &mut impl Read) -> StoreResult<Restored> {
    db.replace_group(group, || {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        if txn.open_table(HISTORY)?.first()?.is_some() {
            return Err(StoreError::Corrupt(
                "refusing to restore into a database that already holds data".into(),
            ));
        }
        let restored = load_frames(&txn, group, input, Scope::Data)?;
        txn.commit()?;
        Ok(restored)
    })
}

fn load_frames(
    txn: &WriteTransaction,
    group: GroupId,
    input: &mut impl Read,
    scope: Scope,
) -> StoreResult<Restored> {
    let mut buffer = Vec::new();
    read_frame_bytes(input, &mut buffer)?;
    let (revision, compacted) = match decode_frame(&buffer)? {
        Frame::Header {
            format: 2 | FORMAT_VERSION,
            revision,
            compacted,
        } => (revision, compacted),
        other => {
            return Err(StoreError::Corrupt(format!(
                "snapshot does not start with a version {FORMAT_VERSION} header: {other:?}"
            )))
        }
    };
    let mut history = txn.open_table(HISTORY)?;
    let mut row = Vec::new();
    let mut members = txn.open_table(MEMBERS)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut lease_keys = txn.open_table(LEASE_KEYS)?;
    let mut alarms = Vec::new();
    let mut rows = 0u64;
    let mut restored = Restored {
        revision,
        versions: 0,
        leases: 0,
    };
    loop {
        read_frame_bytes(input, &mut buffer)?;
        match decode_frame(&buffer)? {
            Frame::Version {
                key,
                main,
                sub,
                record,
            } => {
                encode_version(key, record, &mut row)?;
                history.insert((group, main, sub), row.as_slice())?;
                restored.versions += 1;
            }
            Frame::Member { id, attributes } => {
                if scope == Scope::Replica {
                    members.insert((group, id), attributes)?;
                }
            }
            Frame::Lease { id, ttl } => {
                leases.insert((group, id), ttl)?;
                restored.leases += 1;
            }
            Frame::LeaseKey { id, key } => {
                lease_keys.insert((group, id, key), ())?;
            }
            Frame::Alarm { member_id, alarm } if scope == Scope::Replica => {
                alarms.push(AlarmMember { member_id, alarm });
            }
            Frame::Trailer { rows: expected } if expected == rows => break,
            Frame::Trailer { rows: expected } => {
                return Err(StoreError::Corrupt(format!(
                    "snapshot trailer counts {expected} rows, file has {rows}"
                )))
            }
            Frame::Header { .. } => {
                return Err(StoreError::Corrupt("second snapshot header".into()))
            }
            Frame::Alarm { .. } => {}
        }
        rows += 1;
    }
    let mut meta = txn.open_table(SM_META)?;
    crate::alarm::save(&mut meta, group, &alarms)?;
    meta.insert(
        (group, sm_meta::REVISION),
        revision.to_be_bytes().as_slice(),
    )?;
    meta.insert(
        (group, sm_meta::COMPACT_REVISION),
        compacted.to_be_bytes().as_slice(),
    )?;
    Ok(restored)
}

fn decode_frame(bytes: &[u8]) -> StoreResult<Frame<'_>> {
    Ok(postcard::from_bytes(bytes)?)
}

fn wipe_group(txn: &WriteTransaction, group: GroupId) -> StoreResult<()> {
    txn.open_table(HISTORY)?.retain_in(
        (group, i64::MIN, i64::MIN)..=(group, i64::MAX, i64::MAX),
        |_, _| false,
    )?;
    txn.open_table(MEMBERS)?
        .retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
    txn.open_table(LEASES)?
        .retain_in((group, i64::MIN)..=(group, i64::MAX), |_, _| false)?;
    txn.open_table(LEASE_KEYS)?
        .retain_in::<(u64, i64, &[u8]), _>(
            (group, i64::MIN, &[][..])..(group.saturating_add(1), i64::MIN, &[][..]),
            |_, _| false,
        )?;
    Ok(())
}

/// Makes `record` the group's current snapshot, unless one covering more of the
/// log already is (a build that finished after a newer install or build): then
/// `record`'s own file goes instead.
pub(crate) fn set_current(
    db: &Store,
    group: GroupId,
    dir: &Path,
    record: &SnapshotRecord,
) -> StoreResult<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let superseded = {
        let mut meta = txn.open_table(SM_META)?;
        let current: Option<SnapshotRecord> = match meta.get((group, sm_meta::SNAPSHOT))? {
            Some(value) => Some(decode(value.value())?),
            None => None,
        };
        match current {
            Some(current) if current.last_log_id > record.last_log_id => true,
            _ => {
                meta.insert((group, sm_meta::SNAPSHOT), encode(record)?.as_slice())?;
                false
            }
        }
    };
    txn.commit()?;
    if superseded {
        fs::remove_file(snapshot_path(dir, &record.id))?;
        return Ok(());
    }
    remove_other_snapshots(dir, &record.id)
}

/// The group's current snapshot, if one was built or installed.
pub fn current(db: &Store, group: GroupId) -> StoreResult<Option<SnapshotRecord>> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(SM_META)?;
    match meta.get((group, sm_meta::SNAPSHOT))? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Ok(None),
    }
}

/// Removes the partial snapshot files a crash may have left in `dir`.
pub fn remove_partial_files(dir: &Path) -> StoreResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".partial") {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Removes every snapshot file but `keep`'s. Partial files are left alone: one may
/// be a build under way (those a crash left are removed at start). A reader that
/// opened a removed file still reads it whole; one that had not yet opened it
/// finds the newer snapshot (see `StateMachine::get_current_snapshot`).
fn remove_other_snapshots(dir: &Path, keep: &str) -> StoreResult<()> {
    let keep = format!("{keep}.snap");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name != keep && name.ends_with(".snap") {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
