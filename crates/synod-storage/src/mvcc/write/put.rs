//! Put: a new version of one key, carrying forward what it replaces.

use redb::ReadableTable;
use synod_proto::etcdserverpb::{PutRequest, PutResponse, ResponseHeader};
use synod_proto::mvccpb::KeyValue;

use super::MvccWriter;
use crate::error::StoreResult;
use crate::mvcc::index::Version;
use crate::mvcc::read;
use crate::mvcc::record::KeyRecord;
use crate::mvcc::MvccError;
use crate::sync;

impl MvccWriter<'_> {
    /// Applies a Put.
    pub fn put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        self.check_put(request)?;
        let response = self.do_put(request)?;
        self.finish();
        Ok(response)
    }

    /// Refuses a put that cannot apply (an unknown lease; `ignore_value` or
    /// `ignore_lease` on a key that does not exist) before anything is written.
    pub(super) fn check_put(&mut self, request: &PutRequest) -> Result<(), MvccError> {
        let group = self.group;
        if request.lease != 0 && self.leases()?.get((group, request.lease))?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        if (request.ignore_value || request.ignore_lease) && !self.is_live(&request.key) {
            return Err(MvccError::KeyNotFound);
        }
        Ok(())
    }

    /// Writes a put already checked, as the whole command or as an op of a Txn.
    pub(super) fn do_put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        let version = self.next_version(false)?;
        let mut index = sync::write(&self.index);
        // One walk of the index records the new version and finds the one it
        // replaces; the new version's lineage is filled in once it is known.
        let (replaced, recorded) = index.insert(&request.key, version);
        let previous = match replaced.filter(|replaced| !replaced.tombstone) {
            // The previous value is copied out only when the answer or the new
            // version needs it.
            Some(replaced) if request.prev_kv || request.ignore_value => {
                Some(read::version_value(&self.history, self.group, replaced)?)
            }
            Some(replaced) => Some(self.replaced_header(replaced)?),
            None => None,
        };
        if previous.is_none() && (request.ignore_value || request.ignore_lease) {
            index.withdraw(&request.key, version);
            return Err(MvccError::KeyNotFound);
        }
        let value: &[u8] = match (&previous, request.ignore_value) {
            (Some(previous), true) => &previous.value,
            _ => &request.value,
        };
        let lease = match (&previous, request.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => request.lease,
        };
        let record = KeyRecord {
            tombstone: false,
            create_revision: previous
                .as_ref()
                .map_or(version.main, |kv| kv.create_revision),
            version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            lease,
            value,
        };
        recorded.lineage = record.lineage(version.main);
        drop(index);
        self.write_row(&request.key, version, &record)?;
        self.reattach(
            &request.key,
            previous.as_ref().map_or(0, |kv| kv.lease),
            lease,
        )?;
        Ok(PutResponse {
            header: Some(ResponseHeader {
                revision: version.main,
                ..Default::default()
            }),
            prev_kv: previous.filter(|_| request.prev_kv),
        })
    }

    /// What a put needs of `replaced`, the live version it replaces: taken from
    /// the version's lineage when that is known and names no lease (whose id the
    /// index does not keep), else read back from the history.
    fn replaced_header(&self, replaced: Version) -> StoreResult<KeyValue> {
        match replaced.lineage.known(replaced.main) {
            Some(known) if !known.leased => Ok(KeyValue {
                create_revision: known.create_revision,
                mod_revision: replaced.main,
                version: known.version,
                ..Default::default()
            }),
            _ => read::version_header(&self.history, self.group, replaced),
        }
    }
}
