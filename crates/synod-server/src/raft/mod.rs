//! Consensus glue: openraft configured for synod, its network over the peer RPC, and
//! the peer RPC server.

pub mod codec;
pub mod network;
pub mod peer_service;
pub mod pre_vote;
