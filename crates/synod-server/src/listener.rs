//! Listening sockets and the accept loop of both servers (clients and peers).
//!
//! Two things the standard path gets wrong for a server that many clients reach
//! at once: tokio binds with a backlog of 128, so a burst of connections waits a
//! second per 128; and tonic's accept loop tries again at once after a failed
//! accept, so a member out of file descriptors spins a core without end. Here the
//! backlog is as large as the system allows, and an accept that fails for want of
//! descriptors or memory waits before the next, longer each time (as Go's
//! net/http server does), and says so once.

use std::io;
use std::net::SocketAddr;

use futures::Stream;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::limits::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, LISTEN_BACKLOG};

/// Binds `address` with SO_REUSEADDR (as tokio does) and a backlog of
/// [`LISTEN_BACKLOG`], which the kernel caps at `net.core.somaxconn`.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Whether a failed accept is the process running out of something (descriptors,
/// buffers, memory), which trying again at once cannot mend.
fn out_of_resources(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

/// The connections `listener` accepts, with Nagle's algorithm off (small
/// responses would otherwise wait for the peer's delayed ACK, ~40 ms each). Accept
/// errors never end the stream; each waits before the next attempt, from
/// [`ACCEPT_BACKOFF_MIN`] doubling up to [`ACCEPT_BACKOFF_MAX`] while they last (a
/// connection aborted before it was accepted costs one short wait).
pub fn accept(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "could not turn Nagle's algorithm off");
                    }
                    return Some((Ok(stream), listener));
                }
                Err(error) => {
                    if !out_of_resources(&error) {
                        tracing::debug!(%error, "a connection failed before it was accepted");
                    } else if backoff == ACCEPT_BACKOFF_MIN {
                        tracing::warn!(
                            %error,
                            "cannot accept connections; waiting up to {ACCEPT_BACKOFF_MAX:?} between attempts until resources free up"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    })
}
