//! Free loopback ports for members and the proxy.
//!
//! A port is found by binding `127.0.0.1:0`. The listener is dropped at once, so
//! the port is only very likely (not certain) to stay free until the member binds
//! it. The kernel may hand the same port out again once it is released, so ports
//! already given out by this process are never returned twice.

use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

use crate::error::HarnessError;

/// Ports handed out so far by this process.
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// How many times the kernel may offer an already handed-out port before the
/// harness gives up (it never should, with 28 000 ephemeral ports).
const ATTEMPTS_MAX: usize = 1000;

/// A free loopback port, never one this process handed out before.
pub fn free_port() -> Result<u16, HarnessError> {
    let (_listener, port) = reserve_port()?;
    Ok(port)
}

/// A bound loopback listener on a port this process never handed out before, with
/// its port: for the proxy, which keeps its listeners open.
pub fn reserve_port() -> Result<(TcpListener, u16), HarnessError> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let setup = |source| HarnessError::Setup {
        what: "bind a loopback port".into(),
        source,
    };
    for _ in 0..ATTEMPTS_MAX {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(setup)?;
        let port = listener.local_addr().map_err(setup)?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok((listener, port));
        }
    }
    Err(setup(std::io::Error::other(
        "the kernel keeps offering ports already handed out",
    )))
}
