//! Which repository may see which content. The cache keeps a digest once, whatever repository it
//! came through, but a digest is served under `<upstream>/<repo>` only when it was fetched for
//! that repository or the upstream confirmed that the repository has it: a digest learned
//! elsewhere (a private layer, say) reveals nothing under another name. Pulls pay nothing for
//! this: a manifest served for a repository links what it references (its config and layers, an
//! index's child manifests), and a tag links what it points to. Content that is cached but not
//! linked costs one upstream `HEAD` in that repository; if the upstream cannot be asked (offline,
//! down), it is not served.
//!
//! Links are small records in the cache (`@links/<alg>-<hex>`, budgeted and persisted), with a
//! bounded memory of recent ones in front so a pull does not touch the disk for each layer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use moka::sync::Cache as Memory;

use super::{At, Mirror};
use crate::oci::{references, Digest, RepoName};
use crate::registry::{RegistryError, Subject};
use crate::upstream::Fallback;

const REMEMBERED: u64 = 200_000;

/// (upstream host, repository, digest)
type LinkKey = (String, RepoName, Digest);

pub(super) struct Links {
    known: Memory<LinkKey, ()>,
    /// Manifests linked together with everything they reference (a hit then reads no JSON).
    whole: Memory<LinkKey, ()>,
    /// Downloads started for a repository, not verified yet: that repository's other clients
    /// follow them without asking (they fail together if it fails).
    pending: Arc<Mutex<HashSet<LinkKey>>>,
}

impl Links {
    pub(super) fn new() -> Links {
        Links {
            known: Memory::builder().max_capacity(REMEMBERED).build(),
            whole: Memory::builder().max_capacity(REMEMBERED / 4).build(),
            pending: Arc::default(),
        }
    }

    fn is_pending(&self, k: &LinkKey) -> bool {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).contains(k)
    }
}

fn key(at: &At<'_>, digest: &Digest) -> LinkKey {
    (at.upstream.host().to_string(), at.repo.clone(), digest.clone())
}

impl Mirror {
    /// Whether `digest` was fetched or verified for this repository.
    pub(super) async fn is_linked(&self, at: &At<'_>, digest: &Digest) -> Result<bool, RegistryError> {
        let k = key(at, digest);
        if self.links.known.contains_key(&k) {
            return Ok(true);
        }
        let linked = self.cache.is_linked(at.upstream.host(), at.repo, digest).await?;
        if linked {
            self.links.known.insert(k, ());
        }
        Ok(linked)
    }

    /// Records that `digest` belongs to this repository.
    pub(super) async fn link(&self, at: &At<'_>, digest: &Digest) -> Result<(), RegistryError> {
        if self.is_linked(at, digest).await? {
            return Ok(());
        }
        self.cache.link(at.upstream.host(), at.repo, digest).await?;
        self.links.known.insert(key(at, digest), ());
        Ok(())
    }

    /// Links a manifest served for this repository and everything it references.
    pub(super) async fn link_manifest(
        &self,
        at: &At<'_>,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let whole = key(at, digest);
        if self.links.whole.contains_key(&whole) {
            return Ok(());
        }
        self.link(at, digest).await?;
        let refs = references(bytes);
        for d in refs.blobs.iter().chain(refs.manifests.iter()) {
            self.link(at, d).await?;
        }
        self.links.whole.insert(whole, ());
        Ok(())
    }

    /// Makes sure cached content may be served under this repository: linked already, or the
    /// upstream confirms (one `HEAD`) that the repository has it. An upstream that says no, or
    /// cannot be asked, means the content is not served here.
    pub(super) async fn ensure_linked(
        &self,
        at: &At<'_>,
        digest: &Digest,
        subject: Subject,
    ) -> Result<(), RegistryError> {
        if self.is_linked(at, digest).await? || self.links.is_pending(&key(at, digest)) {
            return Ok(());
        }
        let confirmed = match subject {
            Subject::Manifest => self
                .head_upstream(at, &digest.to_string(), None, Fallback::Allowed)
                .await
                .map(|head| head.digest == *digest)?,
            _ => self.head_blob(at, digest).await.map(|_| true)?,
        };
        if !confirmed {
            return Err(RegistryError::ManifestUnknown(format!(
                "{digest} is not in {}",
                at.repo
            )));
        }
        tracing::debug!(repo = %at.repo, %digest, "cached content confirmed for this repository");
        self.link(at, digest).await
    }

    /// Links `digest` to this repository once the download this request started is verified.
    pub(super) fn link_when_verified(&self, at: &At<'_>, digest: &Digest, fill: Arc<crate::cache::Fill>) {
        let cache = self.cache.clone();
        let (host, repo, digest) = (at.upstream.host().to_string(), at.repo.clone(), digest.clone());
        let known = self.links.known.clone();
        let pending = self.links.pending.clone();
        let k = (host.clone(), repo.clone(), digest.clone());
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k.clone());
        // Only the progress: holding the fill would count as a reader and keep an abandoned
        // download alive.
        let mut progress = fill.progress();
        drop(fill);
        tokio::spawn(async move {
            let verified = progress
                .wait_for(|p| p.is_terminal())
                .await
                .is_ok_and(|p| matches!(p.state, crate::cache::FillState::Verified));
            if verified {
                if let Err(e) = cache.link(&host, &repo, &digest).await {
                    tracing::warn!(%repo, %digest, error = %e, "cannot record a repository link");
                }
                known.insert((host, repo, digest), ());
            }
            pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&k);
        });
    }
}
