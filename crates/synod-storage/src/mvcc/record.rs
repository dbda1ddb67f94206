//! The stored form of one key version.
//!
//! A row of the history table is `[key length u32][key][record]`, and a record is
//! `[flags u8][create_revision i64][version i64][lease i64][value ...]`, all integers
//! big-endian. A fixed header lets a read borrow the value without copying and keeps
//! a tombstone's record down to 25 bytes. The record alone is what snapshots carry
//! and what HashKV hashes.

use super::lineage::{KnownLineage, Lineage};
use crate::error::{StoreError, StoreResult};

const HEADER_LEN: usize = 1 + 8 + 8 + 8;
const KEY_LEN_BYTES: usize = 4;
const FLAG_TOMBSTONE: u8 = 1;

/// One version of a key, borrowed from the database page it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRecord<'a> {
    /// Set on the version that deleted the key; such a version has no value.
    pub tombstone: bool,
    /// Revision at which the key was (last) created.
    pub create_revision: i64,
    /// Number of writes since creation; 1 for a fresh key.
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
    /// The value.
    pub value: &'a [u8],
}

impl<'a> KeyRecord<'a> {
    /// The record that marks a key deleted.
    pub const TOMBSTONE: KeyRecord<'static> = KeyRecord {
        tombstone: true,
        create_revision: 0,
        version: 0,
        lease: 0,
        value: &[],
    };

    /// Encodes the record for storage.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.value.len());
        self.encode_into(&mut bytes);
        bytes
    }

    /// Encodes the record into `bytes`, replacing what it held, so a writer can
    /// reuse one buffer for every record.
    pub fn encode_into(&self, bytes: &mut Vec<u8>) {
        bytes.clear();
        bytes.reserve(HEADER_LEN + self.value.len());
        bytes.push(if self.tombstone { FLAG_TOMBSTONE } else { 0 });
        bytes.extend_from_slice(&self.create_revision.to_be_bytes());
        bytes.extend_from_slice(&self.version.to_be_bytes());
        bytes.extend_from_slice(&self.lease.to_be_bytes());
        bytes.extend_from_slice(self.value);
    }

    /// Decodes a stored record.
    pub fn decode(bytes: &'a [u8]) -> StoreResult<Self> {
        if bytes.len() < HEADER_LEN {
            return Err(StoreError::Corrupt(format!(
                "key record of {} bytes is shorter than its {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let int_at = |offset: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[offset..offset + 8]);
            i64::from_be_bytes(raw)
        };
        Ok(Self {
            tombstone: bytes[0] & FLAG_TOMBSTONE != 0,
            create_revision: int_at(1),
            version: int_at(9),
            lease: int_at(17),
            value: &bytes[HEADER_LEN..],
        })
    }

    /// The lineage the key index keeps for this record written at main revision
    /// `main`.
    pub fn lineage(&self, main: i64) -> Lineage {
        Lineage::new(
            main,
            KnownLineage {
                create_revision: self.create_revision,
                version: self.version,
                leased: self.lease != 0,
            },
        )
    }
}

/// Encodes a history row for `key` with the record bytes `record` into `bytes`,
/// replacing what it held, so a writer can reuse one buffer for every row.
pub fn encode_version(key: &[u8], record: &[u8], bytes: &mut Vec<u8>) -> StoreResult<()> {
    let key_len = u32::try_from(key.len())
        .map_err(|_| StoreError::Corrupt(format!("key of {} bytes is too long", key.len())))?;
    bytes.clear();
    bytes.reserve(KEY_LEN_BYTES + key.len() + record.len());
    bytes.extend_from_slice(&key_len.to_be_bytes());
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(record);
    Ok(())
}

/// Splits a history row into its key and its record bytes.
pub fn split_version(bytes: &[u8]) -> StoreResult<(&[u8], &[u8])> {
    let corrupt = || {
        StoreError::Corrupt(format!(
            "history row of {} bytes is shorter than its key",
            bytes.len()
        ))
    };
    let (len, rest) = bytes
        .split_first_chunk::<KEY_LEN_BYTES>()
        .ok_or_else(corrupt)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
    if rest.len() < len {
        return Err(corrupt());
    }
    Ok(rest.split_at(len))
}

/// Decodes a history row into its key and record.
pub fn decode_version(bytes: &[u8]) -> StoreResult<(&[u8], KeyRecord<'_>)> {
    let (key, record) = split_version(bytes)?;
    Ok((key, KeyRecord::decode(record)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() -> StoreResult<()> {
        let record = KeyRecord {
            tombstone: false,
            create_revision: 7,
            version: 3,
            lease: -2,
            value: b"hello",
        };
        assert_eq!(KeyRecord::decode(&record.encode())?, record);
        let tombstone = KeyRecord::TOMBSTONE.encode();
        assert_eq!(KeyRecord::decode(&tombstone)?, KeyRecord::TOMBSTONE);
        Ok(())
    }

    #[test]
    fn refuses_truncated_records() {
        assert!(KeyRecord::decode(&[0u8; 10]).is_err());
        assert!(split_version(&[0, 0]).is_err());
        assert!(split_version(&[0, 0, 0, 9, b'k']).is_err());
    }

    #[test]
    fn history_rows_carry_their_key() -> StoreResult<()> {
        let record = KeyRecord {
            tombstone: false,
            create_revision: 2,
            version: 1,
            lease: 0,
            value: b"v",
        };
        let mut row = Vec::new();
        encode_version(b"key", &record.encode(), &mut row)?;
        assert_eq!(decode_version(&row)?, (&b"key"[..], record));
        encode_version(b"", &KeyRecord::TOMBSTONE.encode(), &mut row)?;
        assert_eq!(decode_version(&row)?, (&b""[..], KeyRecord::TOMBSTONE));
        Ok(())
    }
}
