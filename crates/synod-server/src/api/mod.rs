//! The client API: one module per etcd service, one place for errors and one for
//! request validation.

pub mod cluster;
pub mod commit;
pub mod election;
pub mod error;
pub mod header;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod pending;
pub mod recipe;
pub mod require_leader;
pub mod validate;
pub mod watch;
