//! Files written beside their final name and renamed into place when whole
//! (a defragmented copy, a snapshot). If the writing fails, the disk is full for
//! instance, the partial file must not stay behind taking the space.

use std::fs;
use std::path::{Path, PathBuf};

/// Removes the file at its path when dropped, unless [`PartialFile::keep`] was
/// called.
pub struct PartialFile {
    path: Option<PathBuf>,
}

impl PartialFile {
    /// Takes charge of the file at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Leaves the file in place: it was renamed, or is wanted.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            match fs::remove_file(&path) {
                Ok(()) => tracing::info!("removed the partial file {}", path.display()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot remove the partial file {}", path.display())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_is_removed_unless_kept() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let dropped = dir.path().join("dropped");
        fs::write(&dropped, b"half")?;
        drop(PartialFile::new(&dropped));
        assert!(!dropped.exists());
        let kept = dir.path().join("kept");
        fs::write(&kept, b"whole")?;
        PartialFile::new(&kept).keep();
        assert!(kept.exists());
        // A file never created is no error.
        drop(PartialFile::new(dir.path().join("never")));
        Ok(())
    }
}
