//! The thread that writes a log's records: group commit over an append-only file.
//!
//! Every change goes through one queue. The writer takes everything queued while it
//! was busy, appends it to the current segment in one write, and fsyncs once
//! (`fdatasync`) if any of it must be durable — one flush for many appends. Only
//! then does it tell the callers. A failed write or flush leaves the file in a state
//! the writer cannot vouch for, so from then on it refuses everything: the node
//! stops rather than acknowledge writes that might not be there after a restart.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use openraft::storage::LogFlushed;

use super::record::Record;
use super::segment::{self, Location};
use super::{lock, Contents};
use crate::error::StoreResult;
use crate::types::TypeConfig;

/// Most queued changes written in one go.
const CHANGES_PER_WRITE_MAX: usize = 4096;

/// A framed entry record and the slot it fills.
pub(super) struct FramedEntry {
    pub index: u64,
    /// The append that made the slot; a slot replaced since then is left alone.
    pub append: u64,
    pub bytes: Vec<u8>,
}

/// What a non-entry record does beyond being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Effect {
    /// Must be durable before it is answered.
    Durable,
    /// Must be durable, then the segments holding only entries up to this index go.
    Purge(u64),
    /// Written, not flushed: it becomes durable with the next flush.
    Lazy,
}

/// A change queued for the writer.
pub(super) enum Change {
    Append {
        entries: Vec<FramedEntry>,
        done: LogFlushed<TypeConfig>,
    },
    Record {
        bytes: Vec<u8>,
        effect: Effect,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    },
}

pub(super) struct Writer {
    pub dir: PathBuf,
    pub contents: Arc<Mutex<Contents>>,
    pub queue: mpsc::Receiver<Change>,
    pub active: File,
    pub active_seq: u64,
    pub active_len: u64,
    /// Every segment with the highest entry index written to it.
    pub segments: BTreeMap<u64, u64>,
    /// Size at which a new segment starts.
    pub segment_bytes: u64,
}

impl Writer {
    pub fn run(mut self) {
        let mut failed: Option<String> = None;
        while let Ok(first) = self.queue.recv() {
            let mut batch = vec![first];
            while batch.len() < CHANGES_PER_WRITE_MAX {
                match self.queue.try_recv() {
                    Ok(change) => batch.push(change),
                    Err(_) => break,
                }
            }
            let outcome = match &failed {
                Some(error) => Err(error.clone()),
                None => self.write(&batch).map_err(|error| {
                    let error = format!("the Raft log cannot be written: {error}");
                    tracing::error!("{error}; refusing every further write");
                    error
                }),
            };
            if let Err(error) = &outcome {
                failed = Some(error.clone());
            }
            report(batch, outcome);
        }
    }

    fn write(&mut self, batch: &[Change]) -> StoreResult<()> {
        let mut buffer = Vec::new();
        let mut placed = Vec::new();
        let mut durable = false;
        let mut purge_upto = None;
        let mut max_index = self.segments.get(&self.active_seq).copied().unwrap_or(0);
        for change in batch {
            match change {
                Change::Append { entries, .. } => {
                    durable = true;
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
                }
                Change::Record { bytes, effect, .. } => {
                    buffer.extend_from_slice(bytes);
                    match effect {
                        Effect::Durable => durable = true,
                        Effect::Purge(upto) => {
                            durable = true;
                            purge_upto = purge_upto.max(Some(*upto));
                        }
                        Effect::Lazy => {}
                    }
                }
            }
        }
        self.active.write_all(&buffer)?;
        if durable {
            self.active.sync_data()?;
        }
        self.active_len += buffer.len() as u64;
        self.segments.insert(self.active_seq, max_index);
        lock(&self.contents).written(placed);
        if let Some(upto) = purge_upto {
            self.remove_purged(upto);
        }
        if self.active_len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Starts the next segment, opening it with the hard state so that no older
    /// segment is needed for it.
    fn rotate(&mut self) -> StoreResult<()> {
        self.active.sync_data()?;
        let seq = self.active_seq + 1;
        let mut file = segment::create(&self.dir, seq)?;
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
        file.write_all(&header)?;
        file.sync_data()?;
        let reader = segment::open_for_reading(&self.dir, seq)?;
        lock(&self.contents).files.insert(seq, reader);
        self.active = file;
        self.active_seq = seq;
        self.active_len = header.len() as u64;
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

fn report(batch: Vec<Change>, outcome: Result<(), String>) {
    for change in batch {
        match change {
            Change::Append { done, .. } => {
                done.log_io_completed(outcome.clone().map_err(std::io::Error::other))
            }
            Change::Record { done, .. } => {
                if let Some(done) = done {
                    let _ = done.send(outcome.clone());
                }
            }
        }
    }
}
