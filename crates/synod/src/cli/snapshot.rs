//! `synod snapshot save|restore`: backups of a running cluster (like `etcdctl
//! snapshot save` and `etcdutl snapshot restore`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use synod_storage::{backup, open_database, DATABASE_FILE, DEFAULT_CACHE_BYTES};

use super::client::{block_on, Endpoints};

/// Snapshot commands.
#[derive(Debug, Args)]
pub struct SnapshotFlags {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Stream a consistent backup from one member into FILE.
    Save {
        /// Where to write the backup; written to FILE.part first, then renamed.
        file: PathBuf,
        /// The member to stream from (exactly one endpoint).
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Seed a new member's data dir with a backup. Run it once per member of the
    /// new cluster, then start each with `synod serve --data-dir DIR
    /// --initial-cluster-state new` and the new cluster's flags.
    Restore {
        /// A backup written by `synod snapshot save` (or `etcdctl snapshot save`
        /// against synod).
        file: PathBuf,
        /// The data dir to create; it must not exist or be empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// Restore even if the backup's SHA-256 does not check out.
        #[arg(long)]
        skip_hash_check: bool,
    },
}

/// Runs `synod snapshot`.
pub fn run(flags: SnapshotFlags) -> anyhow::Result<()> {
    match flags.command {
        SnapshotCommand::Save { file, endpoints } => save(&file, &endpoints),
        SnapshotCommand::Restore {
            file,
            data_dir,
            skip_hash_check,
        } => restore(&file, &data_dir, skip_hash_check),
    }
}

fn save(path: &Path, endpoints: &Endpoints) -> anyhow::Result<()> {
    if endpoints
        .endpoints
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .count()
        != 1
    {
        bail!(
            "snapshot save streams from one member: give exactly one endpoint (got {:?})",
            endpoints.endpoints
        );
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let bytes = block_on(async {
        let client = endpoints.connect()?;
        let mut stream = client.snapshot().await?;
        let mut out = File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut bytes = 0u64;
        let mut last_report = Instant::now();
        while let Some(message) = stream.message().await? {
            out.write_all(&message.blob)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            bytes += message.blob.len() as u64;
            if last_report.elapsed() >= Duration::from_secs(1) {
                eprintln!("received {bytes} bytes, {} to go", message.remaining_bytes);
                last_report = Instant::now();
            }
        }
        out.sync_all()?;
        Ok(bytes)
    })?;
    backup::verify(&partial)
        .with_context(|| format!("the backup stream ended early; {} kept", partial.display()))?;
    fs::rename(&partial, path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    println!("Snapshot saved at {} ({bytes} bytes)", path.display());
    Ok(())
}

fn restore(path: &Path, data_dir: &Path, skip_hash_check: bool) -> anyhow::Result<()> {
    if fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "data dir {} is not empty; restore creates a new member's data dir",
            data_dir.display()
        );
    }
    if !skip_hash_check {
        backup::verify(path).with_context(|| {
            format!(
                "{} is not a whole backup (use --skip-hash-check to restore it anyway)",
                path.display()
            )
        })?;
    }
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let db = open_database(&data_dir.join(DATABASE_FILE), DEFAULT_CACHE_BYTES)?;
    let restored = backup::restore(&db, synod_server::group::DEFAULT_GROUP, path)
        .with_context(|| format!("cannot restore {}", path.display()))?;
    println!(
        "Restored revision {} ({} key versions, {} leases) into {}",
        restored.revision,
        restored.versions,
        restored.leases,
        data_dir.display()
    );
    println!(
        "Start the member with: synod serve --data-dir {} --initial-cluster-state new (and the new cluster's flags)",
        data_dir.display()
    );
    Ok(())
}
