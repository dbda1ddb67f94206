//! Lease grants and revocations; a revocation deletes the lease's keys in one
//! revision.

use redb::ReadableTable;
use synod_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse,
};

use super::MvccWriter;
use crate::mvcc::record::KeyRecord;
use crate::mvcc::MvccError;

impl MvccWriter<'_> {
    /// Grants a lease of `ttl` seconds under `id`.
    pub fn lease_grant(
        &mut self,
        request: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, MvccError> {
        let group = self.group;
        let leases = self.leases()?;
        if leases.get((group, request.id))?.is_some() {
            return Err(MvccError::LeaseExists);
        }
        leases.insert((group, request.id), request.ttl)?;
        Ok(LeaseGrantResponse {
            header: Some(self.header()),
            id: request.id,
            ttl: request.ttl,
            error: String::new(),
        })
    }

    /// Revokes a lease, deleting every key attached to it in one revision.
    pub fn lease_revoke(
        &mut self,
        request: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        let group = self.group;
        if self.leases()?.remove((group, request.id))?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        let mut attached = Vec::new();
        for row in self.lease_keys()?.range::<(u64, i64, &[u8])>(
            (group, request.id, &[][..])..(group, request.id.saturating_add(1), &[][..]),
        )? {
            let (key, ()) = row.map(|(key, value)| (key.value().2.to_vec(), value.value()))?;
            attached.push(key);
        }
        for key in attached {
            self.lease_keys()?
                .remove((group, request.id, key.as_slice()))?;
            if self.is_live(&key) {
                self.write_version(&key, &KeyRecord::TOMBSTONE)?;
            }
        }
        self.finish();
        Ok(LeaseRevokeResponse {
            header: Some(self.header()),
        })
    }
}
