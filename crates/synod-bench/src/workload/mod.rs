//! The workloads: what one client does per operation, one module per workload, and
//! the setup that builds every client's state before the clock starts.

pub mod get;
pub mod lease;
pub mod lock;
pub mod put;
pub mod txn_cas;
pub mod watch_latency;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use synod_proto::etcdserverpb::kv_client::KvClient;
use synod_proto::etcdserverpb::lease_client::LeaseClient;
use synod_proto::v3lockpb::lock_client::LockClient;

use crate::args::{LockMode, Plan, Workload};
use crate::connect::Connections;
use crate::error::BenchError;
use crate::keys::{random_value, KeySpace};

/// How an answered operation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it asked.
    Done,
    /// It was answered, but its condition did not hold (a compare-and-swap that lost
    /// a race).
    ConditionFailed,
}

/// One client's state for its workload. An enum rather than a trait object keeps
/// the per-operation dispatch a match and the futures `Send` without boxing.
#[derive(Debug)]
pub enum Op {
    /// `put`, and the writers of `watch-latency`.
    Put(put::Put),
    /// `get-lin` and `get-ser`.
    Get(get::Get),
    /// `txn-cas`.
    TxnCas(txn_cas::TxnCas),
    /// `lock`.
    Lock(lock::Lock),
    /// `lease`.
    Lease(lease::Lease),
}

impl Op {
    /// Runs one operation.
    pub async fn run(&mut self) -> Result<Outcome, tonic::Status> {
        match self {
            Op::Put(op) => op.run().await,
            Op::Get(op) => op.run().await,
            Op::TxnCas(op) => op.run().await,
            Op::Lock(op) => op.run().await,
            Op::Lease(op) => op.run().await,
        }
    }
}

/// Everything a run needs before measuring: each client's state, and what runs
/// beside the clients.
#[derive(Debug)]
pub struct Setup {
    /// One per client.
    pub ops: Vec<Op>,
    /// watch-latency's watchers, already created.
    pub watchers: Vec<watch_latency::Watcher>,
    /// lock's leases, being kept alive.
    pub leases: Option<lock::LeaseKeeper>,
}

/// Builds each client's state for `plan`; values are generated here, once, so the
/// operations themselves only copy them. `epoch` is the clock origin of the
/// watch-latency timestamps.
pub async fn setup(
    plan: &Plan,
    connections: &Connections,
    epoch: Instant,
) -> Result<Setup, BenchError> {
    let args = &plan.args;
    let clients = args.clients;
    let mut seeds = rand::rng();
    let mut rng = move || StdRng::from_rng(&mut seeds);
    let keys = KeySpace::new(&args.key_prefix, args.key_space);
    let kv = |index: usize| KvClient::new(connections.for_client(index));
    let mut setup = Setup {
        ops: Vec::with_capacity(clients),
        watchers: Vec::new(),
        leases: None,
    };
    match args.workload {
        Workload::Put => {
            let order = if args.sequential_keys {
                put::KeyOrder::Sequential(Arc::new(AtomicU64::new(0)))
            } else {
                put::KeyOrder::Random
            };
            for index in 0..clients {
                let mut rng = rng();
                let value = random_value(args.value_size, &mut rng);
                setup.ops.push(Op::Put(put::Put::new(
                    kv(index),
                    keys.clone(),
                    value,
                    order.clone(),
                    None,
                    rng,
                )));
            }
        }
        Workload::GetLin | Workload::GetSer => {
            let serializable = args.workload == Workload::GetSer;
            for index in 0..clients {
                setup.ops.push(Op::Get(get::Get::new(
                    kv(index),
                    keys.clone(),
                    serializable,
                    rng(),
                )));
            }
        }
        Workload::TxnCas => {
            for index in 0..clients {
                let mut rng = rng();
                let value = random_value(args.value_size, &mut rng);
                setup.ops.push(Op::TxnCas(txn_cas::TxnCas::new(
                    kv(index),
                    keys.clone(),
                    value,
                    rng,
                )));
            }
        }
        Workload::Lock => {
            let leases = lock::LeaseKeeper::start(connections, clients).await?;
            for index in 0..clients {
                let name = match args.lock_mode {
                    LockMode::PerClient => format!("{}lock/{index}", args.key_prefix),
                    LockMode::Shared => format!("{}lock/shared", args.key_prefix),
                };
                setup.ops.push(Op::Lock(lock::Lock::new(
                    LockClient::new(connections.for_client(index)),
                    name.into_bytes(),
                    leases.lease_of(index),
                )));
            }
            setup.leases = Some(leases);
        }
        Workload::Lease => {
            for index in 0..clients {
                setup.ops.push(Op::Lease(lease::Lease::new(LeaseClient::new(
                    connections.for_client(index),
                ))));
            }
        }
        Workload::WatchLatency => {
            let prefix = format!("{}{}", args.key_prefix, watch_latency::WATCH_KEYS_PREFIX);
            let watch_keys = KeySpace::new(&prefix, args.key_space);
            for index in 0..args.watchers {
                // Watchers take the connections after the clients' first ones, so a
                // watcher does not share a connection with the first writer.
                let channel = connections.for_client(clients + index);
                setup
                    .watchers
                    .push(watch_latency::Watcher::open(channel, watch_keys.prefix()).await?);
            }
            for index in 0..clients {
                let mut rng = rng();
                let value = random_value(args.value_size, &mut rng);
                setup.ops.push(Op::Put(put::Put::new(
                    kv(index),
                    watch_keys.clone(),
                    value,
                    put::KeyOrder::Random,
                    Some(epoch),
                    rng,
                )));
            }
        }
    }
    Ok(setup)
}
