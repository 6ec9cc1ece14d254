//! Manifests through the pull-through policy. By digest: a cached manifest is served with no
//! upstream request; a miss is fetched, verified against the digest and kept. By tag: the tag
//! record is trusted for `tag_ttl`, then revalidated with an upstream `HEAD` (free on Docker Hub),
//! and a `GET` only happens when the digest changed. When revalidation fails for any reason other
//! than the upstream saying the tag is gone, the cached manifest is served (stale-if-error).

use std::future::Future;

use super::remembered::Remembered;
use super::{At, Mirror};
use crate::cache::{Cache, StoredManifest, TagRecord};
use crate::oci::{Digest, MediaType, Tag};
use crate::registry::{CacheResult, Manifest, RegistryError, Subject};
use crate::upstream::Fallback;

impl Mirror {
    pub(crate) async fn by_digest(
        &self,
        at: &At<'_>,
        digest: &Digest,
        head: bool,
    ) -> Result<Manifest, RegistryError> {
        if let Some(m) = self.cache.manifest(digest).await? {
            let answer = Manifest::from(m);
            if !self.is_linked(at, digest).await? {
                // Cached through another repository: the upstream's word that this one does not
                // have it is remembered like any manifest 404.
                let confirm = async {
                    self.ensure_linked(at, digest, Subject::Manifest).await?;
                    Ok(answer.clone())
                };
                self.unless_missing(at, &digest.to_string(), confirm).await?;
            }
            self.link_answer(at, &answer).await?;
            return Ok(answer);
        }
        let reference = digest.to_string();
        let answer = self
            .unless_missing(at, &reference, async {
                if head {
                    self.head_upstream(at, &reference, None, Fallback::Allowed).await
                } else {
                    self.fetch(at, &reference, Some(digest)).await
                }
            })
            .await?;
        self.link_answer(at, &answer).await?;
        Ok(answer)
    }

    /// Links a manifest answered for this repository, and what it references when its bytes
    /// are at hand.
    async fn link_answer(&self, at: &At<'_>, answer: &Manifest) -> Result<(), RegistryError> {
        match &answer.bytes {
            Some(bytes) => self.link_manifest(at, &answer.digest, bytes).await,
            None => self.link(at, &answer.digest).await,
        }
    }

    /// Answers at once when the upstream recently said `reference` does not exist, and remembers
    /// it when it says so now.
    async fn unless_missing(
        &self,
        at: &At<'_>,
        reference: &str,
        ask: impl Future<Output = Result<Manifest, RegistryError>>,
    ) -> Result<Manifest, RegistryError> {
        let key = at.key(reference);
        if self.missing.holds(&key) {
            return Err(RegistryError::ManifestUnknown(format!(
                "{reference} (the upstream said so moments ago)"
            )));
        }
        let answer = ask.await;
        if answer.as_ref().is_err_and(RegistryError::is_gone) {
            self.missing.remember(key);
        }
        answer
    }

    pub(crate) async fn by_tag(&self, at: &At<'_>, tag: &Tag, head: bool) -> Result<Manifest, RegistryError> {
        let answer = self.resolve_tag(at, tag, head).await?;
        self.link_answer(at, &answer).await?;
        Ok(answer)
    }

    async fn resolve_tag(&self, at: &At<'_>, tag: &Tag, head: bool) -> Result<Manifest, RegistryError> {
        let host = at.upstream.host();
        let record = self.cache.tag(host, at.repo, tag).await?;
        if let Some((rec, digest)) = record.as_ref().and_then(|r| r.digest().map(|d| (r, d))) {
            if let Some(answer) = self.revalidate(at, tag, head, rec, digest).await? {
                return Ok(answer);
            }
        }
        self.unless_missing(at, tag.as_str(), async {
            let answer = if head {
                self.head_upstream(at, tag.as_str(), None, Fallback::Allowed)
                    .await?
            } else {
                self.fetch(at, tag.as_str(), None).await?
            };
            self.remember(at, tag, &answer).await?;
            Ok(answer)
        })
        .await
    }

