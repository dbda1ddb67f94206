//! Peer messages go to the replica of the Raft group they name: a message for a
//! group the member does not host is refused with NOT_FOUND and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Cluster;
use synod_proto::etcdserverpb::PutRequest;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::Command;
use synod_proto::synodpeer::raft_peer_client::RaftPeerClient;
use synod_proto::synodpeer::{ForwardRequest, MembershipRequest, ReadIndexRequest};
use tonic::Code;

const HOSTED: u64 = 0;
const NOT_HOSTED: u64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_group_not_hosted_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(1, &[]).await;
    let peer_url = cluster.member(0).unwrap().peer_url();
    let mut peer = RaftPeerClient::connect(peer_url).await.unwrap();

    let members = peer
        .membership(MembershipRequest { group_id: HOSTED })
        .await
        .expect("the hosted group answers")
        .into_inner();
    assert_eq!(members.members.len(), 1);

    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(
            status
                .message()
                .contains(&format!("hosts no raft group {NOT_HOSTED}")),
            "{status:?}"
        );
    };
    refused(
        peer.membership(MembershipRequest {
            group_id: NOT_HOSTED,
        })
        .await
        .unwrap_err(),
    );
    refused(
        peer.read_index(ReadIndexRequest {
            group_id: NOT_HOSTED,
        })
        .await
        .unwrap_err(),
    );
    let put = Command {
        op: Some(Op::Put(PutRequest {
            key: b"elsewhere".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    };
    refused(
        peer.forward(ForwardRequest {
            group_id: NOT_HOSTED,
            commands: vec![put],
        })
        .await
        .unwrap_err(),
    );

    let mut client = cluster.client(0).await;
    let read = client.get("elsewhere", None).await.unwrap();
    assert!(read.kvs().is_empty(), "a refused forward wrote its key");
}
