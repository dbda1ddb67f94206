//! `lock`: acquire a lock and release it, per operation, through etcd's Lock
//! service.
//!
//! A lock is held under a lease, as `etcdctl lock` holds it under its session's
//! lease: each client is granted one lease at setup, kept alive for the whole run
//! by one background stream, and revoked at the end. An operation is then exactly
//! Lock + Unlock.

use std::time::Duration;

use futures::future::join_all;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use synod_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};
use synod_proto::v3lockpb::lock_client::LockClient;
use synod_proto::v3lockpb::{LockRequest, UnlockRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::Outcome;
use crate::connect::Connections;
use crate::error::{describe_status, BenchError};

/// TTL of each client's lock lease: short, so that a benchmark that dies leaves no
/// lock held for long.
pub const LOCK_LEASE_TTL_SECONDS: i64 = 10;

/// How often the leases are renewed: a third of their TTL, as etcd's clients do.
pub const KEEP_ALIVE_PERIOD: Duration = Duration::from_millis(10_000 / 3);

/// One client's lock loop state.
#[derive(Debug)]
pub struct Lock {
    lock: LockClient<Channel>,
    name: Vec<u8>,
    lease: i64,
}

impl Lock {
    /// Locks `name` under `lease` through `lock`.
    pub fn new(lock: LockClient<Channel>, name: Vec<u8>, lease: i64) -> Lock {
        Lock { lock, name, lease }
    }

    /// Acquires the lock (waiting its turn), then releases it.
    pub async fn run(&mut self) -> Result<Outcome, tonic::Status> {
        let held = self
            .lock
            .lock(LockRequest {
                name: self.name.clone(),
                lease: self.lease,
            })
            .await?
            .into_inner();
        self.lock.unlock(UnlockRequest { key: held.key }).await?;
        Ok(Outcome::Done)
    }
}

/// The leases the lock clients hold their locks under, and the task that keeps
/// them alive.
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: LeaseClient<Channel>,
    ids: Vec<i64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), String>>,
}

impl LeaseKeeper {
    /// Grants `count` leases (spread over the connections) and starts renewing them.
    pub async fn start(connections: &Connections, count: usize) -> Result<Self, BenchError> {
        let grants = (0..count).map(|index| {
            let mut client = LeaseClient::new(connections.for_client(index));
            async move {
                client
                    .lease_grant(LeaseGrantRequest {
                        ttl: LOCK_LEASE_TTL_SECONDS,
                        id: 0,
                    })
                    .await
            }
        });
        let mut ids = Vec::with_capacity(count);
        let mut failure = None;
        for granted in join_all(grants).await {
            match granted {
                Ok(response) => ids.push(response.into_inner().id),
                Err(status) => failure = Some(describe_status(&status)),
            }
        }
        let lease = LeaseClient::new(connections.for_client(0));
        if let Some(reason) = failure {
            revoke_all(&lease, &ids).await;
            return Err(BenchError::Setup {
                what: "granting the lock leases".into(),
                reason,
            });
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep_alive(lease.clone(), ids.clone(), stopped));
        Ok(LeaseKeeper {
            lease,
            ids,
            stop,
            task,
        })
    }

    /// The lease of client `index`.
    pub fn lease_of(&self, index: usize) -> i64 {
        self.ids.get(index).copied().unwrap_or(0)
    }

    /// Stops renewing, revokes every lease, and returns why renewing failed, if it
    /// did (the run's lock errors then have that cause).
    pub async fn finish(self) -> Option<String> {
        let _ = self.stop.send(());
        let outcome = match self.task.await {
            Ok(outcome) => outcome.err(),
            Err(error) => Some(format!("lease keep-alive task failed: {error}")),
        };
        revoke_all(&self.lease, &self.ids).await;
        outcome
    }
}

/// Renews `ids` every [`KEEP_ALIVE_PERIOD`] over one LeaseKeepAlive stream until
/// `stopped` fires.
async fn keep_alive(
    mut lease: LeaseClient<Channel>,
    ids: Vec<i64>,
    mut stopped: oneshot::Receiver<()>,
) -> Result<(), String> {
    // One round of renewals fits in the queue, so sending never waits on the server.
    let (requests, queue) = mpsc::channel(ids.len().max(1));
    // The first round is queued before the call: a gRPC-Go server (etcd) sends the
    // response headers, which the call waits for, only with its first response.
    for id in &ids {
        if requests
            .try_send(LeaseKeepAliveRequest { id: *id })
            .is_err()
        {
            return Err("lease keep-alive: the request queue is full".into());
        }
    }
    let mut responses = lease
        .lease_keep_alive(ReceiverStream::new(queue))
        .await
        .map_err(|status| format!("lease keep-alive: {}", describe_status(&status)))?
        .into_inner();
    let mut ticks = tokio::time::interval(KEEP_ALIVE_PERIOD);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            _ = ticks.tick() => {
                for id in &ids {
                    if requests.send(LeaseKeepAliveRequest { id: *id }).await.is_err() {
                        return Err("lease keep-alive: the request stream closed".into());
                    }
                }
            }
            response = responses.message() => match response {
                Ok(Some(response)) if response.ttl <= 0 => {
                    return Err(format!(
                        "lease keep-alive: lease {:x} expired; its client's locks fail",
                        response.id
                    ));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("lease keep-alive: the server ended the stream".into()),
                Err(status) => {
                    return Err(format!("lease keep-alive: {}", describe_status(&status)));
                }
            },
        }
    }
}

/// Revokes `ids`, ignoring failures: they expire on their own within their TTL.
async fn revoke_all(lease: &LeaseClient<Channel>, ids: &[i64]) {
    let revokes = ids.iter().map(|id| {
        let mut lease = lease.clone();
        let id = *id;
        async move { lease.lease_revoke(LeaseRevokeRequest { id }).await }
    });
    let _ = join_all(revokes).await;
}
