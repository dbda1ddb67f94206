//! Arbitrary bytes as a snapshot (the frames a backup or a Raft snapshot holds),
//! loaded into an empty store: refused or loaded, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = synod_storage::open_database(&dir.path().join("fuzz.redb"), 1 << 20).expect("a store");
    let _ = synod_storage::snapshot::restore(&db, 0, &mut &data[..]);
});
