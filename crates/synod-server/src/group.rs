//! The Raft groups a member takes part in. Peer RPCs and storage are keyed by
//! group already; until the shards arrive there is one group, and every group id
//! the code names is this one.

use synod_storage::GroupId;

/// The only Raft group until sharding arrives.
pub const DEFAULT_GROUP: GroupId = 0;
