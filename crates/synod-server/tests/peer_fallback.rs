//! A member that lacks the streamed peer calls (an older synod during a rolling
//! upgrade) is still reached: AppendEntries and forwards fall back to one call
//! each, and the stream is not tried again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::AppendEntriesRequest;
use openraft::Vote;
use synod_proto::synodpeer::ForwardRequest;
use synod_server::forward_link::ForwardLinks;
use synod_server::raft::network::{PeerClients, PeerNetworkFactory};
use synod_storage::{MemberNode, TypeConfig};
use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::transport::Server;

/// A peer server that knows no call: it answers every one Unimplemented and
/// records which it was asked.
#[derive(Clone, Default)]
struct OldPeer {
    calls: Arc<Mutex<Vec<String>>>,
}

impl NamedService for OldPeer {
    const NAME: &'static str = "synodpeer.RaftPeer";
}

impl Service<http::Request<Body>> for OldPeer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = request.uri().path().rsplit('/').next().unwrap_or_default();
        self.calls.lock().unwrap().push(call.to_string());
        ready(Ok(tonic::Status::unimplemented("no such call").into_http()))
    }
}

impl OldPeer {
    /// Serves on a free loopback port; returns the peer URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = self.clone();
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }

    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[tokio::test]
async fn appends_fall_back_to_one_call_each() {
    let peer = OldPeer::default();
    let url = peer.start().await;
    let (_durable, log_durable) = tokio::sync::watch::channel(0);
    let mut factory = PeerNetworkFactory::new(0, PeerClients::new(None), log_durable);
    let member = MemberNode {
        name: "old".into(),
        peer_urls: vec![url],
    };
    let mut network = factory.new_client(2, &member).await;
    let append = || AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let option = RPCOption::new(Duration::from_secs(5));

    let first = network.append_entries(append(), option.clone()).await;
    assert!(first.is_err(), "an old peer cannot answer this stub's way");
    assert_eq!(peer.take_calls(), ["AppendEntriesStream", "AppendEntries"]);
    let second = network.append_entries(append(), option).await;
    assert!(second.is_err());
    assert_eq!(peer.take_calls(), ["AppendEntries"]);
}

#[tokio::test]
async fn forwards_fall_back_to_one_call_each() {
    let peer = OldPeer::default();
    let url = peer.start().await;
    let client = PeerClients::new(None).for_url(&url).unwrap();
    let links = ForwardLinks::default();
    let round = || ForwardRequest {
        group_id: 0,
        commands: Vec::new(),
    };
    for expected in [&["ForwardStream", "Forward"][..], &["Forward"][..]] {
        let answer = links
            .send(&url, client.clone(), round(), Duration::from_secs(5))
            .await;
        assert_eq!(answer.unwrap_err().code(), tonic::Code::Unimplemented);
        assert_eq!(peer.take_calls(), expected);
    }
}
