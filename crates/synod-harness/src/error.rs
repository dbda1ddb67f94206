//! What can go wrong while driving a cluster: the harness's own failures (a process
//! that cannot start, a cluster that does not recover in time), kept apart from the
//! checkers' verdicts on what the cluster did (see [`crate::run::RunFailure`]).

use std::path::PathBuf;
use std::time::Duration;

/// A failure of the harness or of the cluster it drives.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No loopback port or directory could be had.
    #[error("cannot set up the cluster: {what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A member's process could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A member was started twice.
    #[error("member {index} is already running")]
    AlreadyRunning {
        /// The member.
        index: usize,
    },
    /// A member the harness refers to does not exist.
    #[error("no member {index}")]
    NoSuchMember {
        /// The member.
        index: usize,
    },
    /// A signal could not be delivered.
    #[error("cannot send {signal} to member {index}: {source}")]
    Signal {
        /// The member.
        index: usize,
        /// The signal.
        signal: String,
        /// The underlying error.
        source: nix::Error,
    },
    /// A member's process exited while the harness expected it to run.
    #[error(
        "member {index} exited on its own ({status}): nothing in a run stops a live member, so \
         it crashed or something outside the harness signalled it; the tail of its log:\n\
         {log_tail}"
    )]
    Exited {
        /// The member.
        index: usize,
        /// How it exited.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// Something the harness waits for did not happen within its deadline.
    #[error("{what} within {timeout:?}{}", detail_suffix(.detail))]
    Timeout {
        /// What did not happen.
        what: String,
        /// How long the harness waited.
        timeout: Duration,
        /// The last error seen, if any.
        detail: String,
    },
    /// A request failed where the harness needs it to succeed.
    #[error("{what}: {source}")]
    Request {
        /// The request.
        what: String,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// An answer that does not make sense (a response without a header, a value
    /// that is not UTF-8).
    #[error("{0}")]
    Malformed(String),
    /// The cluster was not started behind a peer proxy, or has too many members
    /// for one.
    #[error("{0}")]
    Proxy(String),
    /// Members hash their stores differently at the same revision.
    #[error("replicas disagree at revision {revision}: (member, hash) {hashes:?}")]
    ReplicasDisagree {
        /// The revision hashed.
        revision: i64,
        /// Each running member's hash.
        hashes: Vec<(usize, u32)>,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" (last error: {detail})")
    }
}

impl HarnessError {
    /// A [`HarnessError::Timeout`] with the last error seen.
    pub fn timeout(what: impl Into<String>, timeout: Duration, detail: impl ToString) -> Self {
        HarnessError::Timeout {
            what: what.into(),
            timeout,
            detail: detail.to_string(),
        }
    }

    /// A [`HarnessError::Request`].
    pub fn request(what: impl Into<String>, source: etcd_client::Error) -> Self {
        HarnessError::Request {
            what: what.into(),
            source,
        }
    }
}
