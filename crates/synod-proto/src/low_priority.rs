//! Running long work at a low CPU priority.
//!
//! Some work done for one client can take hundreds of milliseconds of CPU: reading
//! and encoding a full-keyspace Range, say. On a busy machine it competes for the
//! cores with the work every write waits on (the Raft core, the log flusher,
//! apply, the other requests), and the scheduler shares the cores evenly, so
//! writes wait behind it. Run on a thread of its own at a low priority (nice 10,
//! a tenth of a normal thread's share of a contended core), it takes the cores
//! only when the write path leaves them.
//!
//! A fresh thread each time, because a thread's priority, once lowered, cannot be
//! raised again without privileges: a pooled thread would stay slow for good. A
//! thread costs tens of microseconds to start, nothing beside such work.

use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
    ThreadPriorityValue, ThreadSchedulePolicy,
};

/// thread-priority's cross-platform value that Linux maps to nice 10 (the
/// crate spreads 0..=99 over nice 19..=-20; a test checks the result).
const BULK_PRIORITY: u8 = 22;

/// Lowers the calling thread's priority to that of bulk work.
fn lower_this_thread() {
    let lowered = ThreadPriorityValue::try_from(BULK_PRIORITY)
        .map_err(|error| error.to_string())
        .and_then(|value| {
            set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Crossplatform(value),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
            )
            .map_err(|error| error.to_string())
        });
    if let Err(error) = lowered {
        // The work still runs, at the caller's priority.
        tracing::debug!(%error, "cannot lower a bulk thread's priority");
    }
}

/// Runs `work` on a fresh thread at low priority and waits for it. Blocks the
/// calling thread: call it from a blocking context (`spawn_blocking`,
/// `block_in_place`). A panic in `work` is the caller's, as is the failure to
/// start a thread (as with `std::thread::spawn`).
pub fn at_low_priority<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("synod-bulk".into())
            .spawn_scoped(scope, || {
                lower_this_thread();
                work()
            })
            .unwrap_or_else(|error| panic!("cannot start a thread for bulk work: {error}"));
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from /proc.
    fn nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        fields
            .get(16)
            .and_then(|nice| nice.parse().ok())
            .unwrap_or(-100)
    }

    #[test]
    fn work_runs_at_nice_10_and_the_caller_keeps_its_priority() {
        let before = nice();
        assert_eq!(at_low_priority(nice), 10);
        assert_eq!(nice(), before);
        let caught = std::panic::catch_unwind(|| at_low_priority(|| panic!("in the work")));
        assert!(caught.is_err());
    }
}
