//! The client side of the peer RPC: how openraft on this node reaches the others.
//!
//! One lazily connected gRPC channel per peer URL, shared by replication, voting,
//! request forwarding and read-index calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use synod_proto::synodpeer::raft_peer_client::RaftPeerClient;
use synod_proto::synodpeer::RaftMessage;
use synod_storage::{GroupId, MemberNode, NodeId, TypeConfig};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use super::codec;
use crate::limits::{PEER_MESSAGE_BYTES_MAX, PEER_RPC_TIMEOUT};

/// gRPC clients to peers, by URL.
#[derive(Clone, Default)]
pub struct PeerClients {
    clients: Arc<Mutex<HashMap<String, RaftPeerClient<Channel>>>>,
    source_address: Option<std::net::IpAddr>,
}

/// A peer could not be reached at all.
#[derive(Debug, thiserror::Error)]
#[error("peer {url:?}: {reason}")]
pub struct PeerUrlError {
    url: String,
    reason: String,
}

impl PeerClients {
    /// Clients whose connections leave from `source_address` (any, if `None`).
    pub fn new(source_address: Option<std::net::IpAddr>) -> Self {
        Self {
            clients: Arc::default(),
            source_address,
        }
    }

    /// The client for the member `node`, connecting on first use.
    pub fn for_node(&self, node: &MemberNode) -> Result<RaftPeerClient<Channel>, PeerUrlError> {
        let url = node.peer_urls.first().ok_or_else(|| PeerUrlError {
            url: String::new(),
            reason: format!("member {} has no peer URL", node.name),
        })?;
        self.for_url(url)
    }

    /// The client for a peer URL, connecting on first use.
    pub fn for_url(&self, url: &str) -> Result<RaftPeerClient<Channel>, PeerUrlError> {
        let mut clients = synod_storage::sync::lock(&self.clients);
        if let Some(client) = clients.get(url) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|error| PeerUrlError {
                url: url.to_string(),
                reason: error.to_string(),
            })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .local_address(self.source_address);
        let client = RaftPeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        clients.insert(url.to_string(), client.clone());
        Ok(client)
    }
}

/// Makes openraft's per-peer network clients.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    group: GroupId,
    clients: PeerClients,
    log_durable: watch::Receiver<u64>,
}

