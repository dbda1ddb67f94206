//! What one client connection, and one stream on it, can make a member hold
//! while requests arrive.
//!
//! A gRPC message is a 5-byte header (a flag and the length) and then the
//! message. tonic buffers a message until it is whole before its size limit
//! applies to anything but that header, and HTTP/2 lets one connection carry many
//! streams. So a client announcing large messages on many streams and never
//! finishing them could make a member hold every byte it sent. Here each request
//! body is read through [`BoundedBody`], which reads the headers as they pass:
//!
//! - a message longer than `--max-request-bytes` plus gRPC's slack is refused
//!   from its header, with grpc-go's error, before any of it is held;
//! - a message takes its whole length from its connection's budget
//!   ([`CONNECTION_RECEIVE_BYTES_MAX`]) when its header arrives, and gives it back
//!   once its last byte has passed (or its stream ends). A message that does not
//!   fit in what is left is refused at once with `RESOURCE_EXHAUSTED`.
//!
//! Refusing rather than waiting is deliberate: HTTP/2's connection window counts
//! the bytes a stream has received and nobody has read, so a stream left waiting
//! for budget would, once its window is full, stop the very streams whose
//! messages would give budget back. A connection thus holds at most its budget in
//! partial messages, plus what HTTP/2's windows let the client send ahead.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::http;
use tonic::transport::server::Connected;
use tonic::Status;

use crate::api::error::ApiError;
use crate::limits::CONNECTION_RECEIVE_BYTES_MAX;

/// Bytes of a gRPC message header: a compression flag and a 32-bit length.
const MESSAGE_HEADER_BYTES: usize = 5;

/// A client connection and the budget its requests' messages share.
pub struct ClientConnection<IO> {
    io: IO,
    budget: Arc<Semaphore>,
}

impl<IO> ClientConnection<IO> {
    /// Gives a freshly accepted connection a budget of
    /// [`CONNECTION_RECEIVE_BYTES_MAX`] bytes, or `message_bytes_max` if that is
    /// larger, so that one message of any allowed size always fits.
    pub fn new(io: IO, message_bytes_max: usize) -> Self {
        let bytes = CONNECTION_RECEIVE_BYTES_MAX.max(message_bytes_max);
        Self {
            io,
            budget: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        }
    }
}

/// What a request learns of its connection: the budget to take from. tonic puts
/// it among each request's extensions.
#[derive(Clone)]
pub struct ConnectionBudget(Arc<Semaphore>);

impl<IO> Connected for ClientConnection<IO> {
    type ConnectInfo = ConnectionBudget;

    fn connect_info(&self) -> ConnectionBudget {
        ConnectionBudget(self.budget.clone())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ClientConnection<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ClientConnection<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads every request body of a client connection through a [`BoundedBody`].
#[derive(Clone)]
pub struct ReceiveBudgetLayer {
    message_bytes_max: usize,
}

impl ReceiveBudgetLayer {
    /// Refuses messages longer than `message_bytes_max`.
    pub fn new(message_bytes_max: usize) -> Self {
        Self { message_bytes_max }
    }
}

impl<S> tower_layer::Layer<S> for ReceiveBudgetLayer {
    type Service = ReceiveBudget<S>;

    fn layer(&self, inner: S) -> ReceiveBudget<S> {
        ReceiveBudget {
            inner,
            message_bytes_max: self.message_bytes_max,
        }
    }
}

/// The service [`ReceiveBudgetLayer`] makes.
#[derive(Clone)]
pub struct ReceiveBudget<S> {
    inner: S,
    message_bytes_max: usize,
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for ReceiveBudget<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let budget = request.extensions().get::<ConnectionBudget>().cloned();
        let message_bytes_max = self.message_bytes_max;
        let request = match budget {
            Some(ConnectionBudget(budget)) => request.map(|body| {
                tonic::body::Body::new(BoundedBody::new(body, budget, message_bytes_max))
            }),
            // Connections not made by this module's listener have no budget.
            None => request,
        };
        self.inner.call(request)
    }
}

/// Where a body is in its stream of messages.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// `filled` bytes of a message header have arrived.
    Header {
        filled: usize,
        bytes: [u8; MESSAGE_HEADER_BYTES],
    },
    /// A header announced a message of `size` bytes, which needs a reservation.
    Reserve { size: usize },
    /// `left` bytes of the current message are still to come.
    Message { left: usize },
}

