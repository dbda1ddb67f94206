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
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

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
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerNetwork {
    group: GroupId,
    target: NodeId,
    client: Result<RaftPeerClient<Channel>, PeerUrlError>,
    log_durable: watch::Receiver<u64>,
}

/// Which peer RPC to call.
#[derive(Clone, Copy)]
enum PeerCall {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &mut self,
        call: PeerCall,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(error) => return Err(RPCError::Unreachable(Unreachable::new(error))),
        };
        let payload = codec::encode(request)
            .map_err(|status| RPCError::Network(NetworkError::new(&status)))?;
        let message = RaftMessage {
            group_id: self.group,
            payload,
        };
        let mut grpc_request = tonic::Request::new(message);
        grpc_request.set_timeout(timeout);
        let reply = match call {
            PeerCall::AppendEntries => client.append_entries(grpc_request).await,
            PeerCall::Vote => client.vote(grpc_request).await,
            PeerCall::InstallSnapshot => client.install_snapshot(grpc_request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = codec::decode(&reply.into_inner().payload)
            .map_err(|status| RPCError::Network(NetworkError::new(&status)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
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
