//! The etcd Maintenance service: node status, alarms, hashes, defragmentation,
//! backups and leadership transfer.

use std::sync::Arc;

use std::io::Read;
use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::maintenance_server::Maintenance;
use synod_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest,
    DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

use synod_proto::etcdserverpb::ResponseHeader;
use synod_storage::backup::{self, Backup};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::commit::{commit, unexpected};
use super::error::{unimplemented, ApiError};
use crate::disk_guard;
use crate::limits::CLIENT_SNAPSHOT_CHUNK_BYTES;
use crate::node::Node;
use crate::transfer::{self, TransferError};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::command_result::Result as Outcome;

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

    /// Runs blocking storage work off the async threads.
    async fn blocking<T: Send + 'static>(
        work: impl FnOnce() -> Result<T, synod_storage::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| ApiError::Internal(error.to_string()))?
            .map_err(ApiError::from)
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
        if request.action == AlarmAction::Get as i32 {
            self.node.read_barrier().await.map_err(ApiError::from)?;
            let alarms = self.node.reader.alarms().map_err(ApiError::from)?;
            return Ok(Response::new(AlarmResponse {
                header: Some(self.node.header(self.node.revision())),
                alarms,
            }));
        }
        let revision = self.node.revision();
        match commit(&self.node, Op::Alarm(request)).await? {
            Outcome::Alarm(response) => Ok(Response::new(AlarmResponse {
                header: Some(self.node.header(revision)),
                alarms: response.alarms,
            })),
            other => Err(unexpected(&other).into()),
        }
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let revision = self.node.revision();
        let metrics = self.node.raft.metrics().borrow().clone();
        let store = self.node.db.clone();
        let size = Self::blocking(move || store.size()).await?;
        let bytes = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        let errors = self
            .node
            .reader
            .alarms()
            .map_err(ApiError::from)?
            .iter()
            .map(alarm_text)
            .collect();
        let is_learner = !metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == self.node.member.id);
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(revision)),
            version: ETCD_API_VERSION.to_string(),
            // As etcd's: no leader once this member has stopped hearing from it.
            leader: if *self.node.has_leader.borrow() {
                metrics.current_leader.unwrap_or_default()
            } else {
                0
            },
            raft_index: metrics.last_log_index.unwrap_or_default(),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
            errors,
            db_size: bytes(size.file_bytes),
            db_size_in_use: bytes(size.in_use_bytes),
            is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let store = self.node.db.clone();
        // The copy takes about the space in use; refuse rather than fill the disk.
        let measured = store.clone();
        let in_use = Self::blocking(move || measured.size()).await?.in_use_bytes;
        let reserve = self.node.limits.disk_reserve_bytes;
        let free = disk_guard::free_bytes(&self.node.data_dir)
            .map_err(|error| ApiError::Internal(error.to_string()))?;
        if free < in_use.saturating_add(reserve) {
            return Err(ApiError::NoRoomToDefragment {
                needed: in_use,
                free,
                reserve,
            }
            .into());
        }
        let started = std::time::Instant::now();
        let before = store.file_size();
        Self::blocking(move || store.defragment()).await?;
        tracing::info!(
            before,
            after = self.node.db.file_size(),
            took = ?started.elapsed(),
            "defragmented the database"
        );
        Ok(Response::new(DefragmentResponse {
            header: Some(self.node.header(self.node.revision())),
        }))
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
        let (store, group) = (self.node.db.clone(), self.node.group);
        let dir = self.node.data_dir.clone();
        let backup = Self::blocking(move || backup::write(&store, group, &dir)).await?;
        tracing::info!(
            revision = backup.revision,
            bytes = backup.bytes,
            "streaming a backup"
        );
        let header = self.node.header(backup.revision);
        let (sender, receiver) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_backup(backup, header, &sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        transfer::move_leader(&self.node, target)
            .await
            .map_err(|error| match error {
                TransferError::NotLeader => ApiError::NotLeader,
                TransferError::BadTarget(_) => ApiError::BadLeaderTransferee,
                TransferError::Timeout(_) => ApiError::LeaderTransferTimeout,
            })?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.node.header(self.node.revision())),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("Maintenance.Downgrade"))
    }
}

/// Sends `backup` in chunks until it ends or the client goes away.
fn stream_backup(
    mut backup: Backup,
    header: ResponseHeader,
    sender: &mpsc::Sender<Result<SnapshotResponse, Status>>,
) {
    let mut remaining = backup.bytes;
    let mut header = Some(header);
    while remaining > 0 {
        let mut blob = vec![0u8; CLIENT_SNAPSHOT_CHUNK_BYTES.min(remaining as usize)];
        let message = match backup.file.read_exact(&mut blob) {
            Ok(()) => {
                remaining -= blob.len() as u64;
                Ok(SnapshotResponse {
                    header: header.take(),
                    remaining_bytes: remaining,
                    blob,
                    version: ETCD_API_VERSION.to_string(),
                })
            }
            Err(error) => {
                remaining = 0;
                Err(Status::internal(format!(
                    "etcdserver: reading the backup: {error}"
                )))
            }
        };
        if sender.blocking_send(message).is_err() {
            return;
        }
    }
}

/// An alarm as etcd's Status lists it (the protobuf text form of `AlarmMember`).
fn alarm_text(alarm: &synod_proto::etcdserverpb::AlarmMember) -> String {
    let name = synod_proto::etcdserverpb::AlarmType::try_from(alarm.alarm).map_or_else(
        |_| alarm.alarm.to_string(),
        |kind| kind.as_str_name().to_string(),
    );
    format!("memberID:{} alarm:{} ", alarm.member_id, name)
}
