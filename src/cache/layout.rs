//! Where everything lives under the cache directory. Paths of content are built only from a
//! `Digest`, and paths of records only from a `RecordPath` (checked components of parsed names),
//! so no unchecked name from the network ever reaches the file system.
//!
//! ```text
//! blobs/<alg>/<hex>            verified blobs
//! manifests/<alg>/<hex>        verified manifest bytes; <hex>.type holds the media type
//! tags/<upstream>/<repo>/@tags/<tag>     tag records
//! tags/<upstream>/<repo>/@docs/<name>    the last tag list and referrers answers
//! tags/<upstream>/<repo>/@links/<alg>-<hex>  digests fetched or verified for the repository
//! tmp/                         downloads in progress, atomic writes, evicted files being deleted
//! index/recency                snapshot of last access times (rewritten periodically)
//! index/pinned                 digests that are never evicted
//! lock                         advisory lock held by the process that owns the directory
//! regcache-store               marks the directory as a store, with its format (store_mark.rs)
//! ```

use std::path::{Path, PathBuf};

use super::key::{Key, Kind, RecordPath};
use crate::oci::Digest;

#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blobs(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    pub fn tags(&self) -> PathBuf {
        self.dir.join("tags")
    }

    pub fn tmp(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.algorithm().as_str()).join(digest.hex())
    }

    pub fn manifest(&self, digest: &Digest) -> PathBuf {
        self.manifests()
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    pub fn manifest_type(&self, digest: &Digest) -> PathBuf {
        self.manifest(digest).with_extension("type")
    }

    pub fn record(&self, path: &RecordPath) -> PathBuf {
        let mut p = self.tags();
        p.extend(path.components());
        p
    }

    /// Every file that makes up a cached entry. A record's path cannot be told from its key, so
    /// the caller passes it (without one a record has no files here).
    pub fn files(&self, key: &Key, record: Option<&RecordPath>) -> Vec<PathBuf> {
        match key.kind {
            Kind::Blob => vec![self.blob(&key.digest)],
            Kind::Manifest => vec![self.manifest(&key.digest), self.manifest_type(&key.digest)],
            Kind::Record => record.map(|r| self.record(r)).into_iter().collect(),
        }
    }

    pub fn recency(&self) -> PathBuf {
        self.dir.join("index").join("recency")
    }

    pub fn pinned(&self) -> PathBuf {
        self.dir.join("index").join("pinned")
    }

    pub fn marker(&self) -> PathBuf {
        self.dir.join("regcache-store")
    }

    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// Creates the directories of an empty cache (existing ones are kept).
    pub fn create(&self) -> std::io::Result<()> {
        for alg in ["sha256", "sha512"] {
            std::fs::create_dir_all(self.blobs().join(alg))?;
            std::fs::create_dir_all(self.manifests().join(alg))?;
        }
        std::fs::create_dir_all(self.tmp())?;
        std::fs::create_dir_all(self.dir.join("index"))?;
        std::fs::create_dir_all(self.tags())
    }
}
