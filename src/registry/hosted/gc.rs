//! `regcache cache gc --hosted` (`POST /admin/gc?hosted=true`): what hosted repositories no
//! longer hold goes. In each hosted repository, a linked blob that none of the repository's
//! manifests names is unlinked once it has gone unused for `UPLOAD_GRACE` (a push uploads its
//! blobs before its manifest: a blob uploaded a moment ago is a push in progress, not garbage);
//! manifests stay until they are deleted. Then the content no pinned link names is released
//! (`cache/index/release.rs`) and the cache is trimmed as `gc` does. Uploads still in progress
//! are staged in `tmp/`, outside the store, and are never touched.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::super::{Registry, RegistryError};
use crate::cache::{GcReport, Key};
use crate::oci::{references, Digest, RepoName};

/// How long an unreferenced blob is left alone: as long as an upload may take.
pub const UPLOAD_GRACE: Duration = Duration::from_secs(60 * 60);

impl Registry {
    /// Unlinks the blobs no manifest of their hosted repository names (unused for `grace`),
    /// releases what nothing links, then evicts down to `to` (or the low watermark).
    pub async fn gc_hosted(&self, to: Option<u64>, grace: Duration) -> Result<GcReport, RegistryError> {
        let cache = self.mirror.cache().clone();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut unlinked = 0u64;
        for ns in &self.hosted.namespaces {
            let c = cache.clone();
            let prefix = ns.prefix.clone();
            let links = tokio::task::spawn_blocking(move || c.links(&prefix))
                .await
                .map_err(|e| RegistryError::Internal(e.to_string()))?;
            let mut by_repo: HashMap<RepoName, Vec<(Digest, u64)>> = HashMap::new();
            for (repo, digest, last) in links {
                by_repo.entry(repo).or_default().push((digest, last));
            }
            for (repo, linked) in by_repo {
                let mut named: HashSet<Digest> = HashSet::new();
                for (d, _) in &linked {
                    if !cache.contains(&Key::manifest(d)) {
                        continue;
                    }
                    named.insert(d.clone());
                    if let Some(m) = cache.manifest(d).await? {
                        let refs = references(&m.bytes);
                        named.extend(refs.blobs);
                        named.extend(refs.manifests);
                    }
                }
                for (d, last) in linked {
                    let idle = Duration::from_millis(now_ms.saturating_sub(last));
                    if !named.contains(&d) && idle >= grace && cache.unlink(&ns.prefix, &repo, &d).await? {
                        unlinked += 1;
                    }
                }
            }
        }
        let report = tokio::task::spawn_blocking(move || cache.gc_with(to, true))
            .await
            .map_err(|e| RegistryError::Internal(e.to_string()))??;
        tracing::info!(unlinked, released = ?report.released, "hosted gc");
        Ok(report)
    }
}
