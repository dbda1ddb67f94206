//! Gathering concurrent requests into batches. Several paths pay a fixed price per
//! round whatever the round carries: a log entry costs an fsync, a peer RPC and a
//! store commit on every member; a read index costs a quorum round; a forwarded
//! write costs an RPC to the leader. So requests that arrive while a round is under
//! way wait, and the next round takes them all.
//!
//! One driver task runs the rounds one after another. The first request that finds
//! none running starts it; it ends when nobody is waiting. A round takes only the
//! requests waiting when it starts, never one that arrives during it: read-index
//! sharing depends on that (see [`crate::node::Node::read_barrier`]).
//!
//! Before it cuts a round the driver lets the runtime make a few passes
//! ([`GATHER_PASSES`]): each pass runs every task that is ready and polls the
//! sockets. Requests whose bytes have arrived, but whose connection or handler task
//! sits in the run queue behind the driver, then join this round instead of
//! waiting out the whole next one. Measured on 3 members sharing 2 cores: with 16
//! clients, puts went from 4.8k/s to 6.3k/s and locks from 2.4k/s to 3.1k/s; with
//! 128 clients, puts from 18.9k/s to 21.3k/s and linearizable gets from 29k/s to
//! 37k/s; one client's latency did not change (a pass with nothing ready is one
//! poll of the sockets).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Semaphore};

use crate::limits::GATHER_PASSES;

/// How much one round may take, and how many rounds may run at once.
pub struct Limit<I> {
    /// Rounds under way at once. One gives the fullest rounds; more overlap the
    /// wait of one round with the next (for a forward, a round trip to another
    /// member that waits there for a log entry).
    pub in_flight: usize,
    /// Most requests in one round.
    pub items: usize,
    /// The size of one request, counted against `weight_max`.
    pub weight: fn(&I) -> usize,
    /// Total size of the requests in one round. A round takes at least one
    /// request, however large.
    pub weight_max: usize,
}

impl<I> Limit<I> {
    /// Every waiting request goes in the next round.
    pub fn unlimited() -> Self {
        Self {
            in_flight: 1,
            items: usize::MAX,
            weight: |_| 0,
            weight_max: usize::MAX,
        }
    }
}

type Round<I, O> =
    Box<dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync>;

/// Batches requests of type `I` into rounds that answer each with an `O`.
pub struct Batcher<I, O> {
    limit: Limit<I>,
    round: Round<I, O>,
    in_flight: Arc<Semaphore>,
    state: Mutex<Queue<I, O>>,
}

struct Queue<I, O> {
    /// A driver task is running rounds.
    driving: bool,
    waiting: Vec<(I, oneshot::Sender<O>)>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// A batcher whose rounds are run by `round`, which answers the requests it is
    /// given in order. A request left without an answer gets `None`.
    pub fn new<F, Fut>(limit: Limit<I>, round: F) -> Arc<Self>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        Arc::new(Self {
            in_flight: Arc::new(Semaphore::new(limit.in_flight.max(1))),
            limit,
            round: Box::new(move |batch| Box::pin(round(batch))),
            state: Mutex::new(Queue {
                driving: false,
                waiting: Vec::new(),
            }),
        })
    }

    /// Submits `item` to a round that starts after this call and waits for its
    /// answer. `None` if the round gave it none or its driver failed.
    pub async fn submit(self: &Arc<Self>, item: I) -> Option<O> {
        let (sender, receiver) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.waiting.push((item, sender));
            !std::mem::replace(&mut state.driving, true)
        };
        if start {
            // A task of its own, so a caller that gives up cannot strand the others.
            let batcher = self.clone();
            tokio::spawn(async move { batcher.drive().await });
        }
        receiver.await.ok()
    }

    async fn drive(self: Arc<Self>) {
        let _stopped = StopGuard(&self);
        loop {
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return;
            };
            self.gather().await;
            let (items, answers): (Vec<I>, Vec<oneshot::Sender<O>>) = {
                let mut state = self.lock();
                let round = self.take(&mut state.waiting);
                if round.is_empty() {
                    state.driving = false;
                    return;
                }
                round.into_iter().unzip()
            };
            let round = (self.round)(items);
            let answer = async move {
                for (answer, output) in answers.into_iter().zip(round.await) {
                    let _ = answer.send(output);
                }
                drop(permit);
            };
            if self.limit.in_flight > 1 {
                tokio::spawn(answer);
            } else {
                answer.await;
            }
        }
    }

    /// Lets the runtime make [`GATHER_PASSES`] passes, so that requests already
    /// received join the round about to be cut; stops early once a round's count
    /// of requests is waiting.
    async fn gather(&self) {
        for _ in 0..GATHER_PASSES {
            if self.lock().waiting.len() >= self.limit.items {
                return;
            }
            // Defers this task until the worker has run the ready tasks and polled
            // the sockets, which is the pass wanted here.
            tokio::task::yield_now().await;
        }
    }

    /// The oldest waiting requests that fit one round (always at least one, if
    /// any is left). A request whose caller stopped waiting (it timed out, or its
    /// client went away) is dropped unseen: it was answered as failed or unknown,
    /// and carrying it out seconds later, after the client has moved on, would be
    /// a write nobody expects.
    fn take(&self, waiting: &mut Vec<(I, oneshot::Sender<O>)>) -> Vec<(I, oneshot::Sender<O>)> {
        waiting.retain(|(_, answer)| !answer.is_closed());
        let mut weight = 0usize;
        let mut count = 0;
        for (item, _) in waiting.iter() {
            let size = (self.limit.weight)(item);
            if count > 0
                && (count == self.limit.items
                    || weight.saturating_add(size) > self.limit.weight_max)
            {
                break;
            }
            weight = weight.saturating_add(size);
            count += 1;
        }
        let rest = waiting.split_off(count);
        std::mem::replace(waiting, rest)
    }

    fn lock(&self) -> MutexGuard<'_, Queue<I, O>> {
        synod_storage::sync::lock(&self.state)
    }
}

