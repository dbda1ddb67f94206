//! The bytes of a peer's Raft messages and log entries, decoded as a follower
//! decodes them: nothing may panic, and what decodes encodes back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use synod_storage::types::Entry;
use synod_storage::{NodeId, TypeConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = postcard::from_bytes::<Vec<Entry>>(data) {
        let again = postcard::to_stdvec(&entries).expect("decoded entries encode");
        let decoded: Vec<Entry> = postcard::from_bytes(&again).expect("they decode again");
        assert_eq!(decoded, entries);
    }
    let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = postcard::from_bytes::<VoteRequest<NodeId>>(data);
    let _ = postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(data);
});
