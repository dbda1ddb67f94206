//! The etcd Maintenance service: node status and alarms.

use std::sync::Arc;

use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::maintenance_server::Maintenance;
use synod_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use synod_storage::DATABASE_FILE;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::error::{unimplemented, ApiError};
use crate::node::Node;

/// The etcd API version synod implements, reported by Status.
pub const ETCD_API_VERSION: &str = "3.5.0";

/// Serves the Maintenance service of one node.
pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    /// The Maintenance service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Hashes this member's store (as applied here, without a read barrier: the
    /// point is to compare replicas).
    async fn hash_kv_at(&self, revision: i64) -> Result<(u32, i64, i64), ApiError> {
        let reader = self.node.reader.clone();
        tokio::task::spawn_blocking(move || reader.hash_kv(revision))
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(ApiError::from)
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let request = request.into_inner();
        if request.action != AlarmAction::Get as i32 {
            return Err(unimplemented("Maintenance.Alarm (activate, deactivate)"));
        }
        let revision = self.node.revision();
        // No alarm can be raised yet (there is no space quota), so the list is empty.
        Ok(Response::new(AlarmResponse {
            header: Some(self.node.header(revision)),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let revision = self.node.revision();
        let metrics = self.node.raft.metrics().borrow().clone();
        let db_size = std::fs::metadata(self.node.data_dir.join(DATABASE_FILE))
            .map(|metadata| i64::try_from(metadata.len()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let is_learner = !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.node.member.id);
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(revision)),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: metrics.current_leader.unwrap_or_default(),
            raft_index: metrics.last_log_index.unwrap_or_default(),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(unimplemented("Maintenance.Defragment"))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (hash, revision, _) = self.hash_kv_at(0).await?;
        Ok(Response::new(HashResponse {
            header: Some(self.node.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let (hash, hash_revision, compact_revision) =
            self.hash_kv_at(request.into_inner().revision).await?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(self.node.revision())),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Maintenance.Snapshot"))
    }

    async fn move_leader(
        &self,
        _request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(unimplemented("Maintenance.MoveLeader"))
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("Maintenance.Downgrade"))
    }
}
