//! Manifests by digest (`manifests/<alg>/<hex>` holds the exact upstream bytes, `<hex>.type` the
//! media type), tag records (`tags/<upstream>/<repo>/@tags/<tag>`: digest, media type and
//! size) and the last tag list and referrers answers (`tags/<upstream>/<repo>/@docs/<name>`).
//! `@` cannot occur in a repository name, so these never collide with nested repositories. How
//! fresh a tag is, is the pull-through policy's business (`registry/mirror`), not the store's.
//!
//! Manifests count against the disk budget like blobs and are evicted the same way; reading one
//! refreshes the recency of what it references (an image's config and layers, an index's child
//! manifests), so an image that is pulled keeps its layers. A manifest or tag record that cannot
//! be written (no room, disk full) is logged and counted, not turned into a client error: the
//! answer is served from memory all the same.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::index::{on_disk, Admission, Index, Key};
use super::layout::Layout;
use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName, Tag};

static SEQ: AtomicU64 = AtomicU64::new(0);

fn temp_name() -> String {
    format!(
        "meta.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

async fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let t = tmp.join(temp_name());
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::write(&t, bytes).await?;
    tokio::fs::rename(&t, dest).await.inspect_err(|_| {
        let _ = std::fs::remove_file(&t);
    })
}

async fn read_opt(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

pub struct ManifestStore {
    layout: Layout,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
}

impl ManifestStore {
    pub fn open(layout: &Layout, index: Arc<Index>, metrics: Arc<Metrics>) -> io::Result<ManifestStore> {
        layout.create()?;
        Ok(ManifestStore {
            layout: layout.clone(),
            index,
            metrics,
        })
    }

    /// A cached manifest, counting as an access to it and to everything it references.
    pub async fn get(&self, digest: &Digest) -> io::Result<Option<StoredManifest>> {
        let key = Key::manifest(digest);
        let Some((_lease, _)) = self.index.lease(&key) else {
            return Ok(None);
        };
        let path = self.layout.manifest(digest);
        let Some(bytes) = read_opt(&path).await? else {
            self.index.forget(&key);
            return Ok(None);
        };
        let media_type = read_opt(&self.layout.manifest_type(digest))
            .await?
            .unwrap_or_default();
        self.index.touch_references(&bytes);
        Ok(Some(StoredManifest {
            digest: digest.clone(),
            media_type: String::from_utf8_lossy(&media_type).into_owned(),
            bytes: Bytes::from(bytes),
        }))
    }

    /// Keeps verified manifest bytes if the budget has room. Both files are written to `tmp/`
    /// first and renamed into place together under the index lock.
    pub async fn put(&self, m: &StoredManifest) -> io::Result<()> {
        if let Err(e) = self.try_put(m).await {
            self.metrics.cache.write_errors.inc();
            tracing::warn!(digest = %m.digest, error = %e, "cannot write a manifest to the cache; served without keeping it");
        }
        Ok(())
    }

    async fn try_put(&self, m: &StoredManifest) -> io::Result<()> {
        let tmp = self.layout.tmp();
        let type_tmp = tmp.join(temp_name());
        let body_tmp = tmp.join(temp_name());
        let written = async {
            tokio::fs::write(&type_tmp, m.media_type.as_bytes()).await?;
            tokio::fs::write(&body_tmp, &m.bytes).await
        }
        .await;
        let cleanup = |paths: [&PathBuf; 2]| {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        };
        if let Err(e) = written {
            cleanup([&type_tmp, &body_tmp]);
            return Err(e);
        }
        let (index, layout, digest) = (self.index.clone(), self.layout.clone(), m.digest.clone());
        let len = m.bytes.len() as u64;
        let disk = on_disk(len) + on_disk(m.media_type.len() as u64);
        let (t, b) = (type_tmp.clone(), body_tmp.clone());
        let admitted = tokio::task::spawn_blocking(move || {
            index.publish(Key::manifest(&digest), len, disk, None, false, || {
                std::fs::rename(&t, layout.manifest_type(&digest))?;
                std::fs::rename(&b, layout.manifest(&digest))
            })
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        cleanup([&type_tmp, &body_tmp]);
        match admitted? {
            Admission::Kept(_) => self.index.touch_references(&m.bytes),
            Admission::NoRoom => {
                tracing::info!(digest = %m.digest, "no room for a manifest within the cache budget; not kept");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl TagRecord {
    pub fn digest(&self) -> Option<Digest> {
        self.digest.parse().ok()
    }
}

pub struct TagStore {
    root: PathBuf,
    tmp: PathBuf,
    metrics: Arc<Metrics>,
}

impl TagStore {
    pub fn open(layout: &Layout, metrics: Arc<Metrics>) -> io::Result<TagStore> {
        let root = layout.dir().join("tags");
        std::fs::create_dir_all(&root)?;
        Ok(TagStore {
            root,
            tmp: layout.tmp(),
            metrics,
        })
    }

    fn path(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> PathBuf {
        let mut p = self.root.join(upstream);
        for c in repo.components() {
            p.push(c);
        }
        p.push("@tags");
        p.push(tag.as_str());
        p
    }

    pub async fn get(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        let Some(bytes) = read_opt(&self.path(upstream, repo, tag)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Records where a tag points. A record that cannot be written is logged, not an error: the
    /// tag is then looked up upstream again next time.
    pub async fn put(&self, upstream: &str, repo: &RepoName, tag: &Tag, rec: &TagRecord) -> io::Result<bool> {
        let bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
        match write_atomic(&self.tmp, &self.path(upstream, repo, tag), &bytes).await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.metrics.cache.write_errors.inc();
                tracing::warn!(%repo, %tag, error = %e, "cannot write a tag record to the cache");
                Ok(false)
            }
        }
    }

    fn doc_path(&self, upstream: &str, repo: &RepoName, name: &str) -> PathBuf {
        let mut p = self.root.join(upstream);
        for c in repo.components() {
            p.push(c);
        }
        p.push("@docs");
        p.push(name);
        p
    }

    /// The last copy of a per-repository document (tag list, referrers) kept for offline use.
    /// `name` is chosen by regcache, never by a client.
    pub async fn get_doc(&self, upstream: &str, repo: &RepoName, name: &str) -> io::Result<Option<Bytes>> {
        Ok(read_opt(&self.doc_path(upstream, repo, name))
            .await?
            .map(Bytes::from))
    }

    pub async fn put_doc(&self, upstream: &str, repo: &RepoName, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.tmp, &self.doc_path(upstream, repo, name), bytes).await
    }
}
