//! Segment files of the write-ahead log, and rebuilding the log from them at start.
//!
//! The log is a directory of files `<seq>.wal`, numbered in the order they were
//! written; only the last one grows. Each new segment starts with the hard state
//! (vote, purge point, commit hint), so once every entry of an old segment is
//! purged the file can go without taking anything else with it. The last segment
//! may end in zeros written ahead of its records (see the writer); sealed ones
//! are cut to their records.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::Vote;

use super::record::{Read, Record};
use crate::error::{StoreError, StoreResult};
use crate::types::{LogId, NodeId};

const SUFFIX: &str = "wal";

/// Where an entry's record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: usize,
}

/// The log as recovered from disk.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// Every live entry's id and location, by index.
    pub entries: BTreeMap<u64, (LogId, Location)>,
    pub last_purged: Option<LogId>,
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId>,
    /// Every segment with the highest entry index it holds, oldest first.
    pub segments: BTreeMap<u64, u64>,
    /// Bytes in the last segment after recovery.
    pub last_len: u64,
}

/// The path of segment `seq` in `dir`.
pub(super) fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.{SUFFIX}"))
}

/// Opens segment `seq` for reading.
pub(super) fn open_for_reading(dir: &Path, seq: u64) -> StoreResult<Arc<File>> {
    Ok(Arc::new(File::open(path(dir, seq))?))
}

/// Creates segment `seq`, empty, and makes its name durable.
pub(super) fn create(dir: &Path, seq: u64) -> StoreResult<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path(dir, seq))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Opens the existing segment `seq` to write more records to it.
pub(super) fn open_for_writing(dir: &Path, seq: u64) -> StoreResult<File> {
    Ok(OpenOptions::new().write(true).open(path(dir, seq))?)
}

/// The sequence numbers of the segments in `dir`, in order.
fn list(dir: &Path) -> StoreResult<Vec<u64>> {
    let mut seqs = Vec::new();
    for dir_entry in fs::read_dir(dir)? {
        let name = dir_entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(&format!(".{SUFFIX}")) else {
            continue;
        };
        if let Ok(seq) = u64::from_str_radix(stem, 16) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Replays every segment in `dir`, in order. Zeros where a record would start, and
/// nothing but zeros after them, are the space written ahead of the records: the
/// segment ends there. A damaged record in the last segment is the tail of a write
/// a crash cut short: it and everything after it were never acknowledged, so the
/// file is cut back to the last whole record. Damage anywhere else is an error.
pub(super) fn recover(dir: &Path) -> StoreResult<Recovered> {
    let mut recovered = Recovered::default();
    let seqs = list(dir)?;
    for (position, &seq) in seqs.iter().enumerate() {
        let bytes = fs::read(path(dir, seq))?;
        let mut offset = 0;
        let mut max_index = 0;
        loop {
            match Record::read(&bytes[offset..])? {
                Read::Record(record, len) => {
                    if let Record::Entry(entry) = &record {
                        max_index = max_index.max(entry.log_id.index);
                    }
                    let at = Location {
                        segment: seq,
                        offset: offset as u64,
                        len,
                    };
                    recovered.apply(record, at);
                    offset += len;
                }
                Read::End => break,
                Read::Damaged if bytes[offset..].iter().all(|byte| *byte == 0) => break,
                Read::Damaged if position + 1 == seqs.len() => {
                    tracing::warn!(
                        segment = %path(dir, seq).display(),
                        offset,
                        dropped = bytes.len() - offset,
                        "cutting an incomplete record off the end of the Raft log"
                    );
                    let file = OpenOptions::new().write(true).open(path(dir, seq))?;
                    file.set_len(offset as u64)?;
                    file.sync_all()?;
                    break;
                }
                Read::Damaged => {
                    return Err(StoreError::Corrupt(format!(
                        "Raft log segment {} is damaged at byte {offset}",
                        path(dir, seq).display()
                    )))
                }
            }
        }
        recovered.segments.insert(seq, max_index);
        recovered.last_len = offset as u64;
    }
    Ok(recovered)
}

impl Recovered {
    fn apply(&mut self, record: Record, at: Location) {
        match record {
            Record::Entry(entry) => {
                self.entries.insert(entry.log_id.index, (entry.log_id, at));
            }
            Record::Truncate(from) => {
                self.entries.split_off(&from);
            }
            Record::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                self.last_purged = self.last_purged.max(Some(log_id));
            }
            Record::Vote(vote) => self.vote = Some(vote),
            Record::Committed(log_id) => self.committed = log_id,
        }
    }
}
