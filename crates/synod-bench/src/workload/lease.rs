//! `lease`: grant a lease and revoke it, per operation.

use synod_proto::etcdserverpb::lease_client::LeaseClient;
use synod_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use tonic::transport::Channel;

use super::Outcome;

/// TTL of each granted lease; it is revoked at once, so this only bounds how long
/// a lease outlives a revoke that failed.
pub const LEASE_TTL_SECONDS: i64 = 30;

/// One client's grant-and-revoke loop state.
#[derive(Debug)]
pub struct Lease {
    lease: LeaseClient<Channel>,
}

impl Lease {
    /// Grants and revokes through `lease`.
    pub fn new(lease: LeaseClient<Channel>) -> Lease {
        Lease { lease }
    }

    /// Grants one lease, then revokes it.
    pub async fn run(&mut self) -> Result<Outcome, tonic::Status> {
        let granted = self
            .lease
            .lease_grant(LeaseGrantRequest {
                ttl: LEASE_TTL_SECONDS,
                id: 0,
            })
            .await?
            .into_inner();
        self.lease
            .lease_revoke(LeaseRevokeRequest { id: granted.id })
            .await?;
        Ok(Outcome::Done)
    }
}
