//! Fault injection for synod: drives real `synod` processes through crashes,
//! pauses, partitions and membership changes while a recorded workload runs, then
//! checks the recordings with `synod-check`.
//!
//! The pieces, each in its own module:
//!
//! - [`Cluster`]: real processes on free loopback ports (start, SIGKILL, SIGSTOP,
//!   restart, membership changes through the etcd Cluster API), optionally behind
//!   a [`PeerProxy`] that can cut peer links both ways or one way;
//! - [`FaultSchedule`]: a seeded plan of fault steps; [`faults`] plays a step and
//!   heals the cluster after it;
//! - [`Workload`]: concurrent clients and watchers recording what they saw;
//! - [`run()`]: all of it together, as the `fault_schedule` tests and the
//!   `synod-soak` command run it.
//!
//! The binary under test is always the caller's: tests pass
//! `env!("CARGO_BIN_EXE_synod")`, the soak command a path from its flags. Every
//! wait is bounded by a deadline, every process started is stopped when its
//! [`Cluster`] is dropped, and only loopback addresses are used.

pub mod checks;
pub mod client;
pub mod cluster;
pub mod error;
pub mod faults;
pub mod history;
pub mod member;
pub mod ports;
pub mod proxy;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod seed;
pub mod workload;

pub use client::{connect, patient_client, quick_client};
pub use cluster::status::MemberStatus;
pub use cluster::{Cluster, READY_TIMEOUT};
pub use error::HarnessError;
pub use member::Member;
pub use ports::free_port;
pub use proxy::{member_source_address, PeerProxy};
pub use rng::SeededRng;
pub use run::{run, AppliedFault, RunFailure, RunOptions, RunReport, FAULT_RUN_SERVE_ARGS};
pub use schedule::{FaultKind, FaultSchedule, FaultStep, ScheduleOptions};
pub use seed::{replay_test_command, seed_from_env, SEED_VARIABLE};
pub use workload::{Workload, WorkloadOptions};
