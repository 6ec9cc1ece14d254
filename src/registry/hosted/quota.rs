//! A hosted namespace's own quota (`max_size`): the bytes of the distinct blobs and manifests its
//! repositories link, together. A push that would pass it is refused (403 `DENIED`, saying how
//! much is used and how to make room) before anything is kept; content already in the namespace
//! costs nothing again. Counting walks the namespace's links (a copy of the index), once a push.

use std::collections::HashSet;

use super::super::{Registry, RegistryError, Repo};
use super::{hosted_ns, PushError, PushKind};
use crate::cache::Key;
use crate::oci::Digest;
use crate::units::short_size;

impl Registry {
    /// Refuses `incoming` more bytes under `digest` if they would pass the namespace's quota.
    pub(super) async fn within_quota(
        &self,
        repo: &Repo,
        digest: &Digest,
        incoming: u64,
    ) -> Result<(), RegistryError> {
        let ns = hosted_ns(repo)?;
        let Some(max) = ns.max_size else {
            return Ok(());
        };
        let cache = self.mirror.cache().clone();
        let prefix = ns.prefix.clone();
        let (used, present) = tokio::task::spawn_blocking({
            let digest = digest.clone();
            move || {
                let mut seen = HashSet::new();
                let mut used = 0u64;
                for (_, d, _) in cache.links(&prefix) {
                    if seen.insert(d.clone()) {
                        used += cache
                            .content_len(&Key::blob(&d))
                            .or_else(|| cache.content_len(&Key::manifest(&d)))
                            .unwrap_or(0);
                    }
                }
                (used, seen.contains(&digest))
            }
        })
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
        if present || used.saturating_add(incoming) <= max {
            return Ok(());
        }
        Err(RegistryError::Push(PushError::new(
            PushKind::QuotaExceeded,
            format!(
                "hosted namespace {} holds {} of its max_size {}; this push needs {} more: delete \
                 images and run regcache cache gc --hosted, or raise max_size",
                ns.prefix,
                short_size(used),
                short_size(max),
                short_size(incoming)
            ),
        )))
    }
}