impl PeerNetworkFactory {
    /// A factory for `group` that shares `clients`. `log_durable` says how far this
    /// member's Raft log is on disk (`LogStore::durable`).
    pub fn new(group: GroupId, clients: PeerClients, log_durable: watch::Receiver<u64>) -> Self {
        Self {
            group,
            clients,
            log_durable,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerNetwork {
        PeerNetwork {
            group: self.group,
            target,
            client: self.clients.for_node(node),
            log_durable: self.log_durable.clone(),
            appends: Appends::NotOpen,
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerNetwork {
    group: GroupId,
    target: NodeId,
    client: Result<RaftPeerClient<Channel>, PeerUrlError>,
    log_durable: watch::Receiver<u64>,
    appends: Appends,
}

/// How AppendEntries reach the peer: over one long-lived stream (see
/// `AppendEntriesStream` in peer.proto), opened on first use and again after any
/// failure; or, to a member without that call, one call each.
enum Appends {
    NotOpen,
    Open(Box<AppendStream>),
    Unsupported,
}

/// An open stream of AppendEntries: where requests go, and where answers come.
struct AppendStream {
    requests: mpsc::Sender<RaftMessage>,
    answers: Streaming<RaftMessage>,
}

/// Why a stream of AppendEntries gave no answer.
enum StreamFailure {
    /// The peer does not know the call.
    Unsupported,
    /// The stream failed; it is closed, and the next append opens another.
    Failed(Status),
}

/// Which peer RPC to call.
#[derive(Clone, Copy)]
enum PeerCall {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

type PeerResult<Resp, E> = Result<Resp, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>;

// openraft's network trait answers with its (large) RPCError by value; these
// helpers build it for the trait methods.
#[allow(clippy::result_large_err)]
impl PeerNetwork {
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftPeerClient<Channel>, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>> {
        match &self.client {
            Ok(client) => Ok(client.clone()),
            Err(error) => Err(RPCError::Unreachable(Unreachable::new(error))),
        }
    }

    fn message<E: std::error::Error>(
        &self,
        request: &impl Serialize,
    ) -> Result<RaftMessage, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>> {
        let payload = codec::encode(request).map_err(|status| rpc_error(&status))?;
        Ok(RaftMessage {
            group_id: self.group,
            payload,
        })
    }

    fn answer<Resp, E>(&self, reply: &RaftMessage) -> PeerResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&reply.payload).map_err(|status| rpc_error(&status))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }

    async fn call<Req, Resp, E>(
        &mut self,
        call: PeerCall,
        request: &Req,
        timeout: Duration,
    ) -> PeerResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self.client()?;
        let mut grpc_request = tonic::Request::new(self.message(request)?);
        grpc_request.set_timeout(timeout);
        let reply = match call {
            PeerCall::AppendEntries => client.append_entries(grpc_request).await,
            PeerCall::Vote => client.vote(grpc_request).await,
            PeerCall::InstallSnapshot => client.install_snapshot(grpc_request).await,
        };
        let reply = reply.map_err(|status| rpc_error(&status))?;
        self.answer(&reply.into_inner())
    }

    /// Sends one AppendEntries over the stream, opening it first if need be, and
    /// waits for its answer. openraft sends the next only after this one returns,
    /// so each answer on the stream belongs to the request before it.
    async fn append_streamed(
        &mut self,
        mut client: RaftPeerClient<Channel>,
        message: RaftMessage,
        timeout: Duration,
    ) -> Result<RaftMessage, StreamFailure> {
        let exchange = async {
            if let Appends::Open(stream) = &mut self.appends {
                stream
                    .requests
                    .send(message)
                    .await
                    .map_err(|_| Status::unavailable("the append stream closed"))?;
                return stream.answers.message().await;
            }
            let (requests, inbox) = mpsc::channel(1);
            // The first message waits in the channel, so it leaves with the headers.
            let _ = requests.try_send(message);
            let mut answers = client
                .append_entries_stream(ReceiverStream::new(inbox))
                .await?
                .into_inner();
            let answer = answers.message().await;
            self.appends = Appends::Open(Box::new(AppendStream { requests, answers }));
            answer
        };
        let outcome = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(Some(answer))) => return Ok(answer),
            Ok(Ok(None)) => Status::unavailable("the peer ended the append stream"),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded("no answer on the append stream in time"),
        };
        if outcome.code() == tonic::Code::Unimplemented {
            self.appends = Appends::Unsupported;
            return Err(StreamFailure::Unsupported);
        }
        self.appends = Appends::NotOpen;
        Err(StreamFailure::Failed(outcome))
    }
}

/// openraft's view of a failed call: always "unreachable", so the next attempt
/// waits out openraft's backoff. openraft retries any other error at once, and a
/// peer that refuses a message (it cannot decode it, or hosts no such group) will
/// refuse it again: retried at once, one such message would spin the group.
fn rpc_error<E: std::error::Error>(
    status: &Status,
) -> RPCError<NodeId, MemberNode, RaftError<NodeId, E>> {
    if !matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) {
        tracing::warn!(%status, "a peer refused a raft message");
    }
    RPCError::Unreachable(Unreachable::new(status))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>>
    {
        // A leader acknowledges its own appends before they are flushed, so it may
        // know an entry committed before its own copy is on disk. Followers must
        // not apply it before then: a commit index goes out only once this
        // member's log holds it durably (as etcd's leader sends commits only after
        // its own write).
        if let Some(committed) = rpc.leader_commit {
            let flushed = self
                .log_durable
                .wait_for(|durable| *durable >= committed.index);
            match tokio::time::timeout(option.hard_ttl(), flushed).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    let reason = format!(
                        "this member's Raft log has not flushed the commit index {}",
                        committed.index
                    );
                    return Err(RPCError::Network(NetworkError::new(
                        &std::io::Error::other(reason),
                    )));
                }
            }
        }
        if !matches!(self.appends, Appends::Unsupported) {
            let client = self.client()?;
            let message = self.message(&rpc)?;
            match self
                .append_streamed(client, message, option.hard_ttl())
                .await
            {
                Ok(reply) => return self.answer(&reply),
                Err(StreamFailure::Failed(status)) => return Err(rpc_error(&status)),
                Err(StreamFailure::Unsupported) => {
                    tracing::info!(
                        target = self.target,
                        "peer lacks the append stream; sending one call per append"
                    );
                }
            }
        }
        self.call(PeerCall::AppendEntries, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MemberNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(PeerCall::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MemberNode, RaftError<NodeId>>> {
        self.call(
            PeerCall::Vote,
            &rpc,
            option.hard_ttl().min(PEER_RPC_TIMEOUT),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failed_call_waits_out_the_backoff() {
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::Internal,
            tonic::Code::Unknown,
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
        ] {
            let error = rpc_error::<openraft::error::Infallible>(&Status::new(code, "refused"));
            assert!(
                matches!(error, RPCError::Unreachable(_)),
                "{code:?} would be retried at once"
            );
        }
    }
}
