//! History checkers for black-box tests: each takes what clients recorded during a
//! run (and, where needed, the store's own history read back after it) and says
//! whether a contract of docs/ARCHITECTURE.md §1 held, naming the first counterexample if not.
//!
//! - [`check_linearizable`]: a concurrent history of key-value operations (each
//!   with the interval in which it was in flight and what it returned) can be
//!   explained by some order of the operations, one at a time, that respects real
//!   time (Wing–Gong with Lowe's memoization, per key as Porcupine does).
//! - [`check_revisions_monotonic`]: the store's revision never goes backwards in
//!   real time, on any member.
//! - [`check_watch`]: a watcher got every change to its keys from its start
//!   revision on, once each, in order, with the stored values.
//! - [`check_acknowledged_writes`]: no acknowledged write is missing from the
//!   store's history.
//!
//! The checkers are pure functions over plain data, so each has unit tests that
//! show it rejects the histories it exists to reject.

mod durability;
mod history;
mod linearizability;
mod revisions;
mod watch;

pub use durability::{check_acknowledged_writes, AcknowledgedWrite, LostWrite};
pub use history::{check_history_order, state_at, Change, MalformedHistory};
pub use linearizability::{
    check_linearizable, without_unapplied_unknowns, Event, Operation, Outcome, Violation,
    SEARCH_STATES_MAX,
};
pub use revisions::{check_revisions_monotonic, RevisionObservation, RevisionRegression};
pub use watch::{check_watch, WatchSpec, WatchViolation, WatchedKeys};
