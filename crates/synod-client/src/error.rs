//! The client's error type.

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint was given or one is not a valid URL.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered with an error (its etcd status code and message).
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// A stream ended before the answer arrived.
    #[error("the server closed the {0} stream")]
    StreamClosed(&'static str),
    /// The lock's key vanished before its fencing token could be read (its lease
    /// expired).
    #[error("lock key {0:?} is gone: the lock's lease expired")]
    LockLost(String),
    /// A guarded write was refused because the lock has moved on.
    #[error(
        "fencing token {token} of lock key {key:?} is stale: the lock has passed to another holder"
    )]
    StaleFence {
        /// The lock key.
        key: String,
        /// The stale token.
        token: i64,
    },
}