const AT_HEADER: Reading = Reading::Header {
    filled: 0,
    bytes: [0; MESSAGE_HEADER_BYTES],
};

/// Why a message was refused.
enum Refusal {
    /// It is longer than allowed.
    TooLarge { size: usize },
    /// Its connection's budget does not have room for it now.
    OverBudget { size: usize },
}

/// A request body whose messages are bounded in size and share their
/// connection's budget (see the module docs).
pub struct BoundedBody<B> {
    inner: B,
    budget: Arc<Semaphore>,
    message_bytes_max: usize,
    reading: Reading,
    /// The reservation of the message under way.
    reservation: Option<OwnedSemaphorePermit>,
    refused: bool,
}

impl<B> BoundedBody<B> {
    fn new(inner: B, budget: Arc<Semaphore>, message_bytes_max: usize) -> Self {
        Self {
            inner,
            budget,
            message_bytes_max,
            reading: AT_HEADER,
            reservation: None,
            refused: false,
        }
    }

    /// Accounts for the bytes of `chunk`.
    fn walk(&mut self, chunk: &[u8]) -> Result<(), Refusal> {
        let mut position = 0;
        loop {
            match self.reading {
                Reading::Reserve { size } => {
                    if size > self.message_bytes_max {
                        return Err(Refusal::TooLarge { size });
                    }
                    if size > 0 {
                        // A size fits u32: it came from a 32-bit field.
                        let permits = u32::try_from(size).unwrap_or(u32::MAX);
                        let reservation = self
                            .budget
                            .clone()
                            .try_acquire_many_owned(permits)
                            .map_err(|_| Refusal::OverBudget { size })?;
                        self.reservation = Some(reservation);
                        self.reading = Reading::Message { left: size };
                    } else {
                        self.reading = AT_HEADER;
                    }
                }
                Reading::Header { .. } | Reading::Message { .. } if position == chunk.len() => {
                    return Ok(());
                }
                Reading::Header {
                    mut filled,
                    mut bytes,
                } => {
                    let step = (MESSAGE_HEADER_BYTES - filled).min(chunk.len() - position);
                    bytes[filled..filled + step].copy_from_slice(&chunk[position..position + step]);
                    filled += step;
                    position += step;
                    self.reading = if filled == MESSAGE_HEADER_BYTES {
                        let [_, length @ ..] = bytes;
                        Reading::Reserve {
                            size: u32::from_be_bytes(length) as usize,
                        }
                    } else {
                        Reading::Header { filled, bytes }
                    };
                }
                Reading::Message { left } => {
                    let step = left.min(chunk.len() - position);
                    position += step;
                    self.reading = if step == left {
                        self.reservation = None;
                        AT_HEADER
                    } else {
                        Reading::Message { left: left - step }
                    };
                }
            }
        }
    }

    /// The status a refused message's stream ends with.
    fn status(&self, refusal: Refusal) -> Status {
        match refusal {
            Refusal::TooLarge { size } => ApiError::MessageTooLarge {
                size,
                limit: self.message_bytes_max,
            }
            .into(),
            Refusal::OverBudget { size } => Status::resource_exhausted(format!(
                "synod: a message of {size} bytes does not fit in what this connection may \
                 receive at once ({} bytes in partly received messages); send fewer large \
                 requests at a time, or over more connections",
                CONNECTION_RECEIVE_BYTES_MAX.max(self.message_bytes_max)
            )),
        }
    }
}

