//! A client for synod, speaking the etcd v3 API (so it works against etcd too).
//!
//! Beyond thin wrappers over the services, it carries the recipes that make the
//! coordination features safe to use: a lock hands out a [`Fence`], whose
//! [`Fence::guard`] turns any transaction into one the store refuses once the lock
//! has passed to someone else.

mod client;
mod error;
mod fence;

pub use client::{Client, LeaseKeeper, WatchEvents};
pub use error::ClientError;
pub use fence::Fence;
pub use synod_proto::etcdserverpb as proto;
pub use synod_proto::mvccpb;
