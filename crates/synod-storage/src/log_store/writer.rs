//! Writing a log's records: appends to the current segment, flushed with
//! `fdatasync` when a change must be durable.
//!
//! The writer runs in the caller. A follower's append is flushed before it
//! returns: the follower's answer tells the leader the entry is durable. A
//! leader's append may instead be left to the flusher thread (see
//! [`super::LogStore::pipeline_leader_appends`]), so the leader sends the entry to
//! its followers while its own disk writes it. Either way, [`Writer::durable`]
//! says how far the log is flushed.
//!
//! The active segment's blocks are written (as zeros) ahead of its records, so a
//! flush writes data blocks and nothing else. An append that grows the file, or
//! fills blocks that are only reserved (`fallocate`), also changes the file's
//! metadata, and then every `fdatasync` commits the file system's journal too.
//! Measured on ext4 here, flushing one 600-byte record: 184 µs median and 836 µs
//! p99 when appending, 138 µs and 248 µs into zeroed blocks.
//!
//! A failed write or flush leaves the file in a state the writer cannot vouch for,
//! so from then on it refuses everything: the node stops rather than acknowledge
//! writes that might not be there after a restart.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::watch;

use super::record::Record;
use super::segment::{self, Location};
use super::Contents;
use crate::error::{StoreError, StoreResult};
use crate::limits::ZEROED_AHEAD_BYTES;
use crate::sync::lock;

/// The zeros written ahead, a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A framed entry record and the slot it fills.
pub(super) struct FramedEntry {
    pub index: u64,
    /// The append that made the slot; a slot replaced since then is left alone.
    pub append: u64,
    pub bytes: Vec<u8>,
}

/// What a write asks of the disk beyond the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// Durable before the write returns.
    Durable,
    /// Durable, then the segments holding only entries up to this index go.
    Purge(u64),
    /// Kept in memory and written ahead of the next write, so it costs no system
    /// call of its own; it becomes durable with the next flush, and is lost if the
    /// process stops before another write. Only hints may be lazy.
    Lazy,
    /// Written, then flushed by the flusher thread, which reports it through
    /// [`Writer::durable`].
    Background,
}

pub(super) struct Writer {
    pub dir: PathBuf,
    pub contents: Arc<Mutex<Contents>>,
    pub active: Arc<File>,
    pub active_seq: u64,
    pub active_len: u64,
    /// Where the zeros written ahead of the active segment's records end.
    pub active_zeroed: u64,
    /// Every segment with the highest entry index written to it.
    pub segments: BTreeMap<u64, u64>,
    /// Size at which a new segment starts.
    pub segment_bytes: u64,
    /// Why the log stopped taking writes, once a write has failed.
    pub failed: Option<String>,
    /// The highest entry index written since the last truncation.
    pub written_upto: u64,
    /// Entries up to this index are written but wait for the flusher.
    pub unflushed_upto: Option<u64>,
    /// Counts truncations, so a flush that started before one cannot vouch for
    /// entries written after it.
    pub truncations: u64,
    /// Every entry up to this index is on disk.
    pub durable: watch::Sender<u64>,
    /// Lazy records not written yet.
    pub lazy: Vec<u8>,
}

impl Writer {
    /// Appends `entries`, flushed before it returns or, with
    /// [`Effect::Background`], by the flusher.
    pub fn append(&mut self, entries: &[FramedEntry], effect: Effect) -> StoreResult<()> {
        self.guarded(|writer| writer.write(entries, &[], effect))
    }

    /// Records that the log is cut at `from`, before the truncation is written.
    pub fn truncating(&mut self, from: u64) {
        let kept = from.saturating_sub(1);
        self.truncations += 1;
        self.unflushed_upto = None;
        self.written_upto = self.written_upto.min(kept);
        self.durable.send_if_modified(|durable| {
            let lowered = *durable > kept;
            *durable = (*durable).min(kept);
            lowered
        });
    }

    /// Appends one non-entry record with the given effect.
    pub fn record(&mut self, record: &Record, effect: Effect) -> StoreResult<()> {
        let bytes = record.frame()?;
        self.guarded(|writer| writer.write(&[], &bytes, effect))
    }

    fn guarded(&mut self, write: impl FnOnce(&mut Self) -> StoreResult<()>) -> StoreResult<()> {
        if let Some(reason) = &self.failed {
            return Err(StoreError::Corrupt(reason.clone()));
        }
        write(self).map_err(|error| {
            let reason = format!("the Raft log cannot be written: {error}");
            tracing::error!("{reason}; refusing every further write");
            self.failed = Some(reason.clone());
            StoreError::Corrupt(reason)
        })
    }

