//! The peer RPC payload codec: openraft messages are serde types, carried as
//! postcard bytes inside the protobuf envelope.

use serde::{de::DeserializeOwned, Serialize};

/// Encodes a Raft message for the wire.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, tonic::Status> {
    postcard::to_stdvec(message)
        .map_err(|error| tonic::Status::internal(format!("encode raft message: {error}")))
}

/// Decodes a Raft message from the wire.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, tonic::Status> {
    postcard::from_bytes(bytes)
        .map_err(|error| tonic::Status::invalid_argument(format!("decode raft message: {error}")))
}
