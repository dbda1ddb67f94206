//! `synod lock NAME [-- COMMAND]`: hold a lock, run a command under it.

use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use synod_client::{Client, Fence};

use super::client::{block_on, lease_id, Endpoints};

/// `synod lock`.
#[derive(Debug, Args)]
pub struct LockFlags {
    /// The lock's name.
    name: String,
    /// Seconds the lock survives this process dying (its lease TTL).
    #[arg(long, default_value_t = 10)]
    ttl: i64,
    #[command(flatten)]
    endpoints: Endpoints,
    /// Command to run while holding the lock (after `--`). Its environment has
    /// SYNOD_LOCK_KEY and SYNOD_LOCK_TOKEN, the fencing token to guard writes with
    /// (`synod put --fence-key "$SYNOD_LOCK_KEY" --fence-token "$SYNOD_LOCK_TOKEN"`).
    /// Without a command, the lock is held until interrupted.
    #[arg(last = true)]
    command: Vec<String>,
}

/// Renews `lease` every third of its TTL until the task is dropped.
fn keep_alive(client: Client, lease: i64, ttl: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = Duration::from_millis(u64::try_from(ttl * 1000 / 3).unwrap_or(1000).max(100));
        let Ok(mut keeper) = client.lease_keep_alive(lease).await else {
            eprintln!(
                "synod: cannot keep lease {} alive; the lock will expire",
                lease_id(lease)
            );
            return;
        };
        loop {
            match keeper.keep_alive().await {
                Ok(ttl) if ttl > 0 => {}
                _ => {
                    eprintln!("synod: lease {} expired; the lock is lost", lease_id(lease));
                    return;
                }
            }
            tokio::time::sleep(period).await;
        }
    })
}

/// Runs `synod lock`; returns the command's exit code.
pub fn run(flags: LockFlags) -> anyhow::Result<i32> {
    block_on(async {
        let client = flags.endpoints.connect()?;
        let (lease, ttl) = client.lease_grant(flags.ttl, 0).await?;
        let keeper = keep_alive(client.clone(), lease, ttl);
        let fence = client.lock(flags.name.as_bytes(), lease).await?;
        let code = if flags.command.is_empty() {
            println!("{}", String::from_utf8_lossy(&fence.key));
            println!("fencing token {}", fence.token);
            tokio::signal::ctrl_c().await?;
            0
        } else {
            run_command(&flags.command, &fence).await?
        };
        keeper.abort();
        client.unlock(&fence).await?;
        client.lease_revoke(lease).await.ok();
        Ok(code)
    })
}

async fn run_command(command: &[String], fence: &Fence) -> anyhow::Result<i32> {
    let key = String::from_utf8_lossy(&fence.key).into_owned();
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("SYNOD_LOCK_KEY", &key)
        .env("SYNOD_LOCK_TOKEN", fence.token.to_string())
        .env("ETCD_LOCK_KEY", &key)
        .stdin(Stdio::inherit())
        .spawn()
        .map_err(|error| anyhow::anyhow!("cannot run {:?}: {error}", command[0]))?;
    let status = child.wait().await?;
    Ok(status.code().unwrap_or(1))
}
