//! Client deadlines. A gRPC client sends its deadline as `grpc-timeout`; when it
//! passes, the request's work stops and the client is told as etcd tells it:
//! `DEADLINE_EXCEEDED`, "context deadline exceeded".
//!
//! tonic's own handling covers only the wait for a unary answer (and answers
//! `CANCELLED`); a stream (Watch, LeaseKeepAlive, Observe) ran on past its
//! deadline. Here the deadline bounds both: the wait for the answer, and then the
//! answer's body, which is cut with the status once the deadline passes. Dropping
//! the handler's future, or the stream behind the body, is what stops the work: a
//! proposal nobody waits for is dropped before its round (see [`crate::batch`]),
//! a watch session ends when its stream is gone, a lock waiter gives up its key.
//!
//! This layer sits inside tonic's, so its timer starts first and it answers
//! first. (tonic's parser of the header is private, hence the one here.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tonic::Status;

/// The header a gRPC client's deadline comes in.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// etcd's answer to a request whose deadline passed.
const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// The deadline a `grpc-timeout` value gives: up to 8 digits and a unit (hours,
/// minutes, seconds, milli-, micro-, nanoseconds), per the gRPC spec.
fn parse_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(unit_at)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded(DEADLINE_EXCEEDED)
}

/// Bounds every request by its client's deadline.
#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower_layer::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
}

type Answer<E> = Result<http::Response<tonic::body::Body>, E>;

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for Deadline<S>
where
    S: tower_service::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
    >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Answer<S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let deadline = request
            .headers()
            .get(GRPC_TIMEOUT)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_timeout)
            .map(|timeout| Instant::now() + timeout);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return answer.await;
            };
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(response)) => Ok(response.map(|body| {
                    tonic::body::Body::new(DeadlineBody {
                        inner: Some(body),
                        deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    })
                })),
                Ok(Err(error)) => Err(error),
                Err(_) => Ok(deadline_exceeded().into_http()),
            }
        })
    }
}

/// An answer's body, cut with `DEADLINE_EXCEEDED` trailers at the deadline.
struct DeadlineBody {
    /// `None` once cut.
    inner: Option<tonic::body::Body>,
    deadline: Pin<Box<Sleep>>,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Dropping the body drops the stream behind it, which ends its work.
        self.inner = None;
        let mut trailers = http::HeaderMap::new();
        match deadline_exceeded().add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_grpc_spec_writes_them() {
        assert_eq!(parse_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "1", "123456789S", "1s", "-1S", "1.5S", "é"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
