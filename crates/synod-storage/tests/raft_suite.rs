//! openraft's storage conformance suite, run against synod's write-ahead log store
//! and redb state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use synod_storage::{
    open_database, LogLimits, LogStore, NodeId, StateMachine, TypeConfig, DEFAULT_CACHE_BYTES,
};

struct SynodStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SynodStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|error| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                error,
            )
        })?;
        let db = open_database(&dir.path().join("synod.redb"), DEFAULT_CACHE_BYTES)
            .map_err(|error| error.write_logs())?;
        let log_store = LogStore::open(&dir.path().join("wal"), LogLimits::default())
            .map_err(|error| error.write_logs())?;
        let state_machine = StateMachine::new(db, 0, dir.path().join("snapshots"))
            .map_err(|error| error.write_logs())?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(error) = Suite::test_all(SynodStoreBuilder) {
        panic!("openraft storage suite failed: {error}");
    }
}
