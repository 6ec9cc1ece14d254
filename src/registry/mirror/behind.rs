//! Revalidating a tag behind the answer (`[cache] revalidate = "background"`): the stale tag is
//! served from the cache at once, and one upstream `HEAD` (shared with anyone else asking about
//! that tag) runs on its own task; its answer marks the tag fresh or moves the tag record to the
//! new digest, so the next pull sees it. A failure changes nothing: the cached tag keeps being
//! served and the next pull tries again.

use std::sync::Arc;

use super::fetch::head_now;
use super::manifests::record_tag;
use super::{At, Mirror};
use crate::oci::{Digest, Tag};
use crate::upstream::Fallback;

impl Mirror {
    /// Starts (or joins) the upstream `HEAD` for `tag` without waiting for it.
    pub(super) fn revalidate_behind(&self, at: &At<'_>, tag: &Tag, known: Digest) {
        let key = at.key(tag.as_str());
        let (upstream, repo, tag) = (at.upstream.clone(), at.repo.clone(), tag.clone());
        let (cache, fresh) = (self.cache.clone(), self.fresh.clone());
        let fresh_key = key.clone();
        self.manifest_heads.start(key, move || async move {
            let at = At {
                upstream: &upstream,
                repo: &repo,
            };
            let head = head_now(&at, tag.as_str(), None, Fallback::Never).await;
            match &head {
                Ok(now) if now.digest == known => fresh.remember(fresh_key),
                Ok(now) => {
                    tracing::info!(%repo, %tag, old = %known, new = %now.digest, "tag moved upstream (revalidated in the background)");
                    match record_tag(&cache, &fresh, &at, &tag, now).await {
                        // The tag's new target belongs to this repository.
                        Ok(true) => {
                            if let Err(e) = cache.link(upstream.host(), &repo, &now.digest).await {
                                tracing::warn!(%repo, error = %e, "cannot record a repository link");
                            }
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(%repo, %tag, error = %e, "cannot record a moved tag"),
                    }
                }
                Err(e) => tracing::debug!(%repo, %tag, error = %e, "background revalidation failed; the cached tag stays"),
            }
            head.map_err(Arc::new)
        });
    }
}
