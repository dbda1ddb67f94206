//! The etcd Election service, built as etcd builds it: a candidate's key is
//! `name/<lease id in hex>`, the leader is the candidate with the oldest key, and a
//! candidate campaigns by waiting for every older key to go.

use std::sync::Arc;

use synod_proto::etcdserverpb::request_op::Request as Op;
use synod_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use synod_proto::mvccpb::event::EventType;
use synod_proto::v3electionpb::election_server::Election;
use synod_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::kv::read_range;
use super::lock::{created_at, range_kvs, session_key, session_lease};
use super::recipe::{first_created, txn, wait_deletes, wait_first_put};
use super::require_leader;
use crate::history_cursor::HistoryCursor;
use crate::limits::WATCH_RESPONSES_BUFFERED;
use crate::node::Node;

/// Serves the Election service of one node.
pub struct ElectionService {
    node: Arc<Node>,
}

impl ElectionService {
    /// The Election service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Retracts a campaign that is abandoned while it waits (the client went away).
struct Withdraw {
    node: Arc<Node>,
    leader: Option<LeaderKey>,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(leader) = self.leader.take() {
            let node = self.node.clone();
            tokio::spawn(async move {
                if let Err(error) = resign(&node, &leader).await {
                    tracing::warn!(%error, "could not withdraw an abandoned campaign");
                }
            });
        }
    }
}

async fn campaign(
    node: &Arc<Node>,
    request: CampaignRequest,
) -> Result<CampaignResponse, ApiError> {
    let lease = session_lease(node, request.lease).await?;
    let prefix = prefix_of(&request.name);
    let key = session_key(&prefix, lease);
    let enter = TxnRequest {
        compare: vec![created_at(&key, 0)],
        success: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: key.clone(),
                value: request.value.clone(),
                lease,
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
        }],
    };
    let response = txn(node, enter).await?;
    let mut leader = LeaderKey {
        name: request.name.clone(),
        key: key.clone(),
        rev: response.header.map_or(0, |header| header.revision),
        lease,
    };
    if !response.succeeded {
        let existing = range_kvs(&response.responses, 0);
        let Some(kv) = existing.first() else {
            return Err(ApiError::SessionExpired);
        };
        leader.rev = kv.create_revision;
        if kv.value != request.value {
            proclaim(node, &leader, request.value.clone()).await?;
        }
    }
    let mut withdraw = Withdraw {
        node: node.clone(),
        leader: Some(leader.clone()),
    };
    wait_deletes(node, &prefix, leader.rev - 1).await?;
    withdraw.leader = None;
    Ok(CampaignResponse {
        header: response.header,
        leader: Some(leader),
    })
}

async fn proclaim(
    node: &Node,
    leader: &LeaderKey,
    value: Vec<u8>,
) -> Result<ProclaimResponse, ApiError> {
    let update = TxnRequest {
        compare: vec![created_at(&leader.key, leader.rev)],
        success: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: leader.key.clone(),
                value,
                ignore_lease: true,
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    };
    let response = txn(node, update).await?;
    if !response.succeeded {
        return Err(ApiError::NotElectionLeader);
    }
    Ok(ProclaimResponse {
        header: response.header,
    })
}

async fn resign(node: &Node, leader: &LeaderKey) -> Result<ResignResponse, ApiError> {
    let retire = TxnRequest {
        compare: vec![created_at(&leader.key, leader.rev)],
        success: vec![RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: leader.key.clone(),
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    };
    let response = txn(node, retire).await?;
    Ok(ResignResponse {
        header: response.header,
    })
}

async fn current_leader(node: &Node, name: &[u8]) -> Result<LeaderResponse, ApiError> {
    let response = read_range(node, first_created(&prefix_of(name))).await?;
    let Some(kv) = response.kvs.into_iter().next() else {
        return Err(ApiError::NoElectionLeader);
    };
    Ok(LeaderResponse {
        header: response.header,
        kv: Some(kv),
    })
}

/// Streams the election's leader: the current one, each value it proclaims, and
/// each successor, until the client goes away.
async fn observe(
    node: Arc<Node>,
    name: Vec<u8>,
    sender: mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), ApiError> {
    let prefix = prefix_of(&name);
    loop {
        let response = read_range(&node, first_created(&prefix)).await?;
        let mut revision = response.header.map_or(0, |header| header.revision);
        let leader = match response.kvs.into_iter().next() {
            Some(kv) => kv,
            None => {
                let kv = wait_first_put(&node, &prefix, revision).await?;
                revision = kv.mod_revision;
                kv
            }
        };
        let announce = LeaderResponse {
            header: Some(node.header(revision)),
            kv: Some(leader.clone()),
        };
        if sender.send(Ok(announce)).await.is_err() {
            return Ok(());
        }
        let mut cursor = HistoryCursor::at(revision + 1, false);
        let mut applied = node.applied.clone();
        'following: loop {
            for change in cursor.next(&node.reader, &mut applied).await? {
                let Some(kv) = change.event.kv else {
                    continue;
                };
                if kv.key != leader.key {
                    continue;
                }
                if change.event.r#type == EventType::Delete as i32 {
                    break 'following;
                }
                let update = LeaderResponse {
                    header: Some(node.header(change.revision)),
                    kv: Some(kv),
                };
                if sender.send(Ok(update)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        Ok(Response::new(
            campaign(&self.node, request.into_inner()).await?,
        ))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = request.leader.ok_or(ApiError::MissingLeaderKey)?;
        Ok(Response::new(
            proclaim(&self.node, &leader, request.value).await?,
        ))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        Ok(Response::new(
            current_leader(&self.node, &request.into_inner().name).await?,
        ))
    }

    type ObserveStream = BoxStream<LeaderResponse>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let metadata = request.metadata().clone();
        let name = request.into_inner().name;
        let (sender, receiver) = mpsc::channel(WATCH_RESPONSES_BUFFERED);
        let node = self.node.clone();
        tokio::spawn(async move {
            let failure = sender.clone();
            tokio::select! {
                result = observe(node, name, sender) => {
                    if let Err(error) = result {
                        let _ = failure.send(Err(error.into())).await;
                    }
                }
                () = failure.closed() => {}
            }
        });
        Ok(Response::new(require_leader::guard(
            &self.node,
            &metadata,
            Box::pin(ReceiverStream::new(receiver)),
        )))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = request
            .into_inner()
            .leader
            .ok_or(ApiError::MissingLeaderKey)?;
        Ok(Response::new(resign(&self.node, &leader).await?))
    }
}
