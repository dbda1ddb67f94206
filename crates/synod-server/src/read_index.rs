//! Batched read index. A linearizable read needs the leader to confirm, with a
//! quorum, that it still leads, and the commit index at that moment. Reads that
//! arrive while a confirmation is under way wait for the next one and share it, so
//! a burst of reads costs one quorum round instead of one each.
//!
//! Sharing is safe only with a round that *starts after* a read arrived: a round
//! already under way may have taken its commit index before a write the reader has
//! seen acknowledged. So a round takes exactly the reads waiting when it starts.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// One stream of shared rounds; `T` is a round's outcome, handed to every read that
/// waited for it.
pub struct SharedRounds<T> {
    state: Mutex<Waiting<T>>,
}

struct Waiting<T> {
    /// A driver task is running rounds.
    driving: bool,
    /// Reads waiting for the next round.
    readers: Vec<oneshot::Sender<T>>,
}

impl<T: Clone + Send + 'static> Default for SharedRounds<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(Waiting {
                driving: false,
                readers: Vec::new(),
            }),
        }
    }
}

impl<T: Clone + Send + 'static> SharedRounds<T> {
    /// Waits for the outcome of a round that starts after this call. `round` runs a
    /// round; it is used only if no driver is running. `None` if the driver died.
    pub async fn join<F, Fut>(self: &Arc<Self>, round: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.readers.push(sender);
            !std::mem::replace(&mut state.driving, true)
        };
        if start {
            // A task of its own, so a reader that gives up cannot strand the others.
            let rounds = self.clone();
            tokio::spawn(async move { rounds.drive(round).await });
        }
        receiver.await.ok()
    }

    async fn drive<F, Fut>(&self, round: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            let readers = {
                let mut state = self.lock();
                if state.readers.is_empty() {
                    state.driving = false;
                    return;
                }
                std::mem::take(&mut state.readers)
            };
            let outcome = round().await;
            for reader in readers {
                let _ = reader.send(outcome.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting<T>> {
        synod_storage::sync::lock(&self.state)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_reads_share_rounds_that_start_after_them() {
        let rounds = Arc::new(SharedRounds::<usize>::default());
        let started = Arc::new(AtomicUsize::new(0));
        let round = {
            let started = started.clone();
            move || {
                let started = started.clone();
                async move {
                    let number = started.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    number
                }
            }
        };
        let mut reads = Vec::new();
        for _ in 0..50 {
            let rounds = rounds.clone();
            let round = round.clone();
            let started = started.clone();
            reads.push(tokio::spawn(async move {
                let before = started.load(Ordering::SeqCst);
                let outcome = rounds.join(round).await.unwrap();
                // The round that answered started after this read arrived.
                assert!(outcome > before);
                outcome
            }));
        }
        for read in reads {
            read.await.unwrap();
        }
        let total = started.load(Ordering::SeqCst);
        assert!((1..=3).contains(&total), "{total} rounds for 50 reads");
        // Idle again: the next read starts a fresh round.
        assert_eq!(rounds.join(round).await.unwrap(), total + 1);
    }
}
