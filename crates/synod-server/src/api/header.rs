//! Stamping responses with this node's header (cluster, member, revision, term).

use synod_proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse,
    RangeResponse, ResponseHeader, TxnResponse,
};

use crate::node::Node;

/// A response that carries etcd's `ResponseHeader`.
pub trait WithHeader {
    /// The header field.
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! with_header {
    ($($response:ty),*) => {
        $(impl WithHeader for $response {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

with_header!(
    RangeResponse,
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse
);

/// Completes the header the store filled in (revision only) with this node's ids and
/// Raft term.
pub fn stamp<T: WithHeader>(node: &Node, mut response: T) -> T {
    let header = response.header_mut();
    let revision = header.as_ref().map_or(0, |header| header.revision);
    *header = Some(node.header(revision));
    response
}
