//! The synod node: the etcd v3 client API, Raft glue and request routing over the
//! storage in `synod-storage`.
//!
//! A request enters through a service in [`api`], is validated there, and reaches
//! [`node::Node`], which commits writes through Raft (forwarding to the leader when
//! needed) and makes reads linearizable with a read index.

pub mod api;
pub mod authority;
pub mod batch;
pub mod config;
pub mod deadline;
pub mod disk_guard;
pub mod forward;
pub mod forward_link;
pub mod group;
pub mod history_cursor;
pub mod identity;
pub mod join;
pub mod leadership;
pub mod lease;
pub mod lease_expiry;
pub mod limits;
pub mod listener;
pub mod membership;
pub mod node;
pub mod outcome;
pub mod point_reads;
pub mod proposal;
pub mod raft;
pub mod read_index;
pub mod receive_budget;
pub mod replicas;
pub mod server;
pub mod transfer;

pub use config::{ClusterState, ServerConfig};
pub use limits::Limits;
pub use server::{run, ServerError};
