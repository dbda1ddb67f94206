//! Starting and stopping a node: data dir, identity, Raft, and the two gRPC servers
//! (clients and peers).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use openraft::storage::RaftLogStorage;
use openraft::{Raft, SnapshotPolicy};
use synod_proto::etcdserverpb::auth_server::AuthServer;
use synod_proto::etcdserverpb::cluster_server::ClusterServer;
use synod_proto::etcdserverpb::kv_server::KvServer;
use synod_proto::etcdserverpb::lease_server::LeaseServer;
use synod_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use synod_proto::etcdserverpb::watch_server::WatchServer;
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::{Command, MemberAttributes};
use synod_proto::synodpeer::raft_peer_server::RaftPeerServer;
use synod_proto::synodpeer::MembershipRequest;
use synod_proto::v3electionpb::election_server::ElectionServer;
use synod_proto::v3lockpb::lock_server::LockServer;
use synod_storage::mvcc::MvccReader;
use synod_storage::{
    member_attributes, open_database, LogLimits, LogStore, MemberNode, NodeId, StateMachine,
    DATABASE_FILE, LEGACY_LOG_DATABASE_FILE, LOG_DIR,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;

use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::pending::PendingService;
use crate::api::require_leader;
use crate::api::watch::WatchService;
use crate::authority::AuthorityFix;
use crate::config::{ClusterState, ConfigError, ServerConfig};
use crate::deadline::DeadlineLayer;
use crate::disk_guard;
use crate::group::DEFAULT_GROUP;
use crate::identity::{self, Identity, IdentityError};
use crate::join::{self, JoinError};
use crate::lease::LeaseKeeper;
use crate::lease_expiry::run_keeper;
use crate::limits::{
    PEER_MESSAGE_BYTES_MAX, REMOVAL_CHECK_INTERVAL, REPLICATION_ENTRIES_MAX, SHUTDOWN_GRACE,
    SNAPSHOT_CHUNK_BYTES, STREAMS_PER_CONNECTION_MAX,
};
use crate::listener;
use crate::membership;
use crate::node::{MemberInfo, Node};
use crate::raft::network::{PeerClients, PeerNetworkFactory};
use crate::raft::peer_service::PeerService;
use crate::raft::pre_vote;
use crate::receive_budget::{ClientConnection, ReceiveBudgetLayer};
use crate::replicas::Replicas;
use crate::{forward, point_reads, proposal, read_index};

/// Why a node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The flags are inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data dir belongs to someone else.
    #[error("{data_dir}: {source}")]
    Identity {
        /// The data dir.
        data_dir: String,
        /// The mismatch.
        source: IdentityError,
    },
    /// The data dir could not be created or opened.
    #[error("cannot open data dir {data_dir}: {reason}")]
    DataDir {
        /// The data dir.
        data_dir: String,
        /// What failed.
        reason: String,
    },
    /// A listen address is taken or not local.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// This member was removed from the cluster (MemberRemove), so it stops, as etcd
    /// members do.
    #[error("this member was removed from the cluster; its data dir can no longer be used to rejoin, start a fresh member with member add")]
    Removed,
    /// Raft stopped on an error (its log or store could not be written, say,
    /// because the disk is full). The member exits rather than answer "server
    /// stopped" for ever, so that a supervisor restarts it.
    #[error("raft stopped on an error, so this member stops too (restart it once the cause is mended): {0}")]
    RaftFailed(String),
    /// A new member could not join the running cluster.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// Raft failed to start or stopped with an error.
    #[error("raft: {0}")]
    Raft(String),
    /// A gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn raft_config(config: &ServerConfig) -> Result<openraft::Config, ServerError> {
    let election_ms = u64::try_from(config.election_timeout.as_millis()).unwrap_or(u64::MAX);
    openraft::Config {
        cluster_name: config.cluster_token.clone(),
        heartbeat_interval: u64::try_from(config.heartbeat_interval.as_millis())
            .unwrap_or(u64::MAX),
        election_timeout_min: election_ms,
        election_timeout_max: election_ms.saturating_mul(2),
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        max_in_snapshot_log_to_keep: config.snapshot_catchup_entries,
        max_payload_entries: REPLICATION_ENTRIES_MAX,
        // Elections start from `pre_vote::run`, after a pre-vote.
        enable_elect: false,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    }
    .validate()
    .map_err(|error| ServerError::Raft(error.to_string()))
}