    /// A known tag: served while fresh, else checked with the upstream. None when it must be
    /// asked upstream from scratch (the cached manifest is gone and the upstream failed).
    async fn revalidate(
        &self,
        at: &At<'_>,
        tag: &Tag,
        head: bool,
        rec: &TagRecord,
        digest: Digest,
    ) -> Result<Option<Manifest>, RegistryError> {
        let key = at.key(tag.as_str());
        let cached = self.cache.manifest(&digest).await?;
        let usable = head || cached.is_some();
        if usable && (at.upstream.is_offline() || self.fresh.holds(&key)) {
            return Ok(Some(answer_from(rec, digest, cached)));
        }
        if !usable && !at.upstream.is_offline() && self.fresh.holds(&key) {
            let reference = digest.to_string();
            return Ok(Some(self.fetch(at, &reference, Some(&digest)).await?));
        }
        // Stale-while-revalidate: nobody waits on a revalidation another pull already started,
        // and in background mode nobody waits at all.
        let backing_off = self.backoff.holds(&key);
        if usable
            && (backing_off || self.policy.revalidate_in_background || self.manifest_heads.is_running(&key))
        {
            if self.policy.revalidate_in_background && !backing_off {
                self.revalidate_behind(at, tag, digest.clone());
            }
            return Ok(Some(answer_from(rec, digest, cached).with(CacheResult::Stale)));
        }
        // With a cached copy to serve, the upstream has revalidate_timeout to answer and its
        // fallbacks are not asked: they may lag behind and would move the tag back.
        let (deadline, fallback) = match usable {
            true => (Some(self.policy.revalidate_timeout), Fallback::Never),
            false => (None, Fallback::Allowed),
        };
        match self.head_upstream(at, tag.as_str(), deadline, fallback).await {
            Ok(now) if now.digest == digest => {
                self.fresh.remember(key);
                if usable {
                    return Ok(Some(answer_from(rec, digest, cached)));
                }
                // Confirmed, but its manifest is not cached (evicted, or the tag moved in the
                // background): fetch it by digest.
                let reference = digest.to_string();
                Ok(Some(self.fetch(at, &reference, Some(&digest)).await?))
            }
            Ok(now) => {
                tracing::info!(repo = %at.repo, %tag, old = %digest, new = %now.digest, "tag moved upstream");
                let answer = if head {
                    now
                } else {
                    match self.cache.manifest(&now.digest).await? {
                        Some(m) => Manifest::from(m).with(CacheResult::Miss),
                        None => self.fetch(at, &now.digest.to_string(), Some(&now.digest)).await?,
                    }
                };
                self.remember(at, tag, &answer).await?;
                Ok(Some(answer))
            }
            Err(e) if e.is_gone() => Err(e),
            Err(e) if usable => {
                if e.unanswered() {
                    self.backoff.remember(key);
                }
                if e.not_attempted() {
                    tracing::debug!(repo = %at.repo, %tag, error = %e, "serving the cached tag");
                } else {
                    tracing::warn!(repo = %at.repo, %tag, error = %e, "upstream revalidation failed; serving the cached tag");
                }
                Ok(Some(answer_from(rec, digest, cached).with(CacheResult::Stale)))
            }
            Err(_) => Ok(None),
        }
    }

    /// The bytes of the referrers tag-schema index `tag` (`sha256-<hex>`), through the cache like
    /// any tag; `None` when the upstream has no such tag.
    pub(super) async fn tag_schema_index(
        &self,
        at: &At<'_>,
        tag: &str,
    ) -> Result<Option<bytes::Bytes>, RegistryError> {
        let tag: Tag = tag
            .parse()
            .map_err(|e: crate::oci::ReferenceError| RegistryError::Internal(e.to_string()))?;
        match self.by_tag(at, &tag, false).await {
            Ok(answer) if answer.media_type == MediaType::OCI_INDEX => Ok(answer.bytes),
            Ok(_) => Ok(None),
            Err(e) if e.is_gone() || matches!(e, RegistryError::ManifestUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn remember(&self, at: &At<'_>, tag: &Tag, a: &Manifest) -> Result<(), RegistryError> {
        record_tag(&self.cache, &self.fresh, at, tag, a).await?;
        Ok(())
    }
}

/// Records where `tag` points now and, once that is kept, that it was just confirmed; false
/// when the record was not kept (then the tag is asked about again next time).
pub(super) async fn record_tag(
    cache: &Cache,
    fresh: &Remembered,
    at: &At<'_>,
    tag: &Tag,
    a: &Manifest,
) -> std::io::Result<bool> {
    let rec = TagRecord {
        digest: a.digest.to_string(),
        media_type: a.media_type.clone(),
        size: a.size,
    };
    let kept = cache.put_tag(at.upstream.host(), at.repo, tag, &rec).await?;
    if kept {
        fresh.remember(at.key(tag.as_str()));
    }
    Ok(kept)
}

fn answer_from(rec: &TagRecord, digest: Digest, cached: Option<StoredManifest>) -> Manifest {
    match cached {
        Some(m) => m.into(),
        None => Manifest {
            digest,
            media_type: rec.media_type.clone(),
            size: rec.size,
            bytes: None,
            result: CacheResult::Hit,
        },
    }
}
