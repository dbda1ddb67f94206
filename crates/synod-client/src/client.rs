//! The client: one gRPC channel balanced over the endpoints, a stub per service.

use std::time::Duration;

use futures::StreamExt;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use synod_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_proto::etcdserverpb::request_op::Request as Op;
use synod_proto::etcdserverpb::watch_client::WatchClient;
use synod_proto::etcdserverpb::watch_request::RequestUnion;
use synod_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, RangeRequest, RangeResponse, RequestOp, SnapshotRequest, SnapshotResponse,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use synod_proto::v3electionpb::election_client::ElectionClient;
use synod_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ResignRequest,
};
use synod_proto::v3lockpb::lock_client::LockClient;
use synod_proto::v3lockpb::{LockRequest, UnlockRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use crate::error::ClientError;
use crate::fence::Fence;

/// A connection to a synod (or etcd) cluster.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
}

fn endpoint(url: &str) -> Result<Endpoint, ClientError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    Endpoint::from_shared(url.clone())
        .map(|endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
        })
        .map_err(|error| ClientError::Endpoint {
            endpoint: url,
            reason: error.to_string(),
        })
}

impl Client {
    /// Connects (lazily) to `endpoints` (`host:port` or `http://host:port`), spreading
    /// requests over them.
    pub fn connect(endpoints: &[String]) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Endpoint {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|url| endpoint(url))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            channel: Channel::balance_list(endpoints.into_iter()),
        })
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    /// Reads `request`.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, ClientError> {
        Ok(unary(|| {
            let mut service = self.kv();
            let request = request.clone();
            async move { service.range(request).await }
        })
        .await?)
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>, ClientError> {
        let response = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(response.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Writes `key`.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<i64, ClientError> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        };
        let response = unary(|| {
            let mut service = self.kv();
            let request = request.clone();
            async move { service.put(request).await }
        })
        .await?;
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// Runs a transaction.
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, ClientError> {
        Ok(unary(|| {
            let mut service = self.kv();
            let request = request.clone();
            async move { service.txn(request).await }
        })
        .await?)
    }

    /// Writes `key` only while `fence` still holds its lock; fails with
    /// [`ClientError::StaleFence`] otherwise. Returns the write's revision.
    pub async fn fenced_put(
        &self,
        fence: &Fence,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<i64, ClientError> {
        let put = RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })),
        };
        let response = self
            .txn(fence.guard(TxnRequest {
                success: vec![put],
                ..Default::default()
            }))
            .await?;
        if !response.succeeded {
            return Err(ClientError::StaleFence {
                key: String::from_utf8_lossy(&fence.key).into_owned(),
                token: fence.token,
            });
        }
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// Deletes `key`; returns how many keys were deleted.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<i64, ClientError> {
        let request = DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        };
        let response = unary(|| {
            let mut service = self.kv();
            let request = request.clone();
            async move { service.delete_range(request).await }
        })
        .await?;
        Ok(response.deleted)
    }

    fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    /// Grants a lease of `ttl` seconds (id chosen by the server when `id` is 0);
    /// returns (id, granted TTL).
    pub async fn lease_grant(&self, ttl: i64, id: i64) -> Result<(i64, i64), ClientError> {
        let request = LeaseGrantRequest { ttl, id };
        let response = unary(|| {
            let mut service = self.lease();
            async move { service.lease_grant(request).await }
        })
        .await?;
        Ok((response.id, response.ttl))
    }

    /// Revokes a lease, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), ClientError> {
        let request = LeaseRevokeRequest { id };
        unary(|| {
            let mut service = self.lease();
            async move { service.lease_revoke(request).await }
        })
        .await?;
        Ok(())
    }

    /// A lease's remaining and granted TTL (TTL -1: no such lease), with its keys.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, ClientError> {
        let request = LeaseTimeToLiveRequest { id, keys };
        Ok(unary(|| {
            let mut service = self.lease();
            async move { service.lease_time_to_live(request).await }
        })
        .await?)
    }

    /// Every lease id.
    pub async fn lease_list(&self) -> Result<Vec<i64>, ClientError> {
        let request = LeaseLeasesRequest {};
        let response = unary(|| {
            let mut service = self.lease();
            async move { service.lease_leases(request).await }
        })
        .await?;
        Ok(response.leases.into_iter().map(|lease| lease.id).collect())
    }

    /// Opens a keep-alive stream for lease `id`.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeeper, ClientError> {
        let (sender, receiver) = mpsc::channel(4);
        let responses = self
            .lease()
            .lease_keep_alive(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        Ok(LeaseKeeper {
            id,
            sender,
            responses,
        })
    }

    fn lock_service(&self) -> LockClient<Channel> {
        LockClient::new(self.channel.clone())
    }

    /// Acquires lock `name` under `lease`, waiting in line, and returns the fence
    /// that proves it.
    pub async fn lock(&self, name: impl Into<Vec<u8>>, lease: i64) -> Result<Fence, ClientError> {
        let request = LockRequest {
            name: name.into(),
            lease,
        };
        let response = unary(|| {
            let mut service = self.lock_service();
            let request = request.clone();
            async move { service.lock(request).await }
        })
        .await?;
        let key = response.key;
        let held = self
            .range(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        let kv = held
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::LockLost(String::from_utf8_lossy(&key).into_owned()))?;
        Ok(Fence {
            key,
            token: kv.create_revision,
        })
    }

    /// Releases a lock.
    pub async fn unlock(&self, fence: &Fence) -> Result<(), ClientError> {
        let request = UnlockRequest {
            key: fence.key.clone(),
        };
        unary(|| {
            let mut service = self.lock_service();
            let request = request.clone();
            async move { service.unlock(request).await }
        })
        .await?;
        Ok(())
    }

    /// Watches `key` (to `range_end`, etcd's convention) from `start_revision`.
    pub async fn watch(
        &self,
        key: impl Into<Vec<u8>>,
        range_end: impl Into<Vec<u8>>,
        start_revision: i64,
        prev_kv: bool,
    ) -> Result<WatchEvents, ClientError> {
        let (sender, receiver) = mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.into(),
                range_end: range_end.into(),
                start_revision,
                prev_kv,
                ..Default::default()
            })),
        };
        sender
            .send(create)
            .await
            .map_err(|_| ClientError::StreamClosed("watch"))?;
        let responses = WatchClient::new(self.channel.clone())
            .watch(ReceiverStream::new(receiver))
            .await?
            .into_inner();
        Ok(WatchEvents {
            _requests: sender,
            responses,
        })
    }

    /// Streams a consistent backup of the store from one member (pass a client
    /// connected to a single endpoint to know which). The stream's blobs,
    /// concatenated, are the backup file.
    pub async fn snapshot(&self) -> Result<Streaming<SnapshotResponse>, ClientError> {
        Ok(unary(|| {
            let mut service = MaintenanceClient::new(self.channel.clone());
            async move { service.snapshot(SnapshotRequest {}).await }
        })
        .await?)
    }

    fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel.clone())
    }

    /// Campaigns in election `name` with `value` under `lease`; returns once elected.
    pub async fn campaign(
        &self,
        name: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<LeaderKey, ClientError> {
        let request = CampaignRequest {
            name: name.into(),
            lease,
            value: value.into(),
        };
        let response = unary(|| {
            let mut service = self.election();
            let request = request.clone();
            async move { service.campaign(request).await }
        })
        .await?;
        response.leader.ok_or(ClientError::StreamClosed("campaign"))
    }

    /// Gives up leadership.
    pub async fn resign(&self, leader: LeaderKey) -> Result<(), ClientError> {
        let request = ResignRequest {
            leader: Some(leader),
        };
        unary(|| {
            let mut service = self.election();
            let request = request.clone();
            async move { service.resign(request).await }
        })
        .await?;
        Ok(())
    }

    /// Follows the leader of election `name`.
    pub async fn observe(
        &self,
        name: impl Into<Vec<u8>>,
    ) -> Result<Streaming<LeaderResponse>, ClientError> {
        Ok(self
            .election()
            .observe(LeaderRequest { name: name.into() })
            .await?
            .into_inner())
    }
}

