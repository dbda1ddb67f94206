//! Client request bytes, decoded as the gRPC layer decodes them and checked as the
//! API checks them. Nothing may panic, and every Txn the API accepts becomes a log
//! entry that a follower decodes, alone or batched with others, into the same
//! command, which applies to the same result as the leader's.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::bytes::Bytes;
use prost::Message;
use synod_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, TxnRequest, TxnResponse,
    WatchRequest,
};
use synod_proto::nested;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{Command as CommandMessage, CommandBatch};
use synod_server::api::validate;
use synod_storage::mvcc::MvccWriter;
use synod_storage::{Command, Store};

/// One store for the whole run; every input applies in groups of its own.
fn store() -> &'static (tempfile::TempDir, Arc<Store>) {
    static STORE: OnceLock<(tempfile::TempDir, Arc<Store>)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db =
            synod_storage::open_database(&dir.path().join("fuzz.redb"), 8 << 20).expect("a store");
        (dir, db)
    })
}

/// Applies `txn` in a group no input used before.
fn apply(txn: &TxnRequest) -> Result<TxnResponse, String> {
    static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);
    let group = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    let db = &store().1;
    let mut write = db.begin_write().map_err(|error| error.to_string())?;
    write
        .set_durability(redb::Durability::None)
        .map_err(|error| error.to_string())?;
    let result = {
        let mut writer = MvccWriter::open(db, &write, group).map_err(|error| error.to_string())?;
        let result = writer.txn(txn).map_err(|error| error.to_string());
        writer.save().map_err(|error| error.to_string())?;
        result
    };
    write.commit().map_err(|error| error.to_string())?;
    result
}

/// The command a follower gets from `command`'s log entry (postcard around the
/// protobuf, as the log and the peer RPC carry it).
fn as_follower_decodes(command: &CommandMessage) -> CommandMessage {
    let bytes = postcard::to_stdvec(&Command::new(command.clone())).expect("an entry encodes");
    let decoded: Command = postcard::from_bytes(&bytes).expect("every accepted entry decodes");
    decoded.message().clone()
}

fuzz_target!(|data: &[u8]| {
    // The other client messages decode or fail, never panic.
    let _ = RangeRequest::decode(data).map(|range| validate::check_range(&range));
    let _ = PutRequest::decode(data).map(|put| validate::check_put(&put));
    let _ = DeleteRangeRequest::decode(data).map(|delete| validate::check_delete(&delete));
    let _ = LeaseGrantRequest::decode(data);
    let _ = WatchRequest::decode(data);

    let Ok(txn) = nested::decode_txn_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    if validate::check_txn(&txn, 128).is_err() {
        return;
    }
    let command = CommandMessage {
        op: Some(Op::Txn(txn.clone())),
    };
    assert_eq!(as_follower_decodes(&command), command);
    let batch = CommandMessage {
        op: Some(Op::Batch(CommandBatch {
            commands: vec![command.clone(), CommandMessage::default(), command.clone()],
        })),
    };
    let followed = as_follower_decodes(&batch);
    assert_eq!(followed, batch);
    let Some(Op::Batch(CommandBatch { commands })) = followed.op else {
        unreachable!("a batch decoded as something else");
    };
    let Some(Op::Txn(follower_txn)) = &commands[0].op else {
        unreachable!("a Txn decoded as something else");
    };
    assert_eq!(apply(&txn), apply(follower_txn));
});
