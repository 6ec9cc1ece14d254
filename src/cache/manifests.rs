//! Manifests by digest (`manifests/<alg>/<hex>` holds the exact upstream bytes, `<hex>.type` the
//! media type), tag records (`tags/<upstream>/<repo>/@tags/<tag>`: digest, media type and
//! size) and the last tag list and referrers answers (`tags/<upstream>/<repo>/@docs/<name>`).
//! `@` cannot occur in a repository name, so these never collide with nested repositories. Tag
//! freshness lives in memory on the tokio clock: after a restart every tag is revalidated once.
//! Every file is written through `atomic.rs`: whole or not at all.
//!
//! Manifests count against the disk budget like blobs and are evicted the same way; reading one
//! refreshes the recency of what it references (an image's config and layers, an index's child
//! manifests), so an image that is pulled keeps its layers. A manifest or tag record that cannot
//! be written (no room, disk full) is logged and counted, not turned into a client error: the
//! answer is served from memory all the same.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::atomic::{self, Staged};
use super::index::{on_disk, Admission, Index, Key};
use super::layout::Layout;
use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName, Tag};

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
        let Some(bytes) = atomic::read(&path).await? else {
            self.index.forget(&key);
            return Ok(None);
        };
        let media_type = atomic::read(&self.layout.manifest_type(digest))
            .await?
            .unwrap_or_default();
        self.index.touch_references(&bytes);
        Ok(Some(StoredManifest {
            digest: digest.clone(),
            media_type: String::from_utf8_lossy(&media_type).into_owned(),
            bytes: Bytes::from(bytes),
        }))
    }

    /// Keeps verified manifest bytes if the budget has room. Both files are staged in `tmp/`
    /// first and renamed into place together under the index lock.
    pub async fn put(&self, m: &StoredManifest) -> io::Result<()> {
        if let Err(e) = self.try_put(m).await {
            self.metrics.cache_write_errors.inc();
            tracing::warn!(digest = %m.digest, error = %e, "cannot write a manifest to the cache; served without keeping it");
        }
        Ok(())
    }

    async fn try_put(&self, m: &StoredManifest) -> io::Result<()> {
        let (index, layout, m) = (self.index.clone(), self.layout.clone(), m.clone());
        let admitted = tokio::task::spawn_blocking(move || {
            let media_type = Staged::with(&layout.tmp(), m.media_type.as_bytes())?;
            let body = Staged::with(&layout.tmp(), &m.bytes)?;
            let len = m.bytes.len() as u64;
            let disk = on_disk(len) + on_disk(m.media_type.len() as u64);
            let admitted = index.publish(Key::manifest(&m.digest), len, disk, None, false, || {
                media_type.persist(&layout.manifest_type(&m.digest))?;
                body.persist(&layout.manifest(&m.digest))
            })?;
            match admitted {
                Admission::Kept(_) => index.touch_references(&m.bytes),
                Admission::NoRoom => {
                    tracing::info!(digest = %m.digest, "no room for a manifest within the cache budget; not kept");
                }
            }
            Ok(())
        });
        admitted.await.map_err(io::Error::other)?
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

type TagKey = (String, RepoName, Tag);

pub struct TagStore {
    root: PathBuf,
    tmp: PathBuf,
    checked: Mutex<HashMap<TagKey, Instant>>,
    metrics: Arc<Metrics>,
}

impl TagStore {
    pub fn open(layout: &Layout, metrics: Arc<Metrics>) -> io::Result<TagStore> {
        let root = layout.dir().join("tags");
        std::fs::create_dir_all(&root)?;
        Ok(TagStore {
            root,
            tmp: layout.tmp(),
            checked: Mutex::new(HashMap::new()),
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
        let Some(bytes) = atomic::read(&self.path(upstream, repo, tag)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Records where a tag points. A record that cannot be written is logged, not an error: the
    /// tag is then looked up upstream again next time.
    pub async fn put(&self, upstream: &str, repo: &RepoName, tag: &Tag, rec: &TagRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
        match self.write(self.path(upstream, repo, tag), bytes).await {
            Ok(()) => self.mark_checked(upstream, repo, tag),
            Err(e) => {
                self.metrics.cache_write_errors.inc();
                tracing::warn!(%repo, %tag, error = %e, "cannot write a tag record to the cache");
            }
        }
        Ok(())
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
        Ok(atomic::read(&self.doc_path(upstream, repo, name))
            .await?
            .map(Bytes::from))
    }

    pub async fn put_doc(&self, upstream: &str, repo: &RepoName, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.write(self.doc_path(upstream, repo, name), bytes.to_vec())
            .await
    }

    /// Writes a record or document in place of the old one, creating its directory.
    async fn write(&self, dest: PathBuf, bytes: Vec<u8>) -> io::Result<()> {
        let tmp = self.tmp.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            atomic::write(&tmp, &dest, &bytes)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Whether the tag was confirmed with the upstream less than `ttl` ago.
    pub fn is_fresh(&self, upstream: &str, repo: &RepoName, tag: &Tag, ttl: Duration) -> bool {
        let key = (upstream.to_string(), repo.clone(), tag.clone());
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|t| t.elapsed() < ttl)
    }

    pub fn mark_checked(&self, upstream: &str, repo: &RepoName, tag: &Tag) {
        let key = (upstream.to_string(), repo.clone(), tag.clone());
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Instant::now());
    }
}
