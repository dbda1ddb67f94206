//! `synod lease ...`: grant, revoke, keep-alive, ttl, list.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::client::{block_on, lease_id, parse_lease_id, Endpoints};

/// Lease commands.
#[derive(Debug, Args)]
pub struct LeaseFlags {
    #[command(subcommand)]
    command: LeaseCommand,
    #[command(flatten)]
    endpoints: Endpoints,
}

#[derive(Debug, Subcommand)]
enum LeaseCommand {
    /// Grant a lease of TTL seconds; prints its id.
    Grant {
        /// Seconds the lease lives without a keep-alive.
        ttl: i64,
    },
    /// Revoke a lease, deleting every key attached to it.
    Revoke {
        /// The lease id (hex).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
    },
    /// Keep a lease alive until interrupted (or once).
    KeepAlive {
        /// The lease id (hex).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Show a lease's remaining and granted TTL.
    Ttl {
        /// The lease id (hex).
        #[arg(value_parser = parse_lease_id)]
        id: i64,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
    },
    /// List every lease.
    List,
}

/// Runs `synod lease`.
pub fn run(flags: LeaseFlags) -> anyhow::Result<()> {
    block_on(async {
        let client = flags.endpoints.connect()?;
        match flags.command {
            LeaseCommand::Grant { ttl } => {
                let (id, ttl) = client.lease_grant(ttl, 0).await?;
                println!("lease {} granted with TTL({ttl}s)", lease_id(id));
            }
            LeaseCommand::Revoke { id } => {
                client.lease_revoke(id).await?;
                println!("lease {} revoked", lease_id(id));
            }
            LeaseCommand::KeepAlive { id, once } => {
                let mut keeper = client.lease_keep_alive(id).await?;
                loop {
                    let ttl = keeper.keep_alive().await?;
                    if ttl <= 0 {
                        anyhow::bail!("lease {} expired or revoked", lease_id(id));
                    }
                    println!("lease {} keepalived with TTL({ttl})", lease_id(id));
                    if once {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_secs(
                        u64::try_from(ttl / 3).unwrap_or(1).max(1),
                    ))
                    .await;
                }
            }
            LeaseCommand::Ttl { id, keys } => {
                let response = client.lease_time_to_live(id, keys).await?;
                if response.ttl < 0 {
                    println!("lease {} already expired", lease_id(id));
                } else {
                    let attached: Vec<String> = response
                        .keys
                        .iter()
                        .map(|key| String::from_utf8_lossy(key).into_owned())
                        .collect();
                    println!(
                        "lease {} granted with TTL({}s), remaining({}s){}",
                        lease_id(id),
                        response.granted_ttl,
                        response.ttl,
                        if keys {
                            format!(", attached keys({attached:?})")
                        } else {
                            String::new()
                        }
                    );
                }
            }
            LeaseCommand::List => {
                let leases = client.lease_list().await?;
                println!("found {} leases", leases.len());
                for id in leases {
                    println!("{}", lease_id(id));
                }
            }
        }
        Ok(())
    })
}