fn bind(addresses: &[SocketAddr]) -> Result<Vec<TcpListener>, ServerError> {
    addresses
        .iter()
        .map(|address| {
            listener::bind(*address).map_err(|source| ServerError::Listen {
                address: *address,
                source,
            })
        })
        .collect()
}

/// Runs a node until `shutdown` completes, then stops it cleanly: servers stop
/// accepting, in-flight requests finish, Raft shuts down.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    config.validate()?;
    if config.unsafe_skip_read_index {
        tracing::warn!(
            "--unsafe-skip-read-index: linearizable reads skip the read index and can be stale"
        );
    }
    let data_dir_error = |reason: String| ServerError::DataDir {
        data_dir: config.data_dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|error| data_dir_error(error.to_string()))?;
    if config.data_dir.join(LEGACY_LOG_DATABASE_FILE).exists() {
        return Err(data_dir_error(format!(
            "it holds a Raft log ({LEGACY_LOG_DATABASE_FILE}) in the format of an earlier synod; \
             save a backup with that version (synod snapshot save) and restore it into a new data dir"
        )));
    }
    let db = open_database(
        &config.data_dir.join(DATABASE_FILE),
        config.backend_cache_bytes,
    )
    .map_err(|error| data_dir_error(error.to_string()))?;

    let members: BTreeMap<NodeId, MemberNode> = config
        .initial_cluster
        .iter()
        .map(|(name, urls)| {
            (
                identity::member_id(urls, &config.cluster_token),
                MemberNode {
                    name: name.clone(),
                    peer_urls: urls.clone(),
                },
            )
        })
        .collect();
    let member_ids: Vec<NodeId> = members.keys().copied().collect();
    let expected = Identity {
        cluster_id: identity::cluster_id(&member_ids, &config.cluster_token),
        member_id: identity::member_id(&config.advertise_peer_urls, &config.cluster_token),
    };
    let stored = identity::stored(&db).map_err(|error| data_dir_error(error.to_string()))?;
    let identity_error = |source| ServerError::Identity {
        data_dir: config.data_dir.display().to_string(),
        source,
    };
    // A new cluster's ids follow from the flags; a member that joined later has the
    // id MemberAdd gave it, kept in its data dir (or learnt from its peers now).
    let expected = match (config.cluster_state, stored) {
        (ClusterState::New, _) => identity::claim(&db, expected).map_err(identity_error)?,
        (ClusterState::Existing, Some(stored)) => stored,
        (ClusterState::Existing, None) => {
            let joined = join::discover(&config).await?;
            identity::claim(&db, joined).map_err(identity_error)?
        }
    };

    // Bind before starting Raft, so a taken port fails the start instead of leaving
    // a half-running member.
    let client_listeners = bind(&config.listen_client)?;
    let peer_listeners = bind(&config.listen_peer)?;

    let peers = PeerClients::new(config.peer_source_address);
    let mut log_store = LogStore::open(
        &config
            .data_dir
            .join(LOG_DIR)
            .join(format!("group-{DEFAULT_GROUP}")),
        LogLimits::default(),
    )
    .and_then(|log_store| log_store.pipeline_leader_appends(expected.member_id))
    .map_err(|error| data_dir_error(error.to_string()))?;
    let log_durable = log_store.durable();
    let state_machine = StateMachine::new(
        db.clone(),
        DEFAULT_GROUP,
        config
            .data_dir
            .join("snapshots")
            .join(format!("group-{DEFAULT_GROUP}")),
    )
    .map_err(|error| data_dir_error(error.to_string()))?
    .wait_for_log(log_durable.clone());
    let applied = state_machine.subscribe();
    let recovered_log_index = log_store
        .get_log_state()
        .await
        .map_err(|error| data_dir_error(error.to_string()))?
        .last_log_id
        .map_or(0, |log_id| log_id.index);
    let raft = Raft::new(
        expected.member_id,
        Arc::new(raft_config(&config)?),
        PeerNetworkFactory::new(DEFAULT_GROUP, peers.clone(), log_durable),
        log_store.clone(),
        state_machine,
    )
    .await
    .map_err(|error| ServerError::Raft(error.to_string()))?;

    let transfer_gate = Arc::new(tokio::sync::RwLock::new(()));
    let node = Arc::new(Node {
        group: DEFAULT_GROUP,
        member: MemberInfo {
            id: expected.member_id,
            cluster_id: expected.cluster_id,
            name: config.name.clone(),
            client_urls: config.advertise_client_urls.clone(),
            peer_urls: config.advertise_peer_urls.clone(),
        },
        raft: raft.clone(),
        log: log_store,
        has_leader: watch::channel(false).0,
        reader: MvccReader::new(db.clone(), DEFAULT_GROUP),
        db: db.clone(),
        data_dir: config.data_dir.clone(),
        limits: config.limits,
        unsafe_skip_read_index: config.unsafe_skip_read_index,
        peers: peers.clone(),
        leases: LeaseKeeper::default(),
        applied: applied.clone(),
        recovered_log_index,
        proposals: proposal::proposals(raft.clone(), transfer_gate.clone()),
        point_reads: point_reads::point_reads(MvccReader::new(db.clone(), DEFAULT_GROUP)),
        forwards: forward::forwards(
            raft.clone(),
            DEFAULT_GROUP,
            peers.clone(),
            expected.member_id,
        ),
        leader_reads: read_index::leader_reads(
            raft.clone(),
            transfer_gate.clone(),
            recovered_log_index,
        ),
        follower_reads: read_index::follower_reads(
            raft.clone(),
            DEFAULT_GROUP,
            peers.clone(),
            expected.member_id,
        ),
        transfer_gate,
    });

    // Initialize before serving peers: a member that has seen a vote request can no
    // longer be initialized, and every member of a new cluster initializes itself
    // with the same membership.
    if config.cluster_state == ClusterState::New
        && !raft
            .is_initialized()
            .await
            .map_err(|error| ServerError::Raft(error.to_string()))?
    {
        raft.initialize(members)
            .await
            .map_err(|error| ServerError::Raft(error.to_string()))?;
    }

    let (stop_sender, stop) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for listener in client_listeners {
        tasks.spawn(serve_clients(
            node.clone(),
            listener,
            config.watch_progress_notify_interval,
            stop.clone(),
        ));
    }
    for listener in peer_listeners {
        tasks.spawn(serve_peers(node.clone(), listener, stop.clone()));
    }
    tasks.spawn(keep_leases(node.clone(), applied, stop.clone()));
    let timer = node.clone();
    let pre_vote = config.pre_vote;
    tasks.spawn(until_stopped(
        async move { pre_vote::run(&timer, pre_vote).await },
        stop.clone(),
    ));
    let promoter = node.clone();
    tasks.spawn(until_stopped(
        async move { membership::promote_added_voters(&promoter).await },
        stop.clone(),
    ));
    tasks.spawn(publish_attributes(node.clone(), stop.clone()));
    tasks.spawn(stop_when_removed(node.clone(), stop.clone()));
    tasks.spawn(stop_when_raft_fails(node.clone(), stop.clone()));
    let guard = disk_guard::run(
        node.clone(),
        config.data_dir.clone(),
        config.limits.disk_reserve_bytes,
    );
    tasks.spawn(until_stopped(guard, stop.clone()));
    tracing::info!(
        name = %config.name,
        member_id = format_args!("{:x}", expected.member_id),
        cluster_id = format_args!("{:x}", expected.cluster_id),
        clients = ?config.listen_client,
        peers = ?config.listen_peer,
        "synod member started"
    );

    let mut failure = None;
    tokio::select! {
        () = shutdown => tracing::info!("shutting down"),
        Some(result) = tasks.join_next() => {
            failure = Some(match result {
                Ok(Ok(())) => ServerError::Raft("a server task ended unexpectedly".into()),
                Ok(Err(error)) => error,
                Err(error) => ServerError::Raft(error.to_string()),
            });
        }
    }
    let _ = stop_sender.send(true);
    // Requests in flight get a moment to finish; streams that never end on their
    // own (watches, keep-alives, observers) are then cut.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = tasks.join_next().await {
            if let Ok(Err(error)) = result {
                tracing::warn!(%error, "server task failed during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::info!("closing client streams still open after {SHUTDOWN_GRACE:?}");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    let raft_stopped = raft.shutdown().await;
    tracing::info!("synod member stopped");
    match failure {
        Some(error) => Err(error),
        None => raft_stopped.map_err(|error| ServerError::Raft(error.to_string())),
    }
}

async fn keep_leases(
    node: Arc<Node>,
    applied: watch::Receiver<synod_storage::Applied>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    run_keeper(node, applied, stop.clone()).await;
    stopped(stop).await;
    Ok(())
}

/// Runs `work` until it ends or the member stops, then waits for the stop: a task
/// of the set ends early only on failure.
async fn until_stopped(
    work: impl Future<Output = ()>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    tokio::select! {
        () = work => {}
        () = stopped(stop.clone()) => {}
    }
    stopped(stop).await;
    Ok(())
}

/// Whether a peer has applied a newer membership that leaves this member out. A
/// removed follower may never see the entry that removes it committed (the leader
/// stops replicating to it), so it asks.
async fn removed_per_peers(node: &Node) -> bool {
    let metrics = node.raft.metrics().borrow().clone();
    let own_index = metrics
        .membership_config
        .log_id()
        .map_or(0, |log_id| log_id.index);
    let peers: Vec<MemberNode> = metrics
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != node.member.id)
        .map(|(_, peer)| peer.clone())
        .collect();
    for peer in peers {
        let Ok(mut client) = node.peers.for_node(&peer) else {
            continue;
        };
        let mut request = tonic::Request::new(MembershipRequest {
            group_id: node.group,
        });
        request.set_timeout(Duration::from_secs(1));
        let Ok(response) = client.membership(request).await else {
            continue;
        };
        let response = response.into_inner();
        if response.config_applied
            && response.config_index > own_index
            && response
                .members
                .iter()
                .all(|member| member.id != node.member.id)
        {
            return true;
        }
    }
    false
}

