//! The gRPC codec of every service here: prost's encoding, with the messages that
//! nest decoded by [`crate::nested`] instead of prost's recursion.
//!
//! tonic's codec is generic over the message type and Rust has no specialization,
//! so the few nesting types are told apart by their `TypeId`; every other message
//! goes to prost unchanged.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use prost::bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use crate::etcdserverpb::{TxnRequest, TxnResponse};
use crate::nested::{self, NestedError};
use crate::synodpeer::{ForwardRequest, ForwardResponse};

/// Encodes `T` and decodes `U` (see the module docs).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = BoundedEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        BoundedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

/// Encodes `T` with prost.
#[derive(Debug)]
pub struct BoundedEncoder<T>(PhantomData<T>);

/// Encoded size from which a message is encoded off the async worker (see
/// [`BoundedEncoder`]).
pub const LARGE_MESSAGE_BYTES: usize = 1024 * 1024;

impl<T: Message> Encoder for BoundedEncoder<T> {
    type Item = T;
    type Error = Status;

    /// Encodes `item` into a buffer sized for it at once: left to grow, the
    /// buffer of a 200 MB response is copied over and over as it doubles. A
    /// message of [`LARGE_MESSAGE_BYTES`] or more takes long enough to encode
    /// and free (a full-keyspace Range, say) to hold up every other request on
    /// the same worker thread, so on a multi-threaded runtime that work moves
    /// off it (`block_in_place` hands the worker's other tasks to another thread)
    /// and runs at low priority (see [`crate::low_priority`]).
    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let length = item.encoded_len();
        buf.reserve(length);
        // The message is dropped where it is encoded: freeing a large one (a
        // Range's hundreds of thousands of keys) takes time too.
        let mut encode = move || {
            item.encode(buf)
                .map_err(|error| Status::internal(format!("failed to encode message: {error}")))
        };
        let multi_threaded = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        if length >= LARGE_MESSAGE_BYTES && multi_threaded {
            tokio::task::block_in_place(|| crate::low_priority::at_low_priority(encode))
        } else {
            encode()
        }
    }
}

/// Decodes `U`, bounding the nesting of the types that nest.
#[derive(Debug)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let id = TypeId::of::<U>();
        let nesting: fn(Bytes) -> Result<Box<dyn Any>, NestedError> =
            if id == TypeId::of::<TxnRequest>() {
                |bytes| Ok(Box::new(nested::decode_txn_request(bytes)?))
            } else if id == TypeId::of::<TxnResponse>() {
                |bytes| Ok(Box::new(nested::decode_txn_response(bytes)?))
            } else if id == TypeId::of::<ForwardRequest>() {
                |bytes| Ok(Box::new(nested::decode_forward_request(bytes)?))
            } else if id == TypeId::of::<ForwardResponse>() {
                |bytes| Ok(Box::new(nested::decode_forward_response(bytes)?))
            } else {
                return U::decode(buf).map(Some).map_err(|error| {
                    Status::internal(format!("failed to decode Protobuf message: {error}"))
                });
            };
        let bytes = buf.copy_to_bytes(buf.remaining());
        let message = nesting(bytes).map_err(|error| status(&error))?;
        // The type was checked above, so the downcast cannot fail.
        Ok(message.downcast::<U>().ok().map(|message| *message))
    }
}

/// The status a message that did not decode is refused with: a Txn nested too
/// deep gets etcd's answer to it; anything else, what prost's codec answers.
pub fn status(error: &NestedError) -> Status {
    let code = match error {
        NestedError::TooDeep => Code::InvalidArgument,
        _ => Code::Internal,
    };
    Status::new(code, error.to_string())
}
