//! A peer-traffic proxy the tests control: every member's advertised peer URL points
//! at the proxy, which forwards to the member's real peer port unless the link is
//! cut. Members send peer traffic from their own loopback address
//! (`--peer-source-address 127.0.0.N`), so the proxy knows which member a connection
//! comes from and can cut links one way or both.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The loopback address member `index` sends peer traffic from.
pub fn member_source_address(index: usize) -> IpAddr {
    IpAddr::from([
        127,
        0,
        0,
        10 + u8::try_from(index).expect("fewer than 240 members"),
    ])
}

/// Cut links, as (from member, to member).
type Cuts = Arc<Mutex<HashSet<(usize, usize)>>>;

/// The running proxy; dropping it stops it.
pub struct PeerProxy {
    cuts: Cuts,
    changed: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl PeerProxy {
    /// Proxies `listeners[j]` (member j's advertised peer port) to
    /// `127.0.0.1:targets[j]` (its real one).
    pub fn start(listeners: Vec<std::net::TcpListener>, targets: Vec<u16>) -> PeerProxy {
        let cuts: Cuts = Arc::default();
        let (changed, _) = watch::channel(0u64);
        let sources: HashMap<IpAddr, usize> = (0..targets.len())
            .map(|index| (member_source_address(index), index))
            .collect();
        let mut tasks = Vec::new();
        for (to, (listener, target)) in listeners.into_iter().zip(targets).enumerate() {
            listener
                .set_nonblocking(true)
                .expect("nonblocking listener");
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let cuts = cuts.clone();
            let changes = changed.subscribe();
            let sources = sources.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((inbound, address)) = listener.accept().await {
                    let from = sources.get(&address.ip()).copied();
                    let is_cut = {
                        let cuts = cuts.clone();
                        move || from.is_some_and(|from| cuts.lock().unwrap().contains(&(from, to)))
                    };
                    if is_cut() {
                        drop(inbound);
                        continue;
                    }
                    let mut changes = changes.clone();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                            return;
                        };
                        let (mut inbound, mut outbound) = (inbound, outbound);
                        let forward = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                        tokio::pin!(forward);
                        loop {
                            tokio::select! {
                                _ = &mut forward => return,
                                changed = changes.changed() => {
                                    if changed.is_err() || is_cut() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }));
        }
        PeerProxy {
            cuts,
            changed,
            tasks,
        }
    }

    fn update(&self, change: impl FnOnce(&mut HashSet<(usize, usize)>)) {
        change(&mut self.cuts.lock().unwrap());
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

impl Drop for PeerProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
