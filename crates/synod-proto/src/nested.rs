//! Decoding of the messages that nest without bound: a Txn holds operations that
//! may be Txns again, and synod's log commands and peer messages carry Txns and
//! their responses.
//!
//! prost decodes nested messages by recursion, under a fixed budget of 100 levels
//! for the whole message. A Txn level costs two of them (the `TxnRequest` and its
//! `RequestOp`), so a client could send a Txn that decodes at the gRPC layer, while
//! the same Txn wrapped in a log command, a batch of commands or a forwarded
//! request went over the budget: followers then could not decode the entry the
//! leader had appended. etcd itself sets no bound (Go's stacks grow); a Rust
//! thread's stack does not, so some bound must exist.
//!
//! Here the recursive fields are walked by hand with a budget of their own,
//! [`TXN_NESTING_MAX`] Txn levels, and every other field is handed to prost's
//! generated code with a fresh budget. Wrapping a Txn (in a command, a batch, a
//! forward) adds no Txn level, so every Txn the client API accepts also decodes in
//! every form it travels in, and anything deeper is refused where it enters.

use prost::bytes::{Buf, Bytes};
use prost::encoding::{decode_key, decode_varint, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::etcdserverpb::{request_op, response_op};
use crate::etcdserverpb::{RequestOp, ResponseOp, TxnRequest, TxnResponse};
use crate::synodpb::{command, command_result};
use crate::synodpb::{BatchResult, Command, CommandBatch, CommandResult};
use crate::synodpeer::{ForwardRequest, ForwardResponse, ForwardedResult};

/// Most levels of Txn nesting a request may have: a Txn with no Txn inside is one
/// level. etcd bounds nesting only through `--max-txn-ops`: each level's operations
/// count against the ops left to the levels inside it, so with the default of 128
/// no Txn nests deeper than 128 levels, and anything deeper meets etcd's "too many
/// operations" error. This bound is the same, and a deeper Txn gets the same
/// error, so with default flags synod answers every nesting as etcd does. (With a
/// larger `--max-txn-ops` etcd accepts deeper Txns; synod still stops at 128.) The
/// recursion of decoding, validating, applying and encoding the deepest request
/// stays within a small part of a thread's stack, checked by a test on a 512 KiB
/// stack in a debug build.
pub const TXN_NESTING_MAX: usize = 128;

/// etcd's answer to a Txn with more operations than `--max-txn-ops` allows, which
/// is also its answer, and synod's, to a Txn nested past [`TXN_NESTING_MAX`].
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NestedError {
    /// A Txn nests more than [`TXN_NESTING_MAX`] levels deep.
    #[error("{TOO_MANY_OPS}")]
    TooDeep,
    /// A batch of commands (or of results) holds another batch, which synod never
    /// writes.
    #[error("a batch holds a batch")]
    BatchInBatch,
    /// A field that holds a message is not length-delimited.
    #[error("failed to decode Protobuf message: field {0} is not a message")]
    NotAMessage(u32),
    /// A field's length runs past the end of the bytes.
    #[error("failed to decode Protobuf message: field {0} is cut short")]
    Truncated(u32),
    /// The bytes are not a valid encoding of the message.
    #[error("failed to decode Protobuf message: {0}")]
    Decode(#[from] DecodeError),
}

/// Decodes a `TxnRequest` (see the module docs).
pub fn decode_txn_request(bytes: Bytes) -> Result<TxnRequest, NestedError> {
    let mut txn = TxnRequest::default();
    merge_txn(&mut txn, bytes, 1)?;
    Ok(txn)
}

/// Decodes a `TxnResponse`.
pub fn decode_txn_response(bytes: Bytes) -> Result<TxnResponse, NestedError> {
    let mut txn = TxnResponse::default();
    merge_txn(&mut txn, bytes, 1)?;
    Ok(txn)
}

/// Decodes a log command.
pub fn decode_command(bytes: Bytes) -> Result<Command, NestedError> {
    let mut command = Command::default();
    merge_command(&mut command, bytes, Batching::Allowed)?;
    Ok(command)
}

/// Decodes the result of a log command.
pub fn decode_command_result(bytes: Bytes) -> Result<CommandResult, NestedError> {
    let mut result = CommandResult::default();
    merge_command_result(&mut result, bytes, Batching::Allowed)?;
    Ok(result)
}

/// Decodes commands forwarded to the leader.
pub fn decode_forward_request(bytes: Bytes) -> Result<ForwardRequest, NestedError> {
    let mut request = ForwardRequest::default();
    merge_fields(&mut request, bytes, &[2], |request, _, bytes| {
        let mut command = Command::default();
        merge_command(&mut command, bytes, Batching::Allowed)?;
        request.commands.push(command);
        Ok(())
    })?;
    Ok(request)
}

/// Decodes the leader's results for forwarded commands.
pub fn decode_forward_response(bytes: Bytes) -> Result<ForwardResponse, NestedError> {
    let mut response = ForwardResponse::default();
    merge_fields(&mut response, bytes, &[1], |response, _, bytes| {
        let mut forwarded = ForwardedResult::default();
        merge_fields(&mut forwarded, bytes, &[1], |forwarded, _, bytes| {
            let result = forwarded.result.get_or_insert_with(CommandResult::default);
            merge_command_result(result, bytes, Batching::Allowed)
        })?;
        response.results.push(forwarded);
        Ok(())
    })?;
    Ok(response)
}

/// Merges the fields of `message` found in `bytes`: those whose numbers are in
/// `claimed` (all of them length-delimited) by `merge_claimed`, with the field's
/// bytes; every other by prost, with a fresh recursion budget.
fn merge_fields<M: Message>(
    message: &mut M,
    mut bytes: Bytes,
    claimed: &[u32],
    mut merge_claimed: impl FnMut(&mut M, u32, Bytes) -> Result<(), NestedError>,
) -> Result<(), NestedError> {
    while bytes.has_remaining() {
        let (field, wire_type) = decode_key(&mut bytes)?;
        if !claimed.contains(&field) {
            message.merge_field(field, wire_type, &mut bytes, DecodeContext::default())?;
            continue;
        }
        if wire_type != WireType::LengthDelimited {
            return Err(NestedError::NotAMessage(field));
        }
        let length = decode_varint(&mut bytes)?;
        if length > bytes.remaining() as u64 {
            return Err(NestedError::Truncated(field));
        }
        // In range: at most the remaining length, itself a usize.
        let field_bytes = bytes.split_to(length as usize);
        merge_claimed(message, field, field_bytes)?;
    }
    Ok(())
}

/// The field of `RequestOp` and `ResponseOp` that holds a nested Txn.
const NESTED_TXN_FIELD: u32 = 4;

/// A Txn request or response: a message whose operations may hold it again.
trait Txn: Message + Default + Sized {
    /// `RequestOp` or `ResponseOp`.
    type Op: Message + Default;
    /// The fields of the Txn that hold operations.
    const OPERATION_FIELDS: &'static [u32];
    /// The operations of field `field`, one of [`Self::OPERATION_FIELDS`].
    fn operations(&mut self, field: u32) -> &mut Vec<Self::Op>;
    /// Takes the Txn `operation` holds (to merge more into it, as protobuf merges
    /// a message field met twice), or a new one if it holds another kind.
    fn take_nested(operation: &mut Self::Op) -> Self;
    /// Makes `txn` what `operation` holds.
    fn set_nested(operation: &mut Self::Op, txn: Self);
}

impl Txn for TxnRequest {
    type Op = RequestOp;
    const OPERATION_FIELDS: &'static [u32] = &[2, 3];

    fn operations(&mut self, field: u32) -> &mut Vec<RequestOp> {
        if field == 2 {
            &mut self.success
        } else {
            &mut self.failure
        }
    }

    fn take_nested(operation: &mut RequestOp) -> Self {
        match operation.request.take() {
            Some(request_op::Request::RequestTxn(txn)) => txn,
            _ => Self::default(),
        }
    }

    fn set_nested(operation: &mut RequestOp, txn: Self) {
        operation.request = Some(request_op::Request::RequestTxn(txn));
    }
}

impl Txn for TxnResponse {
    type Op = ResponseOp;
    const OPERATION_FIELDS: &'static [u32] = &[3];

    fn operations(&mut self, _field: u32) -> &mut Vec<ResponseOp> {
        &mut self.responses
    }

    fn take_nested(operation: &mut ResponseOp) -> Self {
        match operation.response.take() {
            Some(response_op::Response::ResponseTxn(txn)) => txn,
            _ => Self::default(),
        }
    }

    fn set_nested(operation: &mut ResponseOp, txn: Self) {
        operation.response = Some(response_op::Response::ResponseTxn(txn));
    }
}

/// Merges `bytes` into `txn`, which sits at nesting level `level`.
fn merge_txn<T: Txn>(txn: &mut T, bytes: Bytes, level: usize) -> Result<(), NestedError> {
    if level > TXN_NESTING_MAX {
        return Err(NestedError::TooDeep);
    }
    merge_fields(txn, bytes, T::OPERATION_FIELDS, |txn, field, bytes| {
        let mut operation = T::Op::default();
        merge_fields(
            &mut operation,
            bytes,
            &[NESTED_TXN_FIELD],
            |operation, _, bytes| {
                let mut nested = T::take_nested(operation);
                merge_txn(&mut nested, bytes, level + 1)?;
                T::set_nested(operation, nested);
                Ok(())
            },
        )?;
        txn.operations(field).push(operation);
        Ok(())
    })
}

/// Whether a batch may appear at this point.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batching {
    Allowed,
    InsideBatch,
}

/// `Command`'s fields that carry a Txn and a batch.
const COMMAND_TXN_FIELD: u32 = 3;
const COMMAND_BATCH_FIELD: u32 = 9;

fn merge_command(
    command: &mut Command,
    bytes: Bytes,
    batching: Batching,
) -> Result<(), NestedError> {
    merge_fields(
        command,
        bytes,
        &[COMMAND_TXN_FIELD, COMMAND_BATCH_FIELD],
        |command, field, bytes| {
            if field == COMMAND_TXN_FIELD {
                let mut txn = match command.op.take() {
                    Some(command::Op::Txn(txn)) => txn,
                    _ => TxnRequest::default(),
                };
                merge_txn(&mut txn, bytes, 1)?;
                command.op = Some(command::Op::Txn(txn));
                return Ok(());
            }
            if batching == Batching::InsideBatch {
                return Err(NestedError::BatchInBatch);
            }
            let mut batch = match command.op.take() {
                Some(command::Op::Batch(batch)) => batch,
                _ => CommandBatch::default(),
            };
            merge_fields(&mut batch, bytes, &[1], |batch, _, bytes| {
                let mut inner = Command::default();
                merge_command(&mut inner, bytes, Batching::InsideBatch)?;
                batch.commands.push(inner);
                Ok(())
            })?;
            command.op = Some(command::Op::Batch(batch));
            Ok(())
        },
    )
}

/// `CommandResult`'s fields that carry a Txn's response and a batch's results.
const RESULT_TXN_FIELD: u32 = 4;
const RESULT_BATCH_FIELD: u32 = 11;

fn merge_command_result(
    result: &mut CommandResult,
    bytes: Bytes,
    batching: Batching,
) -> Result<(), NestedError> {
    merge_fields(
        result,
        bytes,
        &[RESULT_TXN_FIELD, RESULT_BATCH_FIELD],
        |result, field, bytes| {
            if field == RESULT_TXN_FIELD {
                let mut txn = match result.result.take() {
                    Some(command_result::Result::Txn(txn)) => txn,
                    _ => TxnResponse::default(),
                };
                merge_txn(&mut txn, bytes, 1)?;
                result.result = Some(command_result::Result::Txn(txn));
                return Ok(());
            }
            if batching == Batching::InsideBatch {
                return Err(NestedError::BatchInBatch);
            }
            let mut batch = match result.result.take() {
                Some(command_result::Result::Batch(batch)) => batch,
                _ => BatchResult::default(),
            };
            merge_fields(&mut batch, bytes, &[1], |batch, _, bytes| {
                let mut inner = CommandResult::default();
                merge_command_result(&mut inner, bytes, Batching::InsideBatch)?;
                batch.results.push(inner);
                Ok(())
            })?;
            result.result = Some(command_result::Result::Batch(batch));
            Ok(())
        },
    )
}

/// How many levels of Txn a request nests (1 for a Txn with no Txn inside), for
/// requests that reach the API without passing the decoders above.
pub fn txn_nesting(txn: &TxnRequest) -> usize {
    1 + txn
        .success
        .iter()
        .chain(&txn.failure)
        .filter_map(|operation| match &operation.request {
            Some(request_op::Request::RequestTxn(nested)) => Some(txn_nesting(nested)),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::etcdserverpb::{Compare, PutRequest, PutResponse, RangeRequest};

    /// A Txn `levels` deep: each level puts a key and nests the next in its
    /// success branch.
    fn txn_nested(levels: usize) -> TxnRequest {
        let mut txn = TxnRequest::default();
        for level in 0..levels {
            let mut outer = TxnRequest {
                compare: vec![Compare {
                    key: format!("k{level}").into_bytes(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            if level > 0 {
                outer.success.push(RequestOp {
                    request: Some(request_op::Request::RequestTxn(txn)),
                });
            }
            outer.failure.push(RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: format!("k{level}").into_bytes(),
                    ..Default::default()
                })),
            });
            txn = outer;
        }
        txn
    }

    fn response_nested(levels: usize) -> TxnResponse {
        let mut txn = TxnResponse::default();
        for level in 0..levels {
            let mut outer = TxnResponse {
                succeeded: level % 2 == 0,
                responses: vec![ResponseOp {
                    response: Some(response_op::Response::ResponsePut(PutResponse::default())),
                }],
                ..Default::default()
            };
            if level > 0 {
                outer.responses.push(ResponseOp {
                    response: Some(response_op::Response::ResponseTxn(txn)),
                });
            }
            txn = outer;
        }
        txn
    }

    fn encoded(message: &impl Message) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    #[test]
    fn txns_decode_to_the_bound_and_no_further() {
        let deepest = txn_nested(TXN_NESTING_MAX);
        assert_eq!(txn_nesting(&deepest), TXN_NESTING_MAX);
        assert_eq!(decode_txn_request(encoded(&deepest)).unwrap(), deepest);
        let too_deep = txn_nested(TXN_NESTING_MAX + 1);
        assert_eq!(
            decode_txn_request(encoded(&too_deep)),
            Err(NestedError::TooDeep)
        );
        // prost alone gives up far sooner: its budget of 100 covers every message
        // level, and a Txn level is two of them.
        assert!(TxnRequest::decode(encoded(&txn_nested(51))).is_err());

        let response = response_nested(TXN_NESTING_MAX);
        assert_eq!(decode_txn_response(encoded(&response)).unwrap(), response);
        assert_eq!(
            decode_txn_response(encoded(&response_nested(TXN_NESTING_MAX + 1))),
            Err(NestedError::TooDeep)
        );
    }

    #[test]
    fn wrapping_a_txn_adds_no_level() {
        let txn = txn_nested(TXN_NESTING_MAX);
        let single = Command {
            op: Some(command::Op::Txn(txn.clone())),
        };
        let batch = Command {
            op: Some(command::Op::Batch(CommandBatch {
                commands: vec![single.clone(), single.clone()],
            })),
        };
        assert_eq!(decode_command(encoded(&single)).unwrap(), single);
        assert_eq!(decode_command(encoded(&batch)).unwrap(), batch);
        let forward = ForwardRequest {
            group_id: 3,
            commands: vec![single.clone(), batch],
        };
        assert_eq!(decode_forward_request(encoded(&forward)).unwrap(), forward);

        let result = CommandResult {
            revision: 9,
            result: Some(command_result::Result::Txn(response_nested(
                TXN_NESTING_MAX,
            ))),
        };
        let results = CommandResult {
            revision: 9,
            result: Some(command_result::Result::Batch(BatchResult {
                results: vec![result.clone(), result.clone()],
            })),
        };
        assert_eq!(decode_command_result(encoded(&results)).unwrap(), results);
        let answer = ForwardResponse {
            results: vec![
                ForwardedResult {
                    result: Some(results),
                    log_index: 4,
                    ..Default::default()
                },
                ForwardedResult {
                    code: 14,
                    message: "no".into(),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(decode_forward_response(encoded(&answer)).unwrap(), answer);
    }

    #[test]
    fn the_deepest_txn_fits_in_a_small_stack() {
        let work = || {
            let txn = txn_nested(TXN_NESTING_MAX);
            let command = Command {
                op: Some(command::Op::Batch(CommandBatch {
                    commands: vec![Command {
                        op: Some(command::Op::Txn(txn)),
                    }],
                })),
            };
            let decoded = decode_command(encoded(&command)).unwrap();
            assert_eq!(decoded, command);
            let response = response_nested(TXN_NESTING_MAX);
            assert_eq!(decode_txn_response(encoded(&response)).unwrap(), response);
            drop((decoded, command, response));
        };
        let thread = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(work)
            .unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn a_batch_inside_a_batch_is_refused() {
        let batch = |commands| Command {
            op: Some(command::Op::Batch(CommandBatch { commands })),
        };
        let inner = batch(vec![Command::default()]);
        assert_eq!(
            decode_command(encoded(&batch(vec![inner]))),
            Err(NestedError::BatchInBatch)
        );
    }

    #[test]
    fn malformed_fields_are_errors_not_panics() {
        // Field 2 (success) as a varint, then as a length past the end.
        assert_eq!(
            decode_txn_request(Bytes::from_static(&[0x10, 0x01])),
            Err(NestedError::NotAMessage(2))
        );
        assert_eq!(
            decode_txn_request(Bytes::from_static(&[0x12, 0x05, 0x00])),
            Err(NestedError::Truncated(2))
        );
        assert!(matches!(
            decode_txn_request(Bytes::from_static(&[0x12])),
            Err(NestedError::Decode(_))
        ));
    }

    /// Any etcd request operation, nesting Txns at most `levels` deep.
    fn request_op(levels: u32) -> BoxedStrategy<RequestOp> {
        let leaf = prop_oneof![
            (any::<Vec<u8>>(), any::<Vec<u8>>(), any::<i64>()).prop_map(|(key, value, lease)| {
                request_op::Request::RequestPut(PutRequest {
                    key,
                    value,
                    lease,
                    ..Default::default()
                })
            }),
            (any::<Vec<u8>>(), any::<Vec<u8>>(), any::<i64>()).prop_map(
                |(key, range_end, limit)| {
                    request_op::Request::RequestRange(RangeRequest {
                        key,
                        range_end,
                        limit,
                        ..Default::default()
                    })
                }
            ),
        ]
        .prop_map(|request| RequestOp {
            request: Some(request),
        });
        leaf.prop_recursive(levels, 64, 4, |inner| {
            (
                proptest::collection::vec(inner.clone(), 0..4),
                proptest::collection::vec(inner, 0..4),
                proptest::collection::vec(any::<Vec<u8>>(), 0..3),
            )
                .prop_map(|(success, failure, keys)| RequestOp {
                    request: Some(request_op::Request::RequestTxn(TxnRequest {
                        compare: keys
                            .into_iter()
                            .map(|key| Compare {
                                key,
                                ..Default::default()
                            })
                            .collect(),
                        success,
                        failure,
                    })),
                })
        })
        .boxed()
    }

    proptest! {
        /// The hand-walked fields decode exactly as prost decodes them, and a
        /// command carrying the Txn, alone or in a batch, gives it back unchanged.
        #[test]
        fn decodes_as_prost_does(operations in proptest::collection::vec(request_op(6), 0..4)) {
            let txn = TxnRequest { success: operations.clone(), failure: operations, ..Default::default() };
            let bytes = encoded(&txn);
            prop_assert_eq!(decode_txn_request(bytes.clone()).unwrap(), TxnRequest::decode(bytes).unwrap());
            let command = Command { op: Some(command::Op::Txn(txn)) };
            let batch = Command { op: Some(command::Op::Batch(CommandBatch { commands: vec![command.clone(), Command::default(), command] })) };
            prop_assert_eq!(decode_command(encoded(&batch)).unwrap(), batch);
        }

        /// Arbitrary bytes: whatever prost decodes, the walk decodes the same way.
        #[test]
        fn arbitrary_bytes_decode_as_prost_decodes_them(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let bytes = Bytes::from(bytes);
            if let Ok(expected) = TxnRequest::decode(bytes.clone()) {
                prop_assert_eq!(decode_txn_request(bytes.clone()).unwrap(), expected);
            }
            if let Ok(expected) = Command::decode(bytes.clone()) {
                if !matches!(decode_command(bytes.clone()), Err(NestedError::BatchInBatch)) {
                    prop_assert_eq!(decode_command(bytes).unwrap(), expected);
                }
            }
        }
    }
}
