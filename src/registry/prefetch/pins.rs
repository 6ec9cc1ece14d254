//! Pins: what `--pin` marks and `unpin` clears (manifests, blobs, the tag record and the
//! repository links of an image), changed off the async threads.

use std::collections::HashSet;
use std::sync::Arc;

use super::super::{Registry, RegistryError};
use super::request::{PrefetchRef, UnpinReport};
use crate::cache::{Cache, Key};
use crate::oci::{references, Digest};

impl Registry {
    /// Removes the pins of an image's manifests, blobs, tag record and links, walking what the
    /// cache holds (the tag through its cached record; no upstream request).
    pub async fn unpin(&self, r: &PrefetchRef) -> Result<UnpinReport, RegistryError> {
        let repo = self.resolve_image(&r.image)?;
        let cache = self.mirror.cache();
        let (host, name) = (repo.namespace(), repo.name());
        let tag = r.tag();
        let top = match &r.digest {
            Some(d) => d.clone(),
            None => cache
                .tag(host, name, &tag)
                .await?
                .and_then(|rec| rec.digest())
                .ok_or_else(|| {
                    RegistryError::ManifestUnknown(format!("no cached tag record for {host}/{name}:{tag}"))
                })?,
        };
        let mut manifests: Vec<Digest> = Vec::new();
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut todo = vec![top.clone()];
        while let Some(d) = todo.pop() {
            if manifests.contains(&d) {
                continue;
            }
            manifests.push(d.clone());
            if let Some(m) = cache.manifest(&d).await? {
                let refs = references(&m.bytes);
                blobs.extend(refs.blobs);
                todo.extend(refs.manifests);
            }
            let doc = format!("referrers-{}-{}", d.algorithm().as_str(), d.hex());
            if let Some(index) = cache.doc(host, name, &doc).await? {
                todo.extend(references(&index).manifests);
            }
        }
        let blobs: Vec<Digest> = blobs.into_iter().collect();
        let everything: Vec<Digest> = manifests.iter().chain(&blobs).cloned().collect();
        let tag = r.digest.is_none().then_some(&tag);
        let mut keys: Vec<Key> = manifests.iter().map(Key::manifest).collect();
        keys.extend(blobs.iter().map(Key::blob));
        keys.extend(cache.record_keys(host, name, tag, &everything)?);
        // A layer this image shares with a hosted or another pinned image keeps its pin.
        let c = cache.clone();
        tokio::task::spawn_blocking(move || c.unpin_keeping_linked(&keys))
            .await
            .map_err(std::io::Error::other)??;
        Ok(UnpinReport {
            upstream: host.to_string(),
            repository: name.to_string(),
            digest: top.to_string(),
            manifests: manifests.len() as u64,
            blobs: blobs.len() as u64,
        })
    }
}

/// Pins or unpins `keys` off the async threads (each change rewrites `index/pinned`).
pub(in crate::registry) async fn set_pins(
    cache: &Arc<Cache>,
    keys: Vec<Key>,
    pinned: bool,
) -> std::io::Result<()> {
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        for key in keys {
            cache.pin(key, pinned)?;
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}
