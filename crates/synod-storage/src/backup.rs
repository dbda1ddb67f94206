//! Backups: a consistent copy of a node's data, as the Maintenance Snapshot stream
//! carries it and `synod snapshot restore` reads it.
//!
//! A backup is the snapshot frames of the default group (see [`crate::snapshot`])
//! followed by their SHA-256, as etcd appends one to its snapshot stream, so a
//! damaged or truncated file is refused instead of restored. The frames are padded
//! with zeros to a multiple of 512 bytes (etcd's page-sized database file), which
//! etcdctl checks before it accepts a stream.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::database::Store;
use crate::error::{StoreError, StoreResult};
use crate::snapshot::{self, Restored};
use crate::types::GroupId;

/// Bytes of the digest at the end of a backup.
pub const DIGEST_BYTES: u64 = 32;

/// The payload is padded to a multiple of this.
const PAYLOAD_ALIGNMENT: u64 = 512;

/// A backup written to a file, ready to be streamed.
#[derive(Debug)]
pub struct Backup {
    /// The file, positioned at its start. It has no name: it disappears when closed.
    pub file: File,
    /// Its length, digest included.
    pub bytes: u64,
    /// The store's revision it covers.
    pub revision: i64,
}

/// Writes a backup of `group` to an anonymous file in `dir` (on the data dir's file
/// system, so it never fills a small temp mount).
pub fn write(db: &Store, group: GroupId, dir: &Path) -> StoreResult<Backup> {
    let file = tempfile::tempfile_in(dir)?;
    let mut out = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        written: 0,
    };
    let revision = snapshot::backup(db, group, &mut out)?;
    let payload = out.written;
    let padding = (PAYLOAD_ALIGNMENT - payload % PAYLOAD_ALIGNMENT) % PAYLOAD_ALIGNMENT;
    out.write_all(&vec![0u8; padding as usize])?;
    let digest = out.hasher.finalize();
    let mut file = out.inner.into_inner().map_err(|error| error.into_error())?;
    file.write_all(&digest)?;
    let bytes = file.stream_position()?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Backup {
        file,
        bytes,
        revision,
    })
}

/// Checks that the file at `path` is a whole backup: its last 32 bytes are the
/// SHA-256 of the rest.
pub fn verify(path: &Path) -> StoreResult<()> {
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    if bytes < DIGEST_BYTES {
        return Err(StoreError::Corrupt(format!(
            "{} is {bytes} bytes, too short to be a backup",
            path.display()
        )));
    }
    let mut hasher = Sha256::new();
    std::io::copy(
        &mut BufReader::new(&mut file).take(bytes - DIGEST_BYTES),
        &mut hasher,
    )?;
    let mut stored = [0u8; DIGEST_BYTES as usize];
    file.seek(SeekFrom::Start(bytes - DIGEST_BYTES))?;
    file.read_exact(&mut stored)?;
    if hasher.finalize().as_slice() != stored {
        return Err(StoreError::Corrupt(format!(
            "{} fails its SHA-256 check: the file is damaged or incomplete",
            path.display()
        )));
    }
    Ok(())
}

/// Seeds `group` of a new, empty database with the backup at `path` (see
/// [`snapshot::restore`]). Check it with [`verify`] first.
pub fn restore(db: &Store, group: GroupId, path: &Path) -> StoreResult<Restored> {
    let mut input = BufReader::new(File::open(path)?);
    snapshot::restore(db, group, &mut input)
}

/// Passes writes through, hashes and counts them.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