/// Ends with [`ServerError::Removed`] once an applied membership no longer lists
/// this member, after one that did (a joining member first replays older
/// memberships without itself), or once a peer has applied such a membership.
async fn stop_when_removed(
    node: Arc<Node>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    // Raft's server metrics change only with the vote, the role, the leader or
    // the membership; its full metrics change on every append and would wake this
    // task several times per log entry.
    let mut server = node.raft.server_metrics();
    let mut applied = node.applied.clone();
    let mut was_member = false;
    let mut ask_peers = tokio::time::interval(REMOVAL_CHECK_INTERVAL);
    let removed = async {
        loop {
            let config = server.borrow_and_update().membership_config.clone();
            let applied_index = applied.borrow_and_update().log_index;
            let config_index = config.log_id().map(|log_id| log_id.index);
            let config_applied = config_index.is_some_and(|index| index <= applied_index);
            if config_applied {
                let listed = config.membership().get_node(&node.member.id).is_some();
                if listed {
                    was_member = true;
                } else if was_member {
                    return;
                }
            }
            tokio::select! {
                changed = server.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                // Only while the latest membership waits to be applied.
                changed = applied.changed(), if config_index.is_some() && !config_applied => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ = ask_peers.tick() => {
                    if was_member && removed_per_peers(&node).await {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = removed => {
            tracing::warn!("this member was removed from the cluster; stopping");
            Err(ServerError::Removed)
        }
        () = stopped(stop) => Ok(()),
    }
}

/// Ends with [`ServerError::RaftFailed`] if Raft stops while the member runs.
/// Raft's server metrics close when its core task ends; until shutdown, that only
/// happens on a fatal error.
async fn stop_when_raft_fails(
    node: Arc<Node>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut server = node.raft.server_metrics();
    let ended = async { while server.changed().await.is_ok() {} };
    tokio::select! {
        () = ended => {
            let reason = match &node.raft.metrics().borrow().running_state {
                Err(fatal) => fatal.to_string(),
                Ok(()) => "its task ended".to_string(),
            };
            tracing::error!(%reason, "raft stopped; this member stops too");
            Err(ServerError::RaftFailed(reason))
        }
        () = stopped(stop) => Ok(()),
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn serve_clients(
    node: Arc<Node>,
    listener: TcpListener,
    progress_interval: Duration,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let message_max = node.limits.message_bytes_max();
    let leader = || require_leader::interceptor(node.clone());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .layer(ReceiveBudgetLayer::new(message_max))
        .layer(DeadlineLayer)
        .add_service(InterceptedService::new(
            KvServer::new(KvService::new(node.clone())).max_decoding_message_size(message_max),
            leader(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(ClusterService::new(node.clone()))
                .max_decoding_message_size(message_max),
            leader(),
        ))
        .add_service(InterceptedService::new(
            MaintenanceServer::new(MaintenanceService::new(node.clone()))
                .max_decoding_message_size(message_max),
            leader(),
        ))
        .add_service(InterceptedService::new(
            WatchServer::new(WatchService::new(node.clone(), progress_interval))
                .max_decoding_message_size(message_max),
            leader(),
        ))
        .add_service(InterceptedService::new(
            LeaseServer::new(LeaseService::new(node.clone()))
                .max_decoding_message_size(message_max),
            leader(),
        ))
        .add_service(AuthServer::new(PendingService).max_decoding_message_size(message_max))
        .add_service(InterceptedService::new(
            LockServer::new(LockService::new(node.clone())).max_decoding_message_size(message_max),
            leader(),
        ))
        .add_service(InterceptedService::new(
            ElectionServer::new(ElectionService::new(node.clone()))
                .max_decoding_message_size(message_max),
            leader(),
        ))
        .serve_with_incoming_shutdown(
            listener::accept(listener).map_ok(move |stream| {
                ClientConnection::new(AuthorityFix::new(stream), message_max)
            }),
            stopped(stop),
        )
        .await?;
    Ok(())
}

async fn serve_peers(
    node: Arc<Node>,
    listener: TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    tonic::transport::Server::builder()
        .add_service(
            RaftPeerServer::new(PeerService::new(
                node.member.clone(),
                Arc::new(Replicas::new([node])),
            ))
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(listener::accept(listener), stopped(stop))
        .await?;
    Ok(())
}

/// Publishes this member's name and client URLs through the log (once they differ
/// from what the cluster knows), retrying until a leader takes them.
async fn publish_attributes(
    node: Arc<Node>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let attributes = MemberAttributes {
        member_id: node.member.id,
        name: node.member.name.clone(),
        client_urls: node.member.client_urls.clone(),
        voter: false,
    };
    let publish = async {
        loop {
            let known = member_attributes(&node.db, node.group)
                .map(|all| {
                    all.iter().any(|stored| {
                        stored.member_id == attributes.member_id
                            && stored.name == attributes.name
                            && stored.client_urls == attributes.client_urls
                    })
                })
                .unwrap_or(false);
            if known {
                return;
            }
            let command = Command {
                op: Some(Op::MemberAttributes(attributes.clone())),
            };
            match node.propose(command).await {
                Ok(_) => return,
                Err(error) => {
                    tracing::debug!(%error, "publishing member attributes; will retry");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    };
    tokio::select! {
        () = publish => {}
        () = stopped(stop.clone()) => return Ok(()),
    }
    // Stay alive until shutdown so the task set only ends early on failure.
    stopped(stop).await;
    Ok(())
}