/// A lease's keep-alive stream.
pub struct LeaseKeeper {
    id: i64,
    sender: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

impl LeaseKeeper {
    /// Renews the lease once; returns its TTL, or 0 if it no longer exists.
    pub async fn keep_alive(&mut self) -> Result<i64, ClientError> {
        self.sender
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| ClientError::StreamClosed("keep-alive"))?;
        match self.responses.next().await {
            Some(response) => Ok(response?.ttl),
            None => Err(ClientError::StreamClosed("keep-alive")),
        }
    }
}

/// The responses of one watch.
pub struct WatchEvents {
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchEvents {
    /// The next response (the first one confirms creation).
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, ClientError> {
        match self.responses.next().await {
            Some(response) => Ok(Some(response?)),
            None => Ok(None),
        }
    }
}

/// How long a call keeps trying endpoints it cannot reach.
const UNREACHABLE_RETRY_TIME: Duration = Duration::from_secs(5);

/// Makes a unary call, retrying while the endpoint it went to could not be reached
/// (the request was never sent, so retrying cannot apply it twice); with several
/// endpoints, a retry goes to a reachable one.
async fn unary<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + UNREACHABLE_RETRY_TIME;
    loop {
        match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if never_sent(&status) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// Whether a call failed before its request left this process.
fn never_sent(status: &tonic::Status) -> bool {
    let message = status.message();
    (status.code() == tonic::Code::Unavailable && message.contains("tcp connect error"))
        || message.starts_with("Service was not ready")
}
