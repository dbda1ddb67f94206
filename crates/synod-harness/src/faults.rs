//! Plays one [`FaultStep`] against a running cluster, then heals it: every fault
//! is undone (processes restarted or resumed, links restored) and the cluster must
//! elect a leader and answer on every member before the next step, within
//! [`crate::READY_TIMEOUT`]. A member that exits on its own is a failure: nothing
//! in a schedule asks a live member to stop.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::cluster::Cluster;
use crate::error::HarnessError;
use crate::proxy::PeerProxy;
use crate::rng::SeededRng;
use crate::schedule::{FaultKind, FaultStep};

/// Applies `step` to `cluster`, holds it for the step's hold, and undoes it.
/// Returns what was done, with the members chosen.
pub async fn inject(cluster: &mut Cluster, step: &FaultStep) -> Result<String, HarnessError> {
    let mut pick = SeededRng::new(step.pick);
    let hold = step.hold;
    let held = format!("{:.1}s", hold.as_secs_f64());
    match step.kind {
        FaultKind::KillLeader => {
            let leader = cluster.leader().await?;
            cluster.kill(leader);
            tokio::time::sleep(hold).await;
            cluster.spawn(leader)?;
            Ok(format!(
                "SIGKILLed the leader m{leader}, restarted it after {held}"
            ))
        }
        FaultKind::KillMember => {
            let target = choose(&mut pick, &running_members(cluster))?;
            cluster.kill(target);
            tokio::time::sleep(hold).await;
            cluster.spawn(target)?;
            Ok(format!("SIGKILLed m{target}, restarted it after {held}"))
        }
        FaultKind::Pause => {
            let target = choose(&mut pick, &running_members(cluster))?;
            cluster.signal(target, Signal::SIGSTOP)?;
            tokio::time::sleep(hold).await;
            cluster.signal(target, Signal::SIGCONT)?;
            Ok(format!("SIGSTOPped m{target} for {held}"))
        }
        FaultKind::IsolateLeader => {
            let leader = cluster.leader().await?;
            let others = others_than(cluster, &[leader]);
            proxy(cluster)?.partition(&[leader], &others);
            tokio::time::sleep(hold).await;
            proxy(cluster)?.heal();
            Ok(format!("isolated the leader m{leader} for {held}"))
        }
        FaultKind::Split => {
            let mut members = cluster.live_members();
            pick.shuffle(&mut members);
            let (minority, majority) = members.split_at(members.len().saturating_sub(1) / 2);
            let (minority, majority) = (minority.to_vec(), majority.to_vec());
            proxy(cluster)?.partition(&minority, &majority);
            tokio::time::sleep(hold).await;
            proxy(cluster)?.heal();
            Ok(format!(
                "split {} | {} for {held}",
                names(&minority),
                names(&majority)
            ))
        }
        FaultKind::OneWayLoss => {
            let leader = cluster.leader().await?;
            let others = others_than(cluster, &[leader]);
            let outbound = pick.chance(1, 2);
            for other in &others {
                if outbound {
                    proxy(cluster)?.cut(leader, *other);
                } else {
                    proxy(cluster)?.cut(*other, leader);
                }
            }
            tokio::time::sleep(hold).await;
            proxy(cluster)?.heal();
            let direction = if outbound { "from" } else { "to" };
            Ok(format!(
                "cut connections {direction} the leader m{leader} one way for {held}"
            ))
        }
        FaultKind::ReplaceMember => {
            let target = choose(&mut pick, &running_members(cluster))?;
            let was_leader = cluster.agreed_leader().await == Some(target);
            cluster.remove_member(target).await?;
            tokio::time::sleep(hold).await;
            let (fresh, id) = cluster.join_new_member(false).await?;
            cluster.wait_voter(id).await?;
            let role = if was_leader { " (the leader)" } else { "" };
            Ok(format!(
                "removed m{target}{role}, added a fresh m{fresh} after {held}, a voter now"
            ))
        }
        FaultKind::LearnerPromote => {
            let (fresh, id) = cluster.join_new_member(true).await?;
            tokio::time::sleep(hold).await;
            cluster.promote_member(id).await?;
            cluster.wait_voter(id).await?;
            let old = others_than(cluster, &[fresh]);
            let victim = choose(&mut pick, &old)?;
            cluster.remove_member(victim).await?;
            Ok(format!(
                "added learner m{fresh}, promoted it after {held}, removed m{victim}"
            ))
        }
    }
}

/// Undoes whatever a step may have left behind (cut links, stopped or killed
/// members) and waits until the cluster is ready. Fails if a member exited on its
/// own.
pub async fn heal(cluster: &mut Cluster) -> Result<(), HarnessError> {
    if let Some((index, status)) = cluster.exited_members().into_iter().next() {
        return Err(cluster.exited_error(index, status));
    }
    if let Some(proxy) = cluster.proxy() {
        proxy.heal();
    }
    for index in cluster.live_members() {
        if cluster.members[index].is_running() {
            cluster.signal(index, Signal::SIGCONT)?;
        } else {
            cluster.spawn(index)?;
        }
    }
    if let Err(error) = cluster.wait_ready().await {
        // A member that exited explains a cluster that does not recover better
        // than the timeout does.
        return Err(exited_instead(cluster).unwrap_or(error));
    }
    // Give a member that is about to crash after recovery a moment to do so.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some((index, status)) = cluster.exited_members().into_iter().next() {
        return Err(cluster.exited_error(index, status));
    }
    Ok(())
}

/// The first member that exited on its own, as an error, if any.
pub fn exited_instead(cluster: &mut Cluster) -> Option<HarnessError> {
    let (index, status) = cluster.exited_members().into_iter().next()?;
    Some(cluster.exited_error(index, status))
}

fn proxy(cluster: &Cluster) -> Result<&PeerProxy, HarnessError> {
    cluster.proxy().ok_or_else(|| {
        HarnessError::Proxy("partitions need a cluster started behind the peer proxy".into())
    })
}

/// Live members whose process runs.
fn running_members(cluster: &Cluster) -> Vec<usize> {
    cluster
        .live_members()
        .into_iter()
        .filter(|index| cluster.members[*index].is_running())
        .collect()
}

/// Live members other than `excluded`.
fn others_than(cluster: &Cluster, excluded: &[usize]) -> Vec<usize> {
    cluster
        .live_members()
        .into_iter()
        .filter(|index| !excluded.contains(index))
        .collect()
}

fn choose(pick: &mut SeededRng, members: &[usize]) -> Result<usize, HarnessError> {
    members
        .get(pick.below(members.len()))
        .copied()
        .ok_or_else(|| HarnessError::Malformed("no member to apply the fault to".into()))
}

fn names(members: &[usize]) -> String {
    members
        .iter()
        .map(|index| format!("m{index}"))
        .collect::<Vec<_>>()
        .join(",")
}
