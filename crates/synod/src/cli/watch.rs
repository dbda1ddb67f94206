//! `synod watch KEY`: prints every change until interrupted.

use clap::Args;
use synod_client::mvccpb::event::EventType;
use synod_proto::prefix_end;

use super::client::{block_on, Endpoints};

/// `synod watch`.
#[derive(Debug, Args)]
pub struct WatchFlags {
    /// The key (or prefix, with --prefix).
    key: String,
    /// Watch every key that starts with KEY.
    #[arg(long)]
    prefix: bool,
    /// Replay history from this revision.
    #[arg(long, default_value_t = 0)]
    rev: i64,
    /// Also print each key's previous value.
    #[arg(long)]
    prev_kv: bool,
    #[command(flatten)]
    endpoints: Endpoints,
}

/// Runs `synod watch`.
pub fn run(flags: WatchFlags) -> anyhow::Result<()> {
    block_on(async {
        let client = flags.endpoints.connect()?;
        let range_end = if flags.prefix {
            prefix_end(flags.key.as_bytes())
        } else {
            Vec::new()
        };
        let mut events = client
            .watch(flags.key.as_bytes(), range_end, flags.rev, flags.prev_kv)
            .await?;
        while let Some(response) = events.next().await? {
            if response.canceled {
                if response.compact_revision > 0 {
                    anyhow::bail!(
                        "watch canceled: revision {} has been compacted; restart with --rev {} or later",
                        flags.rev,
                        response.compact_revision
                    );
                }
                anyhow::bail!("watch canceled by the server: {}", response.cancel_reason);
            }
            for event in response.events {
                let kind = if event.r#type == EventType::Delete as i32 {
                    "DELETE"
                } else {
                    "PUT"
                };
                println!("{kind}");
                if let Some(previous) = &event.prev_kv {
                    println!(
                        "{}\n{}",
                        String::from_utf8_lossy(&previous.key),
                        String::from_utf8_lossy(&previous.value)
                    );
                }
                if let Some(kv) = &event.kv {
                    println!(
                        "{}\n{}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value)
                    );
                }
            }
        }
        anyhow::bail!("the server closed the watch")
    })
}