    fn write(&mut self, entries: &[FramedEntry], other: &[u8], effect: Effect) -> StoreResult<()> {
        if effect == Effect::Lazy && entries.is_empty() {
            self.lazy.extend_from_slice(other);
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.lazy);
        buffer.reserve(other.len() + entries.iter().map(|entry| entry.bytes.len()).sum::<usize>());
        let mut placed = Vec::with_capacity(entries.len());
        let mut max_index = self.segments.get(&self.active_seq).copied().unwrap_or(0);
        for entry in entries {
            let at = Location {
                segment: self.active_seq,
                offset: self.active_len + buffer.len() as u64,
                len: entry.bytes.len(),
            };
            buffer.extend_from_slice(&entry.bytes);
            placed.push((entry.index, entry.append, at));
            max_index = max_index.max(entry.index);
        }
        buffer.extend_from_slice(other);
        self.zero_ahead(self.active_len + buffer.len() as u64)?;
        self.active.write_all_at(&buffer, self.active_len)?;
        if let Some(last) = entries.last() {
            self.written_upto = last.index;
        }
        match effect {
            Effect::Lazy => {}
            Effect::Background => {
                if !entries.is_empty() {
                    self.unflushed_upto = Some(self.written_upto);
                }
            }
            Effect::Durable | Effect::Purge(_) => {
                self.active.sync_data()?;
                self.flushed(self.written_upto);
            }
        }
        self.active_len += buffer.len() as u64;
        self.segments.insert(self.active_seq, max_index);
        lock(&self.contents).written(placed);
        if let Effect::Purge(upto) = effect {
            self.remove_purged(upto);
        }
        if self.active_len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Once records would reach `end`, past the zeroed space, zeroes the next
    /// [`ZEROED_AHEAD_BYTES`] after `end`, but not past the segment's size.
    fn zero_ahead(&mut self, end: u64) -> StoreResult<()> {
        if end <= self.active_zeroed {
            return Ok(());
        }
        let until = (end + ZEROED_AHEAD_BYTES).min(self.segment_bytes.max(end));
        let mut at = end;
        while at < until {
            let piece = (until - at).min(ZEROS.len() as u64);
            self.active.write_all_at(&ZEROS[..piece as usize], at)?;
            at += piece;
        }
        self.active_zeroed = until;
        Ok(())
    }

    /// Notes that every entry up to `upto` is on disk.
    fn flushed(&mut self, upto: u64) {
        if self
            .unflushed_upto
            .is_some_and(|unflushed| unflushed <= upto)
        {
            self.unflushed_upto = None;
        }
        self.durable.send_if_modified(|durable| {
            let raised = upto > *durable;
            *durable = (*durable).max(upto);
            raised
        });
    }

    /// Starts the next segment, opening it with the hard state so that no older
    /// segment is needed for it.
    fn rotate(&mut self) -> StoreResult<()> {
        // A sealed segment keeps its records only.
        self.active.set_len(self.active_len)?;
        self.active.sync_data()?;
        let seq = self.active_seq + 1;
        let file = segment::create(&self.dir, seq)?;
        let header = {
            let contents = lock(&self.contents);
            let mut header = Vec::new();
            if let Some(vote) = contents.vote {
                header.extend(Record::Vote(vote).frame()?);
            }
            if let Some(log_id) = contents.last_purged {
                header.extend(Record::Purge(log_id).frame()?);
            }
            header.extend(Record::Committed(contents.committed).frame()?);
            header
        };
        file.write_all_at(&header, 0)?;
        file.sync_data()?;
        let reader = segment::open_for_reading(&self.dir, seq)?;
        lock(&self.contents).files.insert(seq, reader);
        self.active = Arc::new(file);
        // The old segment was flushed above, whatever waited for the flusher.
        self.flushed(self.written_upto);
        self.active_seq = seq;
        self.active_len = header.len() as u64;
        self.active_zeroed = self.active_len;
        self.segments.insert(seq, 0);
        Ok(())
    }

    /// Deletes the oldest segments while every entry they hold is purged.
    fn remove_purged(&mut self, upto: u64) {
        let removable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(seq, max_index)| **seq != self.active_seq && **max_index <= upto)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in removable {
            self.segments.remove(&seq);
            lock(&self.contents).files.remove(&seq);
            let path = segment::path(&self.dir, seq);
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), %error, "cannot delete a purged Raft log segment");
            }
        }
    }
}

/// The flusher thread: flushes what leader appends left unflushed, outside every
/// lock, and reports it through [`Writer::durable`]. Each message on `wake` says an
/// append waits for it; it ends when every sender (every clone of the log store)
/// is gone.
pub(super) fn run_flusher(writer: Arc<Mutex<Writer>>, wake: mpsc::Receiver<()>) {
    while wake.recv().is_ok() {
        let job = {
            let writer = lock(&writer);
            match (writer.failed.is_none(), writer.unflushed_upto) {
                (true, Some(upto)) => Some((writer.active.clone(), upto, writer.truncations)),
                _ => None,
            }
        };
        let Some((file, upto, truncations)) = job else {
            continue;
        };
        let outcome = file.sync_data();
        let mut writer = lock(&writer);
        match outcome {
            Err(error) => {
                let reason = format!("the Raft log cannot be flushed: {error}");
                tracing::error!("{reason}; refusing every further write");
                writer.failed = Some(reason);
            }
            // A truncation meanwhile may have replaced entries this flush did not
            // cover; the truncation itself flushed everything before it.
            Ok(()) if writer.truncations == truncations => writer.flushed(upto),
            Ok(()) => {}
        }
    }
}
