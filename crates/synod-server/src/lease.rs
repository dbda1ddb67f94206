//! Lease deadlines, kept by the leader alone.
//!
//! The replicated state holds each lease's granted TTL; deadlines are in-memory
//! state of the current leader, as in etcd. A member that becomes leader gives every
//! lease a full TTL from that moment, so a failover never expires a live lease early.
//! When a deadline passes, the leader proposes the revocation through the log, so
//! every replica deletes the lease's keys at the same revision.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::limits::REVOKE_RETRY;

/// A lease as the leader tracks it.
#[derive(Debug, Clone, Copy)]
struct LeaseDeadline {
    granted_ttl: i64,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct KeeperState {
    /// The term this member leads in, if it leads.
    leading_term: Option<u64>,
    leases: HashMap<i64, LeaseDeadline>,
    /// Deadlines in order, for the expiry loop.
    queue: BTreeSet<(Instant, i64)>,
    /// Leases whose revocation is being proposed.
    revoking: HashSet<i64>,
}

impl KeeperState {
    fn set(&mut self, id: i64, granted_ttl: i64, deadline: Instant) {
        if let Some(old) = self.leases.insert(
            id,
            LeaseDeadline {
                granted_ttl,
                deadline,
            },
        ) {
            self.queue.remove(&(old.deadline, id));
        }
        self.queue.insert((deadline, id));
    }

    fn remove(&mut self, id: i64) {
        if let Some(old) = self.leases.remove(&id) {
            self.queue.remove(&(old.deadline, id));
        }
        self.revoking.remove(&id);
    }
}

/// A lease's TTLs as its keeper reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTtl {
    /// Seconds the lease was granted for.
    pub granted: i64,
    /// Whole seconds left.
    pub remaining: i64,
}

/// Why the keeper could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeeperError {
    /// This member is not (yet) the leader the keeper follows.
    NotLeading,
}

/// The leader's lease deadlines.
#[derive(Debug, Default)]
pub struct LeaseKeeper {
    state: Mutex<KeeperState>,
    /// Notified when the deadlines change, so the lease clock
    /// ([`crate::lease_expiry`]) looks at the next one again.
    pub changed: Notify,
}

impl LeaseKeeper {
    fn state(&self) -> MutexGuard<'_, KeeperState> {
        synod_storage::sync::lock(&self.state)
    }

    /// Renews lease `id` for its full TTL. `stored_ttl` is the TTL in the store, for a
    /// lease granted so recently that the keeper has not seen it yet; `None` if the
    /// store has no such lease.
    pub fn renew(&self, id: i64, stored_ttl: Option<i64>) -> Result<Option<i64>, KeeperError> {
        let mut state = self.state();
        if state.leading_term.is_none() {
            return Err(KeeperError::NotLeading);
        }
        if state.revoking.contains(&id) {
            return Ok(None);
        }
        let granted = match (state.leases.get(&id), stored_ttl) {
            (Some(lease), _) => lease.granted_ttl,
            (None, Some(ttl)) => ttl,
            (None, None) => return Ok(None),
        };
        state.set(id, granted, Instant::now() + seconds(granted));
        drop(state);
        self.changed.notify_one();
        Ok(Some(granted))
    }

    /// The TTLs of lease `id`; `stored_ttl` as for [`LeaseKeeper::renew`].
    pub fn time_to_live(
        &self,
        id: i64,
        stored_ttl: Option<i64>,
    ) -> Result<Option<LeaseTtl>, KeeperError> {
        let mut state = self.state();
        if state.leading_term.is_none() {
            return Err(KeeperError::NotLeading);
        }
        let now = Instant::now();
        let lease = match (state.leases.get(&id).copied(), stored_ttl) {
            (Some(lease), _) => lease,
            (None, Some(ttl)) => {
                let lease = LeaseDeadline {
                    granted_ttl: ttl,
                    deadline: now + seconds(ttl),
                };
                state.set(id, ttl, lease.deadline);
                lease
            }
            (None, None) => return Ok(None),
        };
        let remaining = lease.deadline.saturating_duration_since(now).as_secs();
        Ok(Some(LeaseTtl {
            granted: lease.granted_ttl,
            remaining: i64::try_from(remaining).unwrap_or(i64::MAX),
        }))
    }

    /// Takes leadership for `term`: every lease gets a full TTL from now.
    pub fn lead(&self, term: u64, leases: &[(i64, i64)]) {
        let mut state = self.state();
        let now = Instant::now();
        *state = KeeperState {
            leading_term: Some(term),
            ..KeeperState::default()
        };
        for (id, ttl) in leases {
            state.set(*id, *ttl, now + seconds(*ttl));
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Gives up leadership: deadlines are the next leader's business.
    pub fn follow(&self) {
        *self.state() = KeeperState::default();
    }

    /// Brings the tracked set in line with the store: new leases get a full TTL,
    /// revoked ones are dropped.
    pub fn sync(&self, leases: &[(i64, i64)]) {
        let mut state = self.state();
        if state.leading_term.is_none() {
            return;
        }
        let now = Instant::now();
        let stored: HashSet<i64> = leases.iter().map(|(id, _)| *id).collect();
        let gone: Vec<i64> = state
            .leases
            .keys()
            .filter(|id| !stored.contains(id))
            .copied()
            .collect();
        for id in gone {
            state.remove(id);
        }
        for (id, ttl) in leases {
            if !state.leases.contains_key(id) {
                state.set(*id, *ttl, now + seconds(*ttl));
            }
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Leases past their deadline and not yet being revoked; marks them revoking.
    pub fn take_expired(&self, now: Instant) -> Vec<i64> {
        let mut state = self.state();
        let expired: Vec<i64> = state
            .queue
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
            .filter(|id| !state.revoking.contains(id))
            .collect();
        state.revoking.extend(expired.iter().copied());
        expired
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let state = self.state();
        state
            .queue
            .iter()
            .find(|(_, id)| !state.revoking.contains(id))
            .map(|(deadline, _)| *deadline)
    }

    pub fn revocation_failed(&self, id: i64) {
        let mut state = self.state();
        if state.revoking.remove(&id) {
            if let Some(lease) = state.leases.get(&id).copied() {
                state.set(id, lease.granted_ttl, Instant::now() + REVOKE_RETRY);
            }
        }
    }
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}
