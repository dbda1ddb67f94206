//! A log segment of arbitrary records, framed as the writer frames them (so the
//! checksum lets them through to decoding), then arbitrary bytes after: opening
//! the log must not panic, and whatever it recovers must read back.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use openraft::storage::RaftLogReader;
use synod_storage::{LogLimits, LogStore};

#[derive(Debug, Arbitrary)]
struct Segment {
    /// Kind byte and payload of each record.
    records: Vec<(u8, Vec<u8>)>,
    /// Bytes after the records: a torn write, zeros, damage.
    tail: Vec<u8>,
}

fn framed(segment: &Segment) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (kind, payload) in &segment.records {
        let mut body = vec![*kind % 8];
        body.extend_from_slice(payload);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
    }
    bytes.extend_from_slice(&segment.tail);
    bytes
}

fuzz_target!(|segment: Segment| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("0000000000000001.wal"), framed(&segment))
        .expect("the segment is written");
    let Ok(mut log) = LogStore::open(dir.path(), LogLimits::default()) else {
        return;
    };
    let entries = futures::executor::block_on(log.try_get_log_entries(..));
    if let (Ok(entries), Some(last)) = (entries, log.last_log_id()) {
        assert!(entries.last().is_none_or(|entry| entry.log_id == last));
    }
});
