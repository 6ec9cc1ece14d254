//! The blob files on disk: `blobs/<algorithm>/<hex>`, each complete and verified (opened for
//! reading as a `CachedBlob`, which holds its lease), and `tmp/` for downloads in progress. A
//! download streams into a `Staged` file (`atomic.rs`) that deletes itself when dropped unless it
//! was placed, so an interrupted or failed download never leaves anything under a real name. What is cached is
//! the index's business (`index.rs`): this module only moves bytes and files.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::atomic::Staged;
use super::layout::Layout;
use super::lease::Lease;
use crate::oci::Digest;

#[derive(Debug, Clone)]
pub(super) struct BlobStore {
    layout: Layout,
    /// Writes still to fail on purpose (tests of the disk-full path).
    failing_writes: Arc<AtomicUsize>,
}

impl BlobStore {
    /// Opens the store, deleting leftovers of a crash in `tmp/`: never published, never to be
    /// read again.
    pub(super) fn open(layout: &Layout) -> io::Result<BlobStore> {
        layout.create()?;
        for entry in std::fs::read_dir(layout.tmp())?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(BlobStore {
            layout: layout.clone(),
            failing_writes: Arc::default(),
        })
    }

    pub(super) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(super) fn path(&self, digest: &Digest) -> PathBuf {
        self.layout.blob(digest)
    }

    /// Opens a cached blob for reading, with its size; None if the file is not there.
    pub(super) fn open_blob(&self, digest: &Digest) -> io::Result<Option<(File, u64)>> {
        match File::open(self.path(digest)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new temp file for `digest`: the guard that deletes it, the write handle, and a read
    /// handle for followers that stays valid after the rename.
    pub(super) fn temp_file(&self, digest: &Digest) -> io::Result<(Staged, File, File)> {
        self.injected_failure()?;
        let prefix = format!("{}-{}.", digest.algorithm().as_str(), digest.hex());
        let (staged, write) = Staged::create(&self.layout.tmp(), &prefix)?;
        let read = File::open(staged.path())?;
        Ok((staged, write, read))
    }

    /// Moves a verified, synced temp file to its place in the store. Called under the index
    /// lock (see `Index::publish`), so it is only the rename.
    pub(super) fn place(&self, temp: Staged, digest: &Digest) -> io::Result<()> {
        temp.persist(&self.path(digest))
    }

    /// Makes a placed blob's directory entry durable.
    pub(super) fn sync_dir(&self, digest: &Digest) -> io::Result<()> {
        match self.path(digest).parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// Makes the next `n` temp-file creations or blob writes fail as if the disk were full.
    #[doc(hidden)]
    pub(super) fn fail_next_writes(&self, n: usize) {
        self.failing_writes.store(n, Ordering::SeqCst);
    }

    /// An injected "disk full", if one is pending.
    pub(super) fn injected_failure(&self) -> io::Result<()> {
        let pending = self
            .failing_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match pending {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected)",
            )),
            Err(_) => Ok(()),
        }
    }
}

/// A complete cached blob opened for reading, held from eviction while this lives.
pub struct CachedBlob {
    pub file: Arc<File>,
    pub size: u64,
    _lease: Lease,
}

impl CachedBlob {
    pub fn new(file: File, size: u64, lease: Lease) -> CachedBlob {
        CachedBlob {
            file: Arc::new(file),
            size,
            _lease: lease,
        }
    }
}
