//! The one place where errors become gRPC statuses, with etcd's exact codes and
//! messages (clients match on the strings).

use synod_proto::synodpb::apply_error::Kind as ApplyErrorKind;
use synod_storage::mvcc::MvccError;
use tonic::{Code, Status};

use crate::history_cursor::HistoryError;
use crate::membership::MembershipError;
use crate::outcome::NodeError;

/// Every error a client API call can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A key field is empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a missing key, or an empty Txn op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A Txn branch has more operations than `--max-txn-ops` leaves it, or the
    /// Txn nests deeper than [`crate::limits::TXN_NESTING_MAX`].
    #[error("{}", synod_proto::nested::TOO_MANY_OPS)]
    TooManyOps,
    /// A Txn branch writes one key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The message exceeds what the gRPC layer accepts (`--max-request-bytes` plus
    /// gRPC's slack); worded as grpc-go words it.
    #[error("grpc: received message larger than max ({size} vs. {limit})")]
    MessageTooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The request exceeds `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The revision asked for has been compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for does not exist yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The lease named does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant asked for a lease id that is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A write met the NOSPACE alarm or would exceed `--quota-backend-bytes`.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A defragmentation would leave the data dir's disk below its reserve.
    #[error(
        "synod: not enough free disk to defragment: the copy needs about {needed} bytes and \
         {free} are free, of which --disk-reserve-bytes keeps {reserve}; free space first"
    )]
    NoRoomToDefragment {
        /// Bytes the copy needs.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Bytes kept free.
        reserve: u64,
    },
    /// A leader-only request reached a member that does not lead.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// MoveLeader to a member that cannot lead (unknown, or a learner).
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// MoveLeader did not see the target take over in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// A grant asked for a TTL above the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// No member has the given id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member already uses one of the given peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// Peer URLs that are not http://IP:PORT.
    #[error("etcdserver: given member URLs are invalid")]
    BadMemberUrls,
    /// Promote of a member that is not a learner.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// Promote of a learner that has not caught up.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// A lock or election session's lease expired while it waited.
    #[error("session expired")]
    SessionExpired,
    /// Proclaim or Resign by a candidate that does not lead.
    #[error("election: not leader")]
    NotElectionLeader,
    /// Leader or Observe on an election nobody leads.
    #[error("election: no leader")]
    NoElectionLeader,
    /// Proclaim or Resign without the leader key.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// The cluster could not carry out the request.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The RPC exists in the etcd API but synod does not serve it yet.
    #[error("synod does not implement {0} yet")]
    Unimplemented(&'static str),
    /// A failure inside this node.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl From<MvccError> for ApiError {
    fn from(error: MvccError) -> Self {
        match error {
            MvccError::Compacted => ApiError::Compacted,
            MvccError::FutureRevision => ApiError::FutureRevision,
            MvccError::LeaseNotFound => ApiError::LeaseNotFound,
            MvccError::KeyNotFound => ApiError::KeyNotFound,
            MvccError::LeaseExists => ApiError::LeaseExists,
            MvccError::NoSpace => ApiError::NoSpace,
            MvccError::Store(error) => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<synod_storage::StoreError> for ApiError {
    fn from(error: synod_storage::StoreError) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl From<HistoryError> for ApiError {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::Stopped => ApiError::Node(NodeError::Stopped),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<MembershipError> for ApiError {
    fn from(error: MembershipError) -> Self {
        match error {
            MembershipError::MemberNotFound => ApiError::MemberNotFound,
            MembershipError::NotLearner => ApiError::NotLearner,
            MembershipError::LearnerNotReady => ApiError::LearnerNotReady,
            MembershipError::Timeout => ApiError::Node(NodeError::Timeout),
            MembershipError::Raft(reason) => ApiError::Internal(reason),
        }
    }
}

impl ApiError {
    /// The client-facing form of a refusal decided by the state machine.
    pub fn from_apply(kind: i32) -> Self {
        match ApplyErrorKind::try_from(kind) {
            Ok(ApplyErrorKind::Compacted) => ApiError::Compacted,
            Ok(ApplyErrorKind::FutureRevision) => ApiError::FutureRevision,
            Ok(ApplyErrorKind::LeaseNotFound) => ApiError::LeaseNotFound,
            Ok(ApplyErrorKind::KeyNotFound) => ApiError::KeyNotFound,
            Ok(ApplyErrorKind::LeaseExists) => ApiError::LeaseExists,
            Ok(ApplyErrorKind::NoSpace) => ApiError::NoSpace,
            Ok(ApplyErrorKind::Unknown) | Err(_) => {
                ApiError::Internal(format!("unknown apply error kind {kind}"))
            }
        }
    }

    fn code(&self) -> Code {
        match self {
            ApiError::EmptyKey
            | ApiError::KeyNotFound
            | ApiError::ValueProvided
            | ApiError::LeaseProvided
            | ApiError::TooManyOps
            | ApiError::DuplicateKey
            | ApiError::RequestTooLarge => Code::InvalidArgument,
            ApiError::Compacted | ApiError::FutureRevision | ApiError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            ApiError::LeaseNotFound => Code::NotFound,
            ApiError::LeaseExists
            | ApiError::PeerUrlExists
            | ApiError::NotLearner
            | ApiError::NotLeader
            | ApiError::LearnerNotReady
            | ApiError::BadLeaderTransferee => Code::FailedPrecondition,
            ApiError::LeaderTransferTimeout => Code::Unavailable,
            ApiError::NoSpace | ApiError::NoRoomToDefragment { .. } => Code::ResourceExhausted,
            ApiError::MemberNotFound => Code::NotFound,
            ApiError::BadMemberUrls => Code::InvalidArgument,
            ApiError::MessageTooLarge { .. } => Code::ResourceExhausted,
            ApiError::Node(NodeError::Forwarded(status)) => status.code(),
            ApiError::Node(NodeError::Internal(_)) | ApiError::Internal(_) => Code::Internal,
            ApiError::Node(_) => Code::Unavailable,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            // etcd's lock and election servers return these as plain errors.
            ApiError::SessionExpired
            | ApiError::NotElectionLeader
            | ApiError::NoElectionLeader
            | ApiError::MissingLeaderKey => Code::Unknown,
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        if let ApiError::Node(NodeError::Forwarded(status)) = error {
            return status;
        }
        Status::new(error.code(), error.to_string())
    }
}

/// Answers an RPC synod does not serve yet, naming it.
pub fn unimplemented(rpc: &'static str) -> Status {
    ApiError::Unimplemented(rpc).into()
}
