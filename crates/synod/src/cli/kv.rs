//! `synod get`, `synod put` (optionally fenced by a lock) and `synod del`.

use clap::Args;

use super::client::{block_on, parse_lease_id, require_key, Endpoints};
use synod_client::Fence;

/// `synod get KEY`: prints the value.
#[derive(Debug, Args)]
pub struct GetFlags {
    /// The key.
    key: String,
    #[command(flatten)]
    endpoints: Endpoints,
}

/// `synod put KEY VALUE`.
#[derive(Debug, Args)]
pub struct PutFlags {
    /// The key.
    key: String,
    /// The value.
    value: String,
    /// Attach the key to this lease (hex id).
    #[arg(long, value_parser = parse_lease_id)]
    lease: Option<i64>,
    /// Write only while this lock key still holds the lock (with --fence-token);
    /// inside `synod lock`, use "$SYNOD_LOCK_KEY".
    #[arg(long, requires = "fence_token")]
    fence_key: Option<String>,
    /// The fencing token that --fence-key must still carry ("$SYNOD_LOCK_TOKEN").
    #[arg(long, requires = "fence_key")]
    fence_token: Option<i64>,
    #[command(flatten)]
    endpoints: Endpoints,
}

/// `synod del KEY`.
#[derive(Debug, Args)]
pub struct DelFlags {
    /// The key.
    key: String,
    #[command(flatten)]
    endpoints: Endpoints,
}

/// Runs `synod get`.
pub fn get(flags: GetFlags) -> anyhow::Result<()> {
    require_key(&flags.key)?;
    block_on(async {
        let client = flags.endpoints.connect()?;
        match client.get(flags.key.as_bytes()).await? {
            Some(value) => {
                println!("{}", String::from_utf8_lossy(&value));
                Ok(())
            }
            None => anyhow::bail!("key {:?} not found", flags.key),
        }
    })
}

/// Runs `synod put`.
pub fn put(flags: PutFlags) -> anyhow::Result<()> {
    require_key(&flags.key)?;
    block_on(async {
        let client = flags.endpoints.connect()?;
        let revision = match (flags.fence_key, flags.fence_token) {
            (Some(key), Some(token)) => {
                let fence = Fence {
                    key: key.into_bytes(),
                    token,
                };
                client.fenced_put(&fence, flags.key, flags.value).await?
            }
            _ => {
                client
                    .put(flags.key, flags.value, flags.lease.unwrap_or(0))
                    .await?
            }
        };
        println!("OK (revision {revision})");
        Ok(())
    })
}

/// Runs `synod del`.
pub fn del(flags: DelFlags) -> anyhow::Result<()> {
    require_key(&flags.key)?;
    block_on(async {
        let deleted = flags.endpoints.connect()?.delete(flags.key).await?;
        println!("{deleted}");
        Ok(())
    })
}
