//! Content that arrives whole from outside a download (an imported bundle): each file is
//! staged in `tmp/` while it is hashed (`Incoming`), so nothing of it has a real name until the
//! whole bundle has been read and checked, then adopted in one step (`Cache::adopt`): room for
//! every new file is reserved first, so a bundle the budget cannot hold adds nothing; the
//! content is pinned first when asked, so eviction cannot take a part of it while the rest is
//! placed; blobs are renamed into the store, then manifests. Tag records and links are the
//! caller's last step, so a tag never names content that is not there. Blocking.

use std::fs::File;
use std::io::{self, Read, Write};

use super::atomic::Staged;
use super::blobs::BlobStore;
use super::index::{Admission, Index};
use super::key::{on_disk, Key};
use super::lease::Reservation;
use super::manifests::StoredManifest;
use crate::oci::{Algorithm, Digest, Hasher};

/// A file being staged: written and hashed as it comes.
pub struct Incoming {
    staged: Staged,
    file: File,
    hasher: Hasher,
    size: u64,
}

impl Write for Incoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Incoming {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Synced to disk, with the digest of what was written.
    pub fn finish(self) -> io::Result<StagedContent> {
        self.file.sync_data()?;
        Ok(StagedContent {
            staged: self.staged,
            digest: self.hasher.finish(),
            size: self.size,
        })
    }
}

/// A staged file and what its bytes hash to; deleted when dropped unless adopted.
#[derive(Debug)]
pub struct StagedContent {
    staged: Staged,
    pub digest: Digest,
    pub size: u64,
}

impl StagedContent {
    /// The same file named by `digest`, another algorithm's digest of the same bytes (checked
    /// by the caller with `digest_as`).
    pub fn renamed(self, digest: Digest) -> StagedContent {
        StagedContent { digest, ..self }
    }

    /// What the bytes hash to with `algorithm` (read again when it is not the one used while
    /// they were written). Blocking.
    pub fn digest_as(&self, algorithm: Algorithm) -> io::Result<Digest> {
        if self.digest.algorithm() == algorithm {
            return Ok(self.digest.clone());
        }
        let mut hasher = Hasher::new(algorithm);
        let mut file = File::open(self.staged.path())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf)? {
                0 => return Ok(hasher.finish()),
                n => hasher.update(&buf[..n]),
            }
        }
    }

    /// The whole file (for a manifest or a small document; the caller bounds the size).
    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(self.size as usize);
        File::open(self.staged.path())?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// What `adopt` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    /// Blobs and manifests placed, and their bytes.
    pub added: u64,
    pub added_bytes: u64,
    /// Ones that were cached already (their staged copy was dropped).
    pub present: u64,
}

/// Why adopting failed; nothing was placed, except after `Placing`.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("the cache budget cannot make room for {needed} more bytes (max_size, less what is pinned or being read)")]
    NoRoom { needed: u64 },
    #[error("cannot keep the content: {0}")]
    Io(#[from] io::Error),
}

/// A new staged file whose bytes are hashed with `algorithm`. Blocking.
pub(super) fn incoming(store: &BlobStore, algorithm: Algorithm) -> io::Result<Incoming> {
    store.injected_failure()?;
    let (staged, file) = Staged::create(&store.layout().tmp(), "incoming.")?;
    Ok(Incoming {
        staged,
        file,
        hasher: Hasher::new(algorithm),
        size: 0,
    })
}

/// Places checked blobs and manifests into the store, pinned first when `pin`: all of them,
/// or none when the budget has no room for them. Blocking.
pub(super) fn adopt(
    index: &Index,
    store: &BlobStore,
    blobs: Vec<StagedContent>,
    manifests: Vec<(StoredManifest, StagedContent)>,
    pin: bool,
) -> Result<Adopted, AdoptError> {
    let mut report = Adopted::default();
    let keys: Vec<Key> = blobs
        .iter()
        .map(|b| Key::blob(&b.digest))
        .chain(manifests.iter().map(|(m, _)| Key::manifest(&m.digest)))
        .collect();
    let keys_len = keys.len();
    // Pinned before any room is made, so making room cannot take content already present that
    // the bundle's tags will name; undone when there is no room after all.
    let newly_pinned = match pin {
        true => pin_all(index, keys)?,
        false => Vec::new(),
    };
    let new_blobs: Vec<StagedContent> = blobs
        .into_iter()
        .filter(|b| !index.contains(&Key::blob(&b.digest)))
        .collect();
    let new_manifests: Vec<(StoredManifest, StagedContent)> = manifests
        .into_iter()
        .filter(|(m, _)| !index.contains(&Key::manifest(&m.digest)))
        .collect();
    // What was staged again of content the store holds is dropped (its staged file with it).
    report.present = (keys_len - new_blobs.len() - new_manifests.len()) as u64;
    let sizes: Vec<u64> = new_blobs
        .iter()
        .map(|b| on_disk(b.size))
        .chain(new_manifests.iter().map(|(m, _)| manifest_on_disk(m)))
        .collect();
    let needed = sizes.iter().sum();
    let Some(reservations) = reserve_all(index, sizes) else {
        for key in newly_pinned {
            index.pin(key, false)?;
        }
        return Err(AdoptError::NoRoom { needed });
    };
    let mut reservations = reservations.into_iter();
    let layout = store.layout().clone();
    for blob in new_blobs {
        let (digest, size) = (blob.digest.clone(), blob.size);
        let path = layout.blob(&digest);
        place(
            index,
            Key::blob(&digest),
            size,
            on_disk(size),
            reservations.next(),
            || blob.staged.persist(&path),
        )?;
        store.sync_dir(&digest)?;
        report.added += 1;
        report.added_bytes += size;
    }
    for (m, content) in new_manifests {
        let (disk, len) = (manifest_on_disk(&m), m.bytes.len() as u64);
        let media_type = Staged::with(&layout.tmp(), m.media_type.as_bytes())?;
        let (type_path, path) = (layout.manifest_type(&m.digest), layout.manifest(&m.digest));
        place(
            index,
            Key::manifest(&m.digest),
            len,
            disk,
            reservations.next(),
            || {
                media_type.persist(&type_path)?;
                content.staged.persist(&path)
            },
        )?;
        index.touch_references(&m.bytes);
        report.added += 1;
        report.added_bytes += len;
    }
    Ok(report)
}

/// Pins `keys`; returns the ones that were not pinned before.
fn pin_all(index: &Index, keys: Vec<Key>) -> io::Result<Vec<Key>> {
    let mut newly = Vec::new();
    for key in keys {
        if !index.is_pinned(&key) {
            index.pin(key.clone(), true)?;
            newly.push(key);
        }
    }
    Ok(newly)
}

/// A reservation for each size, or None (and none held) when one does not fit.
fn reserve_all(index: &Index, sizes: Vec<u64>) -> Option<Vec<Reservation>> {
    sizes.into_iter().map(|size| index.reserve(size).ok()).collect()
}

fn place(
    index: &Index,
    key: Key,
    len: u64,
    disk: u64,
    reservation: Option<Reservation>,
    rename: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    match index.publish(key, len, disk, reservation, false, rename)? {
        Admission::Kept(_) => Ok(()),
        Admission::NoRoom => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "no room within the cache budget",
        )),
    }
}

fn manifest_on_disk(m: &StoredManifest) -> u64 {
    on_disk(m.bytes.len() as u64) + on_disk(m.media_type.len() as u64)
}