impl<B> Body for BoundedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => match this.walk(&chunk) {
                    Ok(()) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    Err(refusal) => {
                        this.refused = true;
                        this.reservation = None;
                        Poll::Ready(Some(Err(this.status(refusal))))
                    }
                },
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Some(Err(error)) => Poll::Ready(Some(Err(Status::from_error(error.into())))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::VecDeque;

    use futures::task::noop_waker_ref;

    use super::*;

    /// A body that yields the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn message(size: usize) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&u32::try_from(size).unwrap().to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, size));
        bytes
    }

    fn body(chunks: Vec<Vec<u8>>, budget: &Arc<Semaphore>, max: usize) -> BoundedBody<Chunks> {
        let chunks = chunks.into_iter().map(Bytes::from).collect();
        BoundedBody::new(Chunks(chunks), budget.clone(), max)
    }

    fn poll(body: &mut BoundedBody<Chunks>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut cx = Context::from_waker(noop_waker_ref());
        Pin::new(body).poll_frame(&mut cx)
    }

    #[test]
    fn a_message_holds_its_length_of_the_budget_until_it_has_passed() {
        let budget = Arc::new(Semaphore::new(100));
        let whole = message(60);
        // Header split over two chunks, message over three.
        let chunks = vec![
            whole[..3].to_vec(),
            whole[3..20].to_vec(),
            whole[20..40].to_vec(),
            whole[40..].to_vec(),
        ];
        let mut first = body(chunks, &budget, 1000);
        assert!(matches!(poll(&mut first), Poll::Ready(Some(Ok(_)))));
        assert_eq!(budget.available_permits(), 100);
        assert!(matches!(poll(&mut first), Poll::Ready(Some(Ok(_)))));
        assert_eq!(budget.available_permits(), 40);
        // A second stream's message of 60 does not fit in what is left: refused.
        let mut second = body(vec![message(60)], &budget, 1000);
        let Poll::Ready(Some(Err(status))) = poll(&mut second) else {
            panic!("a message over the connection's budget was not refused");
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("send fewer large requests"));
        assert!(matches!(poll(&mut second), Poll::Ready(None)));
        // The first message completes; its bytes return to the budget, and a
        // message that fits now goes through.
        assert!(matches!(poll(&mut first), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(poll(&mut first), Poll::Ready(Some(Ok(_)))));
        assert_eq!(budget.available_permits(), 100);
        assert!(matches!(poll(&mut first), Poll::Ready(None)));
        let mut third = body(vec![message(60), message(0), message(40)], &budget, 1000);
        for _ in 0..3 {
            assert!(matches!(poll(&mut third), Poll::Ready(Some(Ok(_)))));
        }
        assert_eq!(budget.available_permits(), 100);
    }

    #[test]
    fn a_message_too_large_is_refused_from_its_header() {
        let budget = Arc::new(Semaphore::new(100));
        let mut header_only = message(0);
        header_only[1..5].copy_from_slice(&(62_914_560u32).to_be_bytes());
        let mut too_large = body(vec![message(10), header_only], &budget, 2_097_152);
        assert!(matches!(poll(&mut too_large), Poll::Ready(Some(Ok(_)))));
        let Poll::Ready(Some(Err(status))) = poll(&mut too_large) else {
            panic!("a message over the limit was not refused");
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (62914560 vs. 2097152)"
        );
        assert!(matches!(poll(&mut too_large), Poll::Ready(None)));
        assert_eq!(budget.available_permits(), 100);
    }

    #[test]
    fn a_body_dropped_mid_message_gives_its_reservation_back() {
        let budget = Arc::new(Semaphore::new(100));
        let whole = message(50);
        let mut cut = body(vec![whole[..20].to_vec()], &budget, 1000);
        assert!(matches!(poll(&mut cut), Poll::Ready(Some(Ok(_)))));
        assert_eq!(budget.available_permits(), 50);
        drop(cut);
        assert_eq!(budget.available_permits(), 100);
    }
}
