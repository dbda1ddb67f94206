//! Snapshot files: a group's whole MVCC state (every retained version, so history
//! reads and compaction behave the same after install) plus its member attributes.
//!
//! A file is a sequence of frames, each a little-endian `u32` length and a postcard
//! [`Frame`]. It starts with a header and ends with a trailer that counts the rows,
//! so a truncated file is detected instead of installed.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::error::{StoreError, StoreResult};
use crate::mvcc::write::read_counter;
use crate::tables::{sm_meta, KV, LEASES, LEASE_KEYS, MEMBERS, REVISIONS, SM_META};
use crate::types::{GroupId, LogId, StoredMembership};

/// Version of the snapshot file format.
const FORMAT_VERSION: u32 = 2;

/// Largest frame a reader accepts; bounds memory when reading a damaged file.
const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

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
    if len > FRAME_BYTES_MAX {
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
pub fn build(db: &Database, group: GroupId, dir: &Path) -> StoreResult<SnapshotRecord> {
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
    let partial = path.with_extension("partial");
    {
        let mut out = BufWriter::new(File::create(&partial)?);
        write_frame(
            &mut out,
            &Frame::Header {
                format: FORMAT_VERSION,
                revision,
                compacted,
            },
        )?;
        let mut rows = 0u64;
        let kv = txn.open_table(KV)?;
        for row in kv.range::<(u64, &[u8], i64, i64)>(
            (group, &[][..], 0, 0)..(group.saturating_add(1), &[][..], 0, 0),
        )? {
            let (key, record) = row?;
            let (_, key, main, sub) = key.value();
            write_frame(
                &mut out,
                &Frame::Version {
                    key,
                    main,
                    sub,
                    record: record.value(),
                },
            )?;
            rows += 1;
        }
        let members = txn.open_table(MEMBERS)?;
        for row in members.range((group, 0)..=(group, u64::MAX))? {
            let (key, attributes) = row?;
            write_frame(
                &mut out,
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
                &mut out,
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
            write_frame(&mut out, &Frame::LeaseKey { id, key })?;
            rows += 1;
        }
        write_frame(&mut out, &Frame::Trailer { rows })?;
        let file = out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
    }
    fs::rename(&partial, &path)?;
    sync_dir(dir)?;
    let record = SnapshotRecord {
        id,
        last_log_id,
        last_membership,
    };
    set_current(db, group, dir, &record)?;
    Ok(record)
}

/// Replaces the state of `group` with the snapshot in `source`, keeps a copy of the
/// file in `dir`, and makes it the group's current snapshot.
pub fn install(
    db: &Database,
    group: GroupId,
    dir: &Path,
    source: &mut File,
    record: &SnapshotRecord,
) -> StoreResult<()> {
    fs::create_dir_all(dir)?;
    let path = snapshot_path(dir, &record.id);
    let partial = path.with_extension("partial");
    {
        use std::io::Seek;
        source.seek(std::io::SeekFrom::Start(0))?;
        let mut copy = File::create(&partial)?;
        std::io::copy(source, &mut copy)?;
        copy.sync_all()?;
    }
    fs::rename(&partial, &path)?;
    sync_dir(dir)?;

    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    wipe_group(&txn, group)?;
    load_frames(&txn, group, &path)?;
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
    remove_other_snapshots(dir, &record.id)?;
    Ok(())
}

fn load_frames(txn: &WriteTransaction, group: GroupId, path: &Path) -> StoreResult<()> {
    let mut input = BufReader::new(File::open(path)?);
    let mut buffer = Vec::new();
    read_frame_bytes(&mut input, &mut buffer)?;
    let (revision, compacted) = match decode_frame(&buffer)? {
        Frame::Header {
            format: FORMAT_VERSION,
            revision,
            compacted,
        } => (revision, compacted),
        other => {
            return Err(StoreError::Corrupt(format!(
                "snapshot does not start with a version {FORMAT_VERSION} header: {other:?}"
            )))
        }
    };
    let mut kv = txn.open_table(KV)?;
    let mut revisions = txn.open_table(REVISIONS)?;
    let mut members = txn.open_table(MEMBERS)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut lease_keys = txn.open_table(LEASE_KEYS)?;
    let mut rows = 0u64;
    loop {
        read_frame_bytes(&mut input, &mut buffer)?;
        match decode_frame(&buffer)? {
            Frame::Version {
                key,
                main,
                sub,
                record,
            } => {
                kv.insert((group, key, main, sub), record)?;
                revisions.insert((group, main, sub), key)?;
            }
            Frame::Member { id, attributes } => {
                members.insert((group, id), attributes)?;
            }
            Frame::Lease { id, ttl } => {
                leases.insert((group, id), ttl)?;
            }
            Frame::LeaseKey { id, key } => {
                lease_keys.insert((group, id, key), ())?;
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
        }
        rows += 1;
    }
    let mut meta = txn.open_table(SM_META)?;
    meta.insert(
        (group, sm_meta::REVISION),
        revision.to_be_bytes().as_slice(),
    )?;
    meta.insert(
        (group, sm_meta::COMPACT_REVISION),
        compacted.to_be_bytes().as_slice(),
    )?;
    Ok(())
}

fn decode_frame(bytes: &[u8]) -> StoreResult<Frame<'_>> {
    Ok(postcard::from_bytes(bytes)?)
}

fn wipe_group(txn: &WriteTransaction, group: GroupId) -> StoreResult<()> {
    txn.open_table(KV)?.retain_in::<(u64, &[u8], i64, i64), _>(
        (group, &[][..], 0, 0)..(group.saturating_add(1), &[][..], 0, 0),
        |_, _| false,
    )?;
    txn.open_table(REVISIONS)?
        .retain_in((group, 0, 0)..=(group, i64::MAX, i64::MAX), |_, _| false)?;
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

fn set_current(
    db: &Database,
    group: GroupId,
    dir: &Path,
    record: &SnapshotRecord,
) -> StoreResult<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.open_table(SM_META)?
        .insert((group, sm_meta::SNAPSHOT), encode(record)?.as_slice())?;
    txn.commit()?;
    remove_other_snapshots(dir, &record.id)
}

/// The group's current snapshot, if one was built or installed.
pub fn current(db: &Database, group: GroupId) -> StoreResult<Option<SnapshotRecord>> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(SM_META)?;
    match meta.get((group, sm_meta::SNAPSHOT))? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Ok(None),
    }
}

fn remove_other_snapshots(dir: &Path, keep: &str) -> StoreResult<()> {
    let keep = format!("{keep}.snap");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name != keep && (name.ends_with(".snap") || name.ends_with(".partial")) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
