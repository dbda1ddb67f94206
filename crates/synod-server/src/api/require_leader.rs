//! etcd's "require leader" requests: a client that sends the `hasleader: true`
//! metadata (clientv3's `WithRequireLeader`, as Kubernetes does for its watches)
//! wants a member that has lost its leader to say so instead of waiting, so that
//! it can go to another member. Such a request is refused with `etcdserver: no
//! leader` while the member knows no leader, and such a stream (watch, lease
//! keep-alive, observe) ends with that error once the member has been without one
//! for three election timeouts, as etcd's do.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tonic::codegen::BoxStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::limits::NO_LEADER_TIMEOUTS;
use crate::node::Node;

/// The metadata key and value of a require-leader request.
const REQUIRE_LEADER_KEY: &str = "hasleader";
const REQUIRE_LEADER_VALUE: &str = "true";

/// etcd's answer to a require-leader request on a member without a leader.
pub fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

/// Whether a request asks for a leader.
pub fn requires_leader(metadata: &MetadataMap) -> bool {
    metadata
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|value| value == REQUIRE_LEADER_VALUE)
}

/// An interceptor for every client service: refuses require-leader requests while
/// this member knows no leader.
pub fn interceptor(
    node: Arc<Node>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        if requires_leader(request.metadata()) && !*node.has_leader.borrow() {
            return Err(no_leader());
        }
        Ok(request)
    }
}

/// `stream`, ended with `etcdserver: no leader` once this member has known no
/// leader for [`NO_LEADER_TIMEOUTS`] election timeouts, if `metadata` asks for a
/// leader; `stream` as it is otherwise.
pub fn guard<T: Send + 'static>(
    node: &Node,
    metadata: &MetadataMap,
    stream: BoxStream<T>,
) -> BoxStream<T> {
    if !requires_leader(metadata) {
        return stream;
    }
    let election = Duration::from_millis(node.raft.config().election_timeout_min);
    Box::pin(UntilLeaderLost {
        inner: stream,
        lost: Box::pin(leader_lost_for(
            node.has_leader.subscribe(),
            election * NO_LEADER_TIMEOUTS,
        )),
        ended: false,
    })
}

/// Completes once `has_leader` has stayed false for `grace`.
async fn leader_lost_for(mut has_leader: watch::Receiver<bool>, grace: Duration) {
    loop {
        if has_leader.wait_for(|known| !*known).await.is_err() {
            return;
        }
        let regained = has_leader.wait_for(|known| *known);
        if tokio::time::timeout(grace, regained).await.is_err() {
            return;
        }
    }
}

/// A response stream that ends with `etcdserver: no leader` when `lost` completes.
struct UntilLeaderLost<T> {
    inner: BoxStream<T>,
    lost: Pin<Box<dyn Future<Output = ()> + Send>>,
    ended: bool,
}

impl<T> Stream for UntilLeaderLost<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.lost.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Some(Err(no_leader())));
        }
        self.inner.as_mut().poll_next(cx)
    }
}