/// Lets a driver that panics hand over: the requests it left waiting get `None`
/// and the next request starts a new driver, instead of every later request
/// waiting on a driver that is gone.
struct StopGuard<'a, I, O>(&'a Batcher<I, O>);

impl<I, O> Drop for StopGuard<'_, I, O> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut state = synod_storage::sync::lock(&self.0.state);
            state.driving = false;
            state.waiting.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A batcher whose rounds take 20 ms and answer each request with the number
    /// of the round that took it.
    fn numbered_rounds(limit: Limit<usize>) -> (Arc<Batcher<usize, usize>>, Arc<AtomicUsize>) {
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        let batcher = Batcher::new(limit, move |batch: Vec<usize>| {
            let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                vec![number; batch.len()]
            }
        });
        (batcher, started)
    }

    #[tokio::test]
    async fn concurrent_requests_share_rounds_that_start_after_them() {
        let (batcher, started) = numbered_rounds(Limit::unlimited());
        let mut requests = Vec::new();
        for item in 0..50 {
            let batcher = batcher.clone();
            let started = started.clone();
            requests.push(tokio::spawn(async move {
                let before = started.load(Ordering::SeqCst);
                let round = batcher.submit(item).await.unwrap();
                // The round that answered started after this request arrived.
                assert!(round > before);
            }));
        }
        for request in requests {
            request.await.unwrap();
        }
        let total = started.load(Ordering::SeqCst);
        assert!((1..=3).contains(&total), "{total} rounds for 50 requests");
        // Idle again: the next request starts a fresh round.
        assert_eq!(batcher.submit(0).await.unwrap(), total + 1);
    }

    #[tokio::test]
    async fn rounds_respect_the_limits() {
        let (batcher, started) = numbered_rounds(Limit {
            in_flight: 1,
            items: 4,
            weight: |item| *item,
            weight_max: 10,
        });
        // Queued before the driver first runs: sizes 1, 2, 3, 4 | 9 | 12 | 1.
        let sizes = [1, 2, 3, 4, 9, 12, 1];
        let requests: Vec<_> = sizes
            .iter()
            .map(|size| {
                let batcher = batcher.clone();
                let size = *size;
                tokio::spawn(async move { batcher.submit(size).await.unwrap() })
            })
            .collect();
        let mut rounds = Vec::new();
        for request in requests {
            rounds.push(request.await.unwrap());
        }
        assert_eq!(started.load(Ordering::SeqCst), 4);
        // Request order is kept; a round is cut by count (4) or weight (10), and an
        // oversized request still goes, alone.
        assert_eq!(rounds, [1, 1, 1, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn requests_ready_a_few_passes_later_join_the_first_round() {
        let (batcher, started) = numbered_rounds(Limit::unlimited());
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(0).await.unwrap() }
        });
        // Each of these becomes ready to submit only after some runtime passes, as a
        // request does while its connection and handler tasks are scheduled.
        let later: Vec<_> = (1..GATHER_PASSES)
            .map(|passes| {
                let batcher = batcher.clone();
                tokio::spawn(async move {
                    for _ in 0..passes {
                        tokio::task::yield_now().await;
                    }
                    batcher.submit(passes).await.unwrap()
                })
            })
            .collect();
        assert_eq!(first.await.unwrap(), 1);
        for request in later {
            assert_eq!(request.await.unwrap(), 1, "a late request missed the round");
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_round_that_panics_does_not_stall_later_requests() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let batcher = Batcher::new(Limit::unlimited(), move |batch: Vec<()>| {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(call > 0, "the first round fails");
                vec![call; batch.len()]
            }
        });
        assert_eq!(batcher.submit(()).await, None);
        assert_eq!(batcher.submit(()).await, Some(1));
    }

    #[tokio::test]
    async fn a_request_given_up_before_its_round_is_never_carried_out() {
        let carried_out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = carried_out.clone();
        let batcher = Batcher::new(Limit::unlimited(), move |batch: Vec<u32>| {
            record.lock().unwrap().extend(batch.iter().copied());
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                vec![(); batch.len()]
            }
        });
        // Request 1 starts a round; 2 waits for the next one and gives up first.
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(1).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let given_up = tokio::time::timeout(Duration::from_millis(10), batcher.submit(2)).await;
        assert!(given_up.is_err());
        assert_eq!(first.await.unwrap(), Some(()));
        assert_eq!(batcher.submit(3).await, Some(()));
        assert_eq!(*carried_out.lock().unwrap(), [1, 3]);
    }
}
