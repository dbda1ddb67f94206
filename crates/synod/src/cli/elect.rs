//! `synod elect NAME VALUE` (campaign, then lead until interrupted) and
//! `synod elect NAME --listen` (follow the leader).

use std::time::Duration;

use clap::Args;

use super::client::{block_on, Endpoints};

/// `synod elect`.
#[derive(Debug, Args)]
pub struct ElectFlags {
    /// The election's name.
    name: String,
    /// This candidate's value (what observers see while it leads).
    #[arg(required_unless_present = "listen")]
    value: Option<String>,
    /// Follow the election's leader instead of campaigning.
    #[arg(long, short = 'l')]
    listen: bool,
    /// Seconds leadership survives this process dying (its lease TTL).
    #[arg(long, default_value_t = 10)]
    ttl: i64,
    #[command(flatten)]
    endpoints: Endpoints,
}

/// Runs `synod elect`.
pub fn run(flags: ElectFlags) -> anyhow::Result<()> {
    block_on(async {
        let client = flags.endpoints.connect()?;
        if flags.listen {
            let mut leaders = client.observe(flags.name.as_bytes()).await?;
            while let Some(response) = futures::StreamExt::next(&mut leaders).await {
                if let Some(kv) = response?.kv {
                    println!(
                        "{}\n{}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value)
                    );
                }
            }
            return Ok(());
        }
        let value = flags.value.unwrap_or_default();
        let (lease, ttl) = client.lease_grant(flags.ttl, 0).await?;
        let mut keeper = client.lease_keep_alive(lease).await?;
        let period = Duration::from_millis(u64::try_from(ttl * 1000 / 3).unwrap_or(1000).max(100));
        let renew = tokio::spawn(async move {
            while matches!(keeper.keep_alive().await, Ok(ttl) if ttl > 0) {
                tokio::time::sleep(period).await;
            }
            eprintln!("synod: the campaign's lease expired");
        });
        let leader = client
            .campaign(flags.name.as_bytes(), value.as_bytes(), lease)
            .await?;
        println!("{}\n{}", String::from_utf8_lossy(&leader.key), value);
        tokio::signal::ctrl_c().await?;
        renew.abort();
        client.resign(leader).await?;
        client.lease_revoke(lease).await.ok();
        Ok(())
    })
}
