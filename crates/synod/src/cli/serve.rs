//! `synod serve`: etcd's bootstrap flags, resolved into a server configuration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use synod_server::config::{
    parse_cluster_state, parse_initial_cluster, parse_listen_urls, split_list,
};
use synod_server::{Limits, ServerConfig};
use tracing_subscriber::EnvFilter;

/// Flags of `synod serve`, named as etcd names them.
#[derive(Debug, Args)]
pub struct ServeFlags {
    /// Human-readable name of this member; its key in --initial-cluster.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    name: String,

    /// Directory for the database, Raft log and snapshots.
    #[arg(long, env = "ETCD_DATA_DIR", default_value = "synod-data")]
    data_dir: PathBuf,

    /// URLs to listen on for client traffic (comma-separated).
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    listen_client_urls: String,

    /// Client URLs advertised to the cluster (default: the listen URLs).
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS")]
    advertise_client_urls: Option<String>,

    /// URLs to listen on for peer traffic (comma-separated).
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    listen_peer_urls: String,

    /// Peer URLs advertised to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    initial_advertise_peer_urls: String,

    /// Members at bootstrap: name=peer-url,... (default: this member alone).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,

    /// "new" to bootstrap a cluster, "existing" to restart a member of one.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,

    /// Token that makes this cluster's ids unique among clusters built from the same URLs.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,

    /// Applied entries between two snapshots; the log is purged up to a snapshot.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,

    /// Entries kept in the log behind a snapshot for slow followers to catch up from.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        alias = "experimental-snapshot-catchup-entries",
        default_value_t = 5_000
    )]
    snapshot_catchup_entries: u64,

    /// Time (ms) between leader heartbeats.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,

    /// Time (ms) a follower waits for a heartbeat before it campaigns.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,

    /// Ask the voters before campaigning, so a member that cannot win an election
    /// (say, one cut off from the others) does not raise its term and depose the
    /// leader when it returns (`--pre-vote=false` turns it off).
    #[arg(
        long,
        env = "ETCD_PRE_VOTE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pre_vote: bool,

    /// Largest client request in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    max_request_bytes: usize,

    /// Space quota in bytes: when a write would grow the database past it, writes
    /// stop with the NOSPACE alarm until space is freed (compact, defrag, `alarm
    /// disarm`). 0 means the default (2 GiB); a negative value disables it.
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    quota_backend_bytes: i64,

    /// Free bytes to keep on the data dir's disk (synod's own flag): below them the
    /// member raises the NOSPACE alarm, so writes stop cleanly before the disk
    /// fills, and disarms it once space is back. 0 disables the check.
    #[arg(long, env = "SYNOD_DISK_RESERVE_BYTES", default_value_t = synod_server::limits::DEFAULT_DISK_RESERVE_BYTES)]
    disk_reserve_bytes: u64,

    /// Bytes of the database's page cache (synod's own flag). Reads that miss it
    /// are served from the OS page cache; a bigger cache trades memory for fewer
    /// copies.
    #[arg(long, env = "SYNOD_BACKEND_CACHE_BYTES", default_value_t = synod_storage::DEFAULT_CACHE_BYTES)]
    backend_cache_bytes: usize,

    /// Threads serving requests and running Raft (synod's own flag; default: one
    /// fewer than the cores, at least one). The Raft log's flusher and the
    /// blocking pool (apply, store reads) already keep about a core busy under
    /// load on threads of their own; a worker for every core on top of them only
    /// adds preemptions and wake-ups.
    #[arg(long, env = "SYNOD_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,

    /// Most operations in one transaction branch.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,

    /// How often an idle watcher that asked for progress notifications gets one
    /// (e.g. 10m, 30s, 500ms).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = humantime::parse_duration
    )]
    experimental_watch_progress_notify_interval: Duration,

    /// Local IP address to send peer traffic from (default: chosen by the system).
    #[arg(long, env = "SYNOD_PEER_SOURCE_ADDRESS")]
    peer_source_address: Option<std::net::IpAddr>,

    /// Testing only: make linearizable reads skip the read index, which breaks
    /// linearizability on purpose so tests can show their checker catches it.
    #[arg(long, hide = true)]
    unsafe_skip_read_index: bool,

    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

impl ServeFlags {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let advertise_peer_urls = split_list(&self.initial_advertise_peer_urls);
        let initial_cluster = match &self.initial_cluster {
            Some(value) => parse_initial_cluster(value)?,
            None => parse_initial_cluster(
                &advertise_peer_urls
                    .iter()
                    .map(|url| format!("{}={url}", self.name))
                    .collect::<Vec<_>>()
                    .join(","),
            )?,
        };
        let advertise_client_urls = split_list(
            self.advertise_client_urls
                .as_deref()
                .unwrap_or(&self.listen_client_urls),
        );
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            anyhow::bail!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        if self.snapshot_count == 0 {
            anyhow::bail!("--snapshot-count must be at least 1");
        }
        Ok(ServerConfig {
            listen_client: parse_listen_urls("--listen-client-urls", &self.listen_client_urls)?,
            listen_peer: parse_listen_urls("--listen-peer-urls", &self.listen_peer_urls)?,
            advertise_client_urls,
            advertise_peer_urls,
            initial_cluster,
            cluster_state: parse_cluster_state(&self.initial_cluster_state)?,
            cluster_token: self.initial_cluster_token,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            pre_vote: self.pre_vote,
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            unsafe_skip_read_index: self.unsafe_skip_read_index,
            backend_cache_bytes: self.backend_cache_bytes,
            peer_source_address: self.peer_source_address,
            limits: Limits {
                request_bytes_max: self.max_request_bytes,
                txn_ops_max: self.max_txn_ops,
                lease_ttl_min_seconds: Limits::lease_ttl_min_for(Duration::from_millis(
                    self.election_timeout,
                )),
                backend_quota_bytes: Limits::backend_quota_for(self.quota_backend_bytes),
                disk_reserve_bytes: self.disk_reserve_bytes,
            },
            name: self.name,
            data_dir: self.data_dir,
        })
    }
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},openraft=error")))
        .with_context(|| format!("--log-level {level:?} is not a valid level"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One worker fewer than the cores, at least one (see `--worker-threads`). With
/// three members on two cores, one worker each served 10% more puts at 128 and
/// 512 clients, 12% more serializable gets and 5% more locks at 16 clients than
/// two, with less CPU per operation in every case.
fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cores| cores.get().saturating_sub(1))
        .max(1)
}

/// Runs `synod serve`.
pub fn run(flags: ServeFlags) -> anyhow::Result<()> {
    init_logging(&flags.log_level)?;
    let workers = flags
        .worker_threads
        .map_or_else(default_worker_threads, usize::from);
    let config = flags.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(synod_server::run(config, termination()))?;
    Ok(())
}
