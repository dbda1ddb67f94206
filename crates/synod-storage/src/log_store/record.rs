//! The records of the write-ahead log and their framing on disk.
//!
//! A record is `len: u32 LE | crc: u32 LE | kind: u8 | payload`, where `len` counts
//! the kind byte and the payload, and `crc` is the CRC-32 of those same bytes. The
//! checksum is what tells a record cut short by a crash (or damaged on disk) from a
//! whole one: recovery stops at the first record that fails it.

use openraft::Vote;

use crate::codec::{decode, encode};
use crate::error::StoreResult;
use crate::limits::LOG_RECORD_BYTES_MAX;
use crate::types::{Entry, LogId, NodeId};

/// Bytes of a record's frame before its kind byte.
pub(super) const HEADER_BYTES: usize = 8;

const ENTRY: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const VOTE: u8 = 4;
const COMMITTED: u8 = 5;

/// One change to the log or its hard state, in the order it was made.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Record {
    /// An entry appended at its index, replacing any entry there.
    Entry(Entry),
    /// Every entry at this index and above was removed.
    Truncate(u64),
    /// Every entry up to and including this log id was removed.
    Purge(LogId),
    /// The vote this node holds.
    Vote(Vote<NodeId>),
    /// The highest log id known committed (a restart hint, never fsynced alone).
    Committed(Option<LogId>),
}

/// What reading the bytes at an offset found.
#[derive(Debug)]
pub(super) enum Read {
    /// A whole record, and the bytes it took.
    Record(Record, usize),
    /// The bytes end before the record does, or they fail the checksum: the tail a
    /// crash leaves, or damage.
    Damaged,
    /// No bytes left.
    End,
}

impl Record {
    /// The record framed for the log.
    pub(super) fn frame(&self) -> StoreResult<Vec<u8>> {
        match self {
            Record::Entry(entry) => frame_entry(entry),
            Record::Truncate(index) => Ok(frame(TRUNCATE, &index.to_le_bytes())),
            Record::Purge(log_id) => Ok(frame(PURGE, &encode(log_id)?)),
            Record::Vote(vote) => Ok(frame(VOTE, &encode(vote)?)),
            Record::Committed(log_id) => Ok(frame(COMMITTED, &encode(log_id)?)),
        }
    }

    /// Reads the record at the start of `bytes`.
    pub(super) fn read(bytes: &[u8]) -> StoreResult<Read> {
        if bytes.is_empty() {
            return Ok(Read::End);
        }
        let Some(header) = bytes.get(..HEADER_BYTES) else {
            return Ok(Read::Damaged);
        };
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if body_len == 0 || body_len > LOG_RECORD_BYTES_MAX {
            return Ok(Read::Damaged);
        }
        let Some(body) = bytes.get(HEADER_BYTES..HEADER_BYTES + body_len) else {
            return Ok(Read::Damaged);
        };
        if crc32fast::hash(body) != crc {
            return Ok(Read::Damaged);
        }
        let payload = &body[1..];
        let record = match body[0] {
            ENTRY => Record::Entry(decode(payload)?),
            TRUNCATE => {
                let Ok(index) = <[u8; 8]>::try_from(payload) else {
                    return Ok(Read::Damaged);
                };
                Record::Truncate(u64::from_le_bytes(index))
            }
            PURGE => Record::Purge(decode(payload)?),
            VOTE => Record::Vote(decode(payload)?),
            COMMITTED => Record::Committed(decode(payload)?),
            _ => return Ok(Read::Damaged),
        };
        Ok(Read::Record(record, HEADER_BYTES + body_len))
    }
}

/// An entry framed as a [`Record::Entry`], without giving the entry up.
pub(super) fn frame_entry(entry: &Entry) -> StoreResult<Vec<u8>> {
    Ok(frame(ENTRY, &encode(entry)?))
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let body_len = payload.len() + 1;
    let mut framed = Vec::with_capacity(HEADER_BYTES + body_len);
    framed.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    framed.extend_from_slice(&[0; 4]);
    framed.push(kind);
    framed.extend_from_slice(payload);
    let crc = crc32fast::hash(&framed[HEADER_BYTES..]);
    framed[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    framed
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::Entry(Entry {
                log_id: log_id(2, 7),
                payload: EntryPayload::Blank,
            }),
            Record::Truncate(5),
            Record::Purge(log_id(1, 3)),
            Record::Vote(Vote::new_committed(4, 2)),
            Record::Committed(Some(log_id(2, 6))),
            Record::Committed(None),
        ]
    }

    #[test]
    fn every_record_reads_back_as_written() -> StoreResult<()> {
        let mut log = Vec::new();
        for record in samples() {
            log.extend(record.frame()?);
        }
        let mut offset = 0;
        let mut read = Vec::new();
        loop {
            match Record::read(&log[offset..])? {
                Read::Record(record, len) => {
                    read.push(record);
                    offset += len;
                }
                Read::End => break,
                Read::Damaged => panic!("damaged record at {offset}"),
            }
        }
        assert_eq!(read, samples());
        Ok(())
    }

    #[test]
    fn a_cut_or_flipped_record_reads_as_damaged() -> StoreResult<()> {
        let framed = samples()[0].frame()?;
        for cut in 1..framed.len() {
            assert!(
                matches!(Record::read(&framed[..cut])?, Read::Damaged),
                "cut at {cut}"
            );
        }
        for at in 0..framed.len() {
            let mut flipped = framed.clone();
            flipped[at] ^= 0x10;
            assert!(
                matches!(Record::read(&flipped)?, Read::Damaged),
                "flip at {at}"
            );
        }
        assert!(matches!(Record::read(&[0; 16])?, Read::Damaged));
        Ok(())
    }
}
