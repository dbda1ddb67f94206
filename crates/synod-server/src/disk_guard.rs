//! Keeps a member from running its data dir's disk full.
//!
//! A member whose Raft log or store cannot be written has to stop (it exits; see
//! `stop_when_raft_fails` in [`crate::server`]). To stop writes before that point,
//! this task looks at the disk's free space every [`DISK_CHECK_INTERVAL`]: once it
//! falls below `--disk-reserve-bytes`, the member raises etcd's NOSPACE alarm
//! through the log, so every member refuses puts, Txns that put and lease grants
//! with `etcdserver: mvcc: database space exceeded`, while reads, deletes and
//! compaction go on (they are what frees space). Once free space is back above
//! half again the reserve, the member disarms the alarm it raised, and writes
//! resume by themselves.
//!
//! A file in the data dir ([`DISK_ALARM_MARKER`]) records that this member's
//! NOSPACE alarm is the disk's, not the quota's, so the alarm is disarmed by this
//! task even across a restart, and a quota alarm is never disarmed by it (etcd's
//! quota alarm stays until an operator disarms it).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use synod_proto::etcdserverpb::alarm_request::AlarmAction;
use synod_proto::etcdserverpb::{AlarmRequest, AlarmType};
use synod_proto::synodpb::command::Op;
use synod_proto::synodpb::Command;

use crate::limits::DISK_CHECK_INTERVAL;
use crate::node::Node;

/// The file whose presence says this member's NOSPACE alarm was raised for its
/// disk.
pub const DISK_ALARM_MARKER: &str = "nospace-disk";

/// Free bytes on the file system holding `dir`, as an unprivileged writer sees them.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    Ok(stats
        .blocks_available()
        .saturating_mul(stats.fragment_size()))
}

/// What the free space calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Below the reserve: writes must stop.
    Short,
    /// Back above half again the reserve: writes may resume.
    Ample,
    /// In between: leave things as they are, so that a disk hovering at the
    /// reserve does not raise and disarm the alarm over and over.
    Between,
}

fn verdict(free: u64, reserve: u64) -> Verdict {
    if free < reserve {
        Verdict::Short
    } else if free >= reserve.saturating_add(reserve / 2) {
        Verdict::Ample
    } else {
        Verdict::Between
    }
}

/// Watches the free space of `data_dir` for as long as the member runs; `reserve`
/// 0 turns the watch off.
pub async fn run(node: Arc<Node>, data_dir: PathBuf, reserve: u64) {
    if reserve == 0 {
        return std::future::pending().await;
    }
    let marker = data_dir.join(DISK_ALARM_MARKER);
    let mut checks = tokio::time::interval(DISK_CHECK_INTERVAL);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        let free = match free_bytes(&data_dir) {
            Ok(free) => free,
            Err(error) => {
                tracing::debug!(%error, "cannot read the data dir's free space");
                continue;
            }
        };
        let raised = node.reader.alarms().is_ok_and(|alarms| {
            alarms.iter().any(|alarm| {
                alarm.member_id == node.member.id && alarm.alarm == AlarmType::Nospace as i32
            })
        });
        match verdict(free, reserve) {
            Verdict::Short if !raised => {
                tracing::warn!(
                    free_bytes = free,
                    reserve_bytes = reserve,
                    "the data dir's disk is nearly full: raising the NOSPACE alarm; writes are \
                     refused until space is freed"
                );
                if let Err(error) = std::fs::write(&marker, b"") {
                    tracing::warn!(%error, "cannot record that the NOSPACE alarm is the disk's");
                }
                alarm(&node, AlarmAction::Activate).await;
            }
            Verdict::Ample
                if raised && marker.exists() && alarm(&node, AlarmAction::Deactivate).await =>
            {
                tracing::info!(
                    free_bytes = free,
                    "the data dir's disk has room again: the NOSPACE alarm is disarmed and \
                     writes resume"
                );
                if let Err(error) = std::fs::remove_file(&marker) {
                    tracing::warn!(%error, "cannot remove {}", marker.display());
                }
            }
            Verdict::Ample if !raised && marker.exists() => {
                // Disarmed by an operator: nothing left to own.
                let _ = std::fs::remove_file(&marker);
            }
            _ => {}
        }
    }
}

/// Raises or disarms this member's NOSPACE alarm; whether it was done (if not,
/// the next check tries again).
async fn alarm(node: &Node, action: AlarmAction) -> bool {
    let request = AlarmRequest {
        action: action as i32,
        member_id: node.member.id,
        alarm: AlarmType::Nospace as i32,
    };
    let command = Command {
        op: Some(Op::Alarm(request)),
    };
    match node.propose(command).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, ?action, "could not change the NOSPACE alarm; will try again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_is_raised_below_the_reserve_and_disarmed_well_above_it() {
        let reserve = 100;
        assert_eq!(verdict(0, reserve), Verdict::Short);
        assert_eq!(verdict(99, reserve), Verdict::Short);
        assert_eq!(verdict(100, reserve), Verdict::Between);
        assert_eq!(verdict(149, reserve), Verdict::Between);
        assert_eq!(verdict(150, reserve), Verdict::Ample);
        assert_eq!(verdict(u64::MAX, u64::MAX), Verdict::Ample);
    }

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        assert!(free_bytes(dir.path()).is_ok_and(|free| free > 0));
    }
}
