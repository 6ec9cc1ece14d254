//! The blob store on disk: `blobs/<algorithm>/<hex>`, each file complete and verified, and
//! `tmp/` for downloads in progress. A `TempFile` deletes itself when dropped unless it was
//! published, so an interrupted or failed download never leaves anything under a real name.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::oci::Digest;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub fn open(cache_dir: &Path) -> io::Result<BlobStore> {
        let root = cache_dir.join("blobs");
        let tmp = cache_dir.join("tmp");
        for alg in ["sha256", "sha512"] {
            std::fs::create_dir_all(root.join(alg))?;
        }
        std::fs::create_dir_all(&tmp)?;
        // Leftovers of a crash: never published, never to be read again.
        for entry in std::fs::read_dir(&tmp)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(BlobStore { root, tmp })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.algorithm().as_str()).join(digest.hex())
    }

    /// Opens a cached blob for reading, with its size.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Option<(File, u64)>> {
        match File::open(self.path(digest)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// A new temp file for `digest`: the guard that deletes it, the write handle, and a read
    /// handle for followers that stays valid after the rename.
    pub fn temp_file(&self, digest: &Digest) -> io::Result<(TempFile, File, File)> {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!(
            "{}-{}.{}.{}",
            digest.algorithm().as_str(),
            digest.hex(),
            std::process::id(),
            seq
        ));
        let write = OpenOptions::new().write(true).create_new(true).open(&path)?;
        let read = File::open(&path)?;
        Ok((TempFile { path: Some(path) }, write, read))
    }

    /// Makes a verified, synced temp file the cached blob.
    pub fn publish(&self, mut temp: TempFile, digest: &Digest) -> io::Result<()> {
        let from = temp
            .path
            .take()
            .ok_or_else(|| io::Error::other("temp file already published"))?;
        let to = self.path(digest);
        std::fs::rename(&from, &to).inspect_err(|_| {
            let _ = std::fs::remove_file(&from);
        })?;
        if let Some(dir) = to.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// A download in progress. Removed from disk on drop unless published.
pub struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
