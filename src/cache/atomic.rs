//! The one way a file gets a real name under the cache directory: its bytes go to a temp file in
//! `tmp/` (same file system as the store), which is then renamed into place, so a reader sees
//! the old file or the new one, never half of one. A `Staged` file that is never renamed
//! deletes itself when dropped, so an error or an early return leaves nothing behind (and what
//! a crash leaves in `tmp/` is deleted at the next start, `blobs.rs`).
//!
//! Content and small records are staged here and renamed under the index lock by
//! `Index::publish` (a manifest's two files together); the snapshots of `snapshot.rs`, which are
//! not content, go through `write` directly. Blob downloads stream into a `Staged` file.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::TempPath;

/// A temp file in `tmp/` waiting for its name; deleted on drop unless persisted.
#[derive(Debug)]
pub(super) struct Staged(TempPath);

impl Staged {
    /// A new empty temp file in `tmp` whose name starts with `prefix`, and its write handle.
    pub(super) fn create(tmp: &Path, prefix: &str) -> io::Result<(Staged, File)> {
        let (file, path) = tempfile::Builder::new()
            .prefix(prefix)
            // As `File::create` would: the umask decides, as for every other file of the cache.
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(tmp)?
            .into_parts();
        Ok((Staged(path), file))
    }

    /// A temp file in `tmp` holding `bytes`. Blocking.
    pub(super) fn with(tmp: &Path, bytes: &[u8]) -> io::Result<Staged> {
        let (staged, mut file) = Staged::create(tmp, "staged.")?;
        file.write_all(bytes)?;
        Ok(staged)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    /// Renames the file to `dest`, replacing what is there. On failure the temp file is deleted.
    pub(super) fn persist(self, dest: &Path) -> io::Result<()> {
        self.0.persist(dest).map_err(|e| e.error)
    }
}

/// Writes `bytes` to `dest` through a temp file in `tmp`. Blocking.
pub(super) fn write(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    Staged::with(tmp, bytes)?.persist(dest)
}

/// A whole small file, or None when there is none.
pub(super) async fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_appear_whole_or_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let dest = dir.path().join("dest");
        write(&tmp, &dest, b"one").unwrap();
        write(&tmp, &dest, b"two").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"two");
        drop(Staged::with(&tmp, b"dropped").unwrap());
        let nowhere = dir.path().join("no-such-dir").join("dest");
        assert!(Staged::with(&tmp, b"x").unwrap().persist(&nowhere).is_err());
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "nothing left in tmp/"
        );
        assert!(write(&dir.path().join("no-tmp"), &dest, b"x").is_err());
    }
}
