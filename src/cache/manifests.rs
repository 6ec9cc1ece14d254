//! Manifests by digest: `manifests/<alg>/<hex>` holds the exact upstream bytes, `<hex>.type` the
//! media type, both staged through `atomic.rs` and renamed into place together under the index
//! lock. (Tag records and kept documents are `tags.rs`.)
//!
//! Manifests count against the disk budget like blobs and are evicted the same way; reading one
//! refreshes the recency of what it references (an image's config and layers, an index's child
//! manifests), so an image that is pulled keeps its layers. A manifest that cannot be written (no
//! room, disk full) is logged and counted, not turned into a client error: the answer is served
//! from memory all the same.
//!
//! Small manifests that were read or written lately are also held in memory (bounded by bytes,
//! with their references already read), so a hit costs no disk read and no JSON parse; the
//! index still decides whether a manifest is cached, so an evicted one is not served from memory.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use moka::sync::Cache;

use super::atomic::{self, Staged};
use super::index::{Admission, Index};
use super::key::{on_disk, Key};
use super::layout::Layout;
use super::shared::{manifest_key, Level};
use crate::metrics::Metrics;
use crate::oci::{references, Digest, References};

/// The most bytes of manifests held in memory, all together.
const HOT_BYTES: u64 = 32 * 1024 * 1024;
/// Manifests larger than this are read from disk each time.
const HOT_MAX: usize = 256 * 1024;

/// A manifest held in memory: its media type, bytes and references.
struct Hot {
    media_type: String,
    bytes: Bytes,
    refs: References,
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
    hot: Cache<Digest, Arc<Hot>>,
    /// The shared store behind the directory: read on a miss, written after a put.
    shared: Option<Arc<Level>>,
}

impl ManifestStore {
    pub fn open(
        layout: &Layout,
        index: Arc<Index>,
        metrics: Arc<Metrics>,
        shared: Option<Arc<Level>>,
    ) -> io::Result<ManifestStore> {
        layout.create()?;
        Ok(ManifestStore {
            layout: layout.clone(),
            index,
            metrics,
            shared,
            hot: Cache::builder()
                .max_capacity(HOT_BYTES)
                .weigher(|_, h: &Arc<Hot>| {
                    u32::try_from(h.bytes.len() + h.media_type.len()).unwrap_or(u32::MAX)
                })
                .build(),
        })
    }

    /// A cached manifest, counting as an access to it and to everything it references.
    pub async fn get(&self, digest: &Digest) -> io::Result<Option<StoredManifest>> {
        if let Some(level) = &self.shared {
            level.used_manifest(digest);
        }
        let key = Key::manifest(digest);
        let Some((_lease, _)) = self.index.lease(&key) else {
            self.hot.invalidate(digest);
            return Ok(self.get_shared(digest).await);
        };
        if let Some(h) = self.hot.get(digest) {
            self.index.touch_refs(&h.refs);
            return Ok(Some(StoredManifest {
                digest: digest.clone(),
                media_type: h.media_type.clone(),
                bytes: h.bytes.clone(),
            }));
        }
        let path = self.layout.manifest(digest);
        let Some(bytes) = atomic::read(&path).await? else {
            self.index.forget(&key);
            return Ok(None);
        };
        let media_type = atomic::read(&self.layout.manifest_type(digest))
            .await?
            .unwrap_or_default();
        let m = StoredManifest {
            digest: digest.clone(),
            media_type: String::from_utf8_lossy(&media_type).into_owned(),
            bytes: Bytes::from(bytes),
        };
        let refs = references(&m.bytes);
        self.index.touch_refs(&refs);
        self.keep_hot(&m, refs);
        Ok(Some(m))
    }

    /// A manifest from the shared store, checked against its digest and kept locally.
    async fn get_shared(&self, digest: &Digest) -> Option<StoredManifest> {
        let (bytes, media_type) = self.shared.as_ref()?.get_small(&manifest_key(digest)).await?;
        if Digest::of(digest.algorithm(), &bytes) != *digest {
            tracing::warn!(%digest, "the shared store's copy of a manifest is corrupt; ignored");
            return None;
        }
        let m = StoredManifest {
            digest: digest.clone(),
            media_type: media_type.unwrap_or_default(),
            bytes,
        };
        self.put_local(&m).await;
        Some(m)
    }

    fn keep_hot(&self, m: &StoredManifest, refs: References) {
        if m.bytes.len() <= HOT_MAX {
            let hot = Hot {
                media_type: m.media_type.clone(),
                bytes: m.bytes.clone(),
                refs,
            };
            self.hot.insert(m.digest.clone(), Arc::new(hot));
        }
    }

    /// Keeps verified manifest bytes if the budget has room. Both files are staged in `tmp/`
    /// first and renamed into place together under the index lock.
    pub async fn put(&self, m: &StoredManifest) -> io::Result<()> {
        self.put_local(m).await;
        self.share(m);
        Ok(())
    }

    /// Writes a kept manifest to the shared store (in the background), if there is one.
    pub(super) fn share(&self, m: &StoredManifest) {
        if let Some(level) = &self.shared {
            level.used_manifest(&m.digest);
            let media_type = Some(m.media_type.clone()).filter(|t| !t.is_empty());
            level.put_small(manifest_key(&m.digest), m.bytes.clone(), media_type, true);
        }
    }

    async fn put_local(&self, m: &StoredManifest) {
        match self.try_put(m).await {
            Ok(true) => self.keep_hot(m, references(&m.bytes)),
            Ok(false) => {}
            Err(e) => {
                self.metrics.cache.write_errors.inc();
                tracing::warn!(digest = %m.digest, error = %e, "cannot write a manifest to the cache; served without keeping it");
            }
        }
    }

    /// Whether the manifest was kept.
    async fn try_put(&self, m: &StoredManifest) -> io::Result<bool> {
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
            Ok(matches!(admitted, Admission::Kept(_)))
        });
        admitted.await.map_err(io::Error::other)?
    }
}
