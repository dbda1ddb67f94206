//! A peer-traffic proxy the harness controls. Every member's advertised peer URL
//! points at the proxy, which forwards each connection to the member's real peer
//! port unless the link is cut. Members send peer traffic from their own loopback
//! address (`--peer-source-address 127.0.0.N`, see [`member_source_address`]), so
//! the proxy knows which member a connection comes from and can cut links one way
//! or both. Cutting a link also closes the connections already open on it.
//!
//! "One way" is per connection: a cut from A to B refuses connections A opens to
//! B (A's requests and B's answers to them), while B can still reach A.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::HarnessError;

/// The first loopback address given to a member (127.0.0.10 is member 0).
const FIRST_SOURCE_OCTET: u8 = 10;

/// The loopback address member `index` sends peer traffic from, if it has one
/// (there are addresses for 240 members).
pub fn member_source_address(index: usize) -> Option<IpAddr> {
    let octet = u8::try_from(index).ok()?.checked_add(FIRST_SOURCE_OCTET)?;
    (octet < u8::MAX).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)))
}

/// The member a peer connection comes from, by its source address.
fn member_of(address: IpAddr) -> Option<usize> {
    match address {
        IpAddr::V4(v4)
            if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] >= FIRST_SOURCE_OCTET =>
        {
            Some(usize::from(v4.octets()[3] - FIRST_SOURCE_OCTET))
        }
        _ => None,
    }
}

/// Cut links, as (from member, to member).
type Cuts = Arc<Mutex<HashSet<(usize, usize)>>>;

fn is_cut(cuts: &Cuts, from: Option<usize>, to: usize) -> bool {
    from.is_some_and(|from| {
        cuts.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(from, to))
    })
}

/// The running proxy; dropping it stops it.
pub struct PeerProxy {
    cuts: Cuts,
    /// Bumped on every change of the cuts, so open connections re-check theirs.
    changed: watch::Sender<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for PeerProxy {
    fn default() -> Self {
        PeerProxy::new()
    }
}

impl PeerProxy {
    /// A proxy with no routes yet.
    pub fn new() -> PeerProxy {
        PeerProxy {
            cuts: Arc::default(),
            changed: watch::channel(0u64).0,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Forwards connections to `listener` (member `to`'s advertised peer port) to
    /// `127.0.0.1:target` (its real one). Needs a tokio runtime.
    pub fn route(
        &self,
        to: usize,
        listener: std::net::TcpListener,
        target: u16,
    ) -> Result<(), HarnessError> {
        let setup = |source| HarnessError::Setup {
            what: "start the peer proxy".into(),
            source,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| setup(std::io::Error::other(error)))?;
        listener.set_nonblocking(true).map_err(setup)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).map_err(setup)?
        };
        let cuts = self.cuts.clone();
        let changes = self.changed.subscribe();
        let task = runtime.spawn(async move {
            while let Ok((inbound, address)) = listener.accept().await {
                let from = member_of(address.ip());
                if is_cut(&cuts, from, to) {
                    continue;
                }
                tokio::spawn(forward(
                    inbound,
                    target,
                    from,
                    to,
                    cuts.clone(),
                    changes.clone(),
                ));
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
        Ok(())
    }

    fn update(&self, change: impl FnOnce(&mut HashSet<(usize, usize)>)) {
        change(&mut self.cuts.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Cuts traffic from `from` to `to` (one way).
    pub fn cut(&self, from: usize, to: usize) {
        self.update(|cuts| {
            cuts.insert((from, to));
        });
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, one: &[usize], other: &[usize]) {
        self.update(|cuts| {
            for a in one {
                for b in other {
                    cuts.insert((*a, *b));
                    cuts.insert((*b, *a));
                }
            }
        });
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.update(HashSet::clear);
    }
}

/// Forwards one connection until either side closes it or its link is cut.
async fn forward(
    mut inbound: TcpStream,
    target: u16,
    from: Option<usize>,
    to: usize,
    cuts: Cuts,
    mut changes: watch::Receiver<u64>,
) {
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = &mut copy => return,
            changed = changes.changed() => {
                if changed.is_err() || is_cut(&cuts, from, to) {
                    return;
                }
            }
        }
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_map_back_to_members() {
        for index in [0, 1, 4, 200] {
            let address = member_source_address(index);
            assert_eq!(address.and_then(member_of), Some(index));
        }
        assert_eq!(member_source_address(245), None);
        assert_eq!(member_of(IpAddr::V4(Ipv4Addr::LOCALHOST)), None);
    }
}
