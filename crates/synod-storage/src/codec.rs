//! Encoding of stored values. Raft structures use postcard (compact, serde-based);
//! MVCC records use the fixed layout in [`crate::mvcc::record`].

use serde::{de::DeserializeOwned, Serialize};

use crate::error::StoreResult;

/// Encodes a value for storage.
pub fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a stored value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    Ok(postcard::from_bytes(bytes)?)
}
