//! Member and cluster ids, computed from the bootstrap flags exactly as etcd derives
//! them, and the identity a data dir is stamped with on first start.

use std::sync::Arc;

use redb::Durability;
use sha1::{Digest, Sha1};
use synod_storage::tables::IDENTITY;
use synod_storage::Store;
use synod_storage::StoreError;

/// A member's id: the first 8 bytes of SHA-1 over its sorted peer URLs and the
/// cluster token, as etcd computes it for an initial cluster.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hasher = Sha1::new();
    hasher.update(urls.concat().as_bytes());
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

/// The cluster's id: SHA-1 over the sorted member ids (big-endian) and the token.
pub fn cluster_id(member_ids: &[u64], token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    hasher.update(token.as_bytes());
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// Who a data dir belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The cluster the data belongs to.
    pub cluster_id: u64,
    /// This member's id in that cluster.
    pub member_id: u64,
}

/// Why a data dir cannot be used with the given flags.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data dir was created by another cluster or another member.
    #[error(
        "data dir belongs to cluster {stored_cluster:x} as member {stored_member:x}, but the flags \
         describe cluster {cluster:x} with this node as member {member:x}; use the matching \
         --initial-cluster/--initial-cluster-token/--name, or a fresh --data-dir"
    )]
    Mismatch {
        /// Cluster id stored in the data dir.
        stored_cluster: u64,
        /// Member id stored in the data dir.
        stored_member: u64,
        /// Cluster id from the flags.
        cluster: u64,
        /// Member id from the flags.
        member: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const CLUSTER_ID: &str = "cluster_id";
const MEMBER_ID: &str = "member_id";

/// The identity stored in `db`, if the data dir was used before.
pub fn stored(db: &Store) -> Result<Option<Identity>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(IDENTITY)?;
    let read = |name: &str| -> Result<Option<u64>, StoreError> {
        match table.get(name)? {
            Some(value) => {
                let bytes: [u8; 8] = value
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("identity {name} is not 8 bytes")))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
            None => Ok(None),
        }
    };
    match (read(CLUSTER_ID)?, read(MEMBER_ID)?) {
        (Some(cluster_id), Some(member_id)) => Ok(Some(Identity {
            cluster_id,
            member_id,
        })),
        _ => Ok(None),
    }
}

/// Stamps a fresh data dir with `identity`, or checks that a used one matches it.
///
/// A used data dir is accepted when it belongs to the same member; its stored
/// cluster id is the one that counts (the membership, and with it the id the flags
/// would give, may have changed since the cluster was created). Returns the
/// identity in force.
pub fn claim(db: &Arc<Store>, identity: Identity) -> Result<Identity, IdentityError> {
    if let Some(stored) = stored(db)? {
        if stored.member_id != identity.member_id {
            return Err(IdentityError::Mismatch {
                stored_cluster: stored.cluster_id,
                stored_member: stored.member_id,
                cluster: identity.cluster_id,
                member: identity.member_id,
            });
        }
        return Ok(stored);
    }
    let write = || -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(IDENTITY)?;
            table.insert(CLUSTER_ID, identity.cluster_id.to_be_bytes().as_slice())?;
            table.insert(MEMBER_ID, identity.member_id.to_be_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    };
    write()?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_do_not_depend_on_url_or_member_order() {
        let a = member_id(&["http://a:2380".into(), "http://b:2380".into()], "t");
        let b = member_id(&["http://b:2380".into(), "http://a:2380".into()], "t");
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&["http://a:2380".into(), "http://b:2380".into()], "u")
        );
        assert_eq!(cluster_id(&[3, 1, 2], "t"), cluster_id(&[1, 2, 3], "t"));
        assert_ne!(cluster_id(&[1, 2, 3], "t"), cluster_id(&[1, 2], "t"));
    }
}
