//! Prefetching images into the cache (`regcache prefetch`, `POST /admin/prefetch`) and undoing
//! their pins (`regcache unpin`, `POST /admin/unpin`). An image is named the way clients name it
//! (`alpine:3.20`, `ghcr.io/org/app@sha256:…`, `127.0.0.1:5000/org/app:v1`; no tag means
//! `latest`) and resolved like a purge (`purge.rs`). Everything is fetched through the mirror
//! exactly as a pull fetches it, so single-flight, the disk budget, upstream credentials and
//! digest verification apply: the manifest, an index's children (all, or those of the asked
//! platforms), every config and layer (each body read to its end, so the fill completes and is
//! verified), and optionally the referrers of each manifest with their content. Pinning marks
//! every manifest and blob of the image, its tag record and its repository links as pinned, so
//! eviction keeps all a pull needs to be served without the upstream.
//!
//! The admin guard stands in for `Access` here: prefetch and unpin are operator actions, not
//! client reads. `prefetch/request.rs` holds what a prefetch is asked and answers,
//! `prefetch/pins.rs` what pinning marks and unpin clears.

mod pins;
mod request;

use std::collections::HashSet;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::mirror::At;
use super::purge::BadImage;
use super::{CacheResult, Registry, RegistryError};
use crate::cache::{FillState, Key, Source};
use crate::oci::{references, Digest, Reference};

pub(super) use pins::set_pins;
use request::{digest_of, is_index, parse, DescPlatform, Descriptor, Parsed};
pub use request::{Platform, PrefetchEvent, PrefetchOptions, PrefetchRef, UnpinReport};

/// One image's progress, counted as it goes.
struct Work<'a> {
    image: &'a str,
    tx: &'a mpsc::Sender<PrefetchEvent>,
    manifests: Vec<Digest>,
    blobs: Vec<Digest>,
    seen: HashSet<Digest>,
    bytes: u64,
}

impl Work<'_> {
    async fn send(&self, event: PrefetchEvent) {
        // A caller that went away does not stop the prefetch: the cache still gains the image.
        let _ = self.tx.send(event).await;
    }
}

impl Registry {
    /// Prefetches every image of `options`, reporting on `tx`; ends with a `Summary`.
    pub async fn prefetch(
        &self,
        options: &PrefetchOptions,
        platforms: &[Platform],
        tx: &mpsc::Sender<PrefetchEvent>,
    ) {
        let (mut failed, mut blobs, mut bytes) = (0, 0, 0);
        for image in &options.images {
            match self.prefetch_one(image, platforms, options, tx).await {
                Ok((n, b)) => {
                    blobs += n;
                    bytes += b;
                }
                Err(reason) => {
                    failed += 1;
                    tracing::warn!(image, %reason, "prefetch failed");
                    let _ = tx
                        .send(PrefetchEvent::Failed {
                            image: image.clone(),
                            reason,
                        })
                        .await;
                }
            }
        }
        let _ = tx
            .send(PrefetchEvent::Summary {
                images: options.images.len() as u64,
                failed,
                blobs,
                bytes,
            })
            .await;
    }

    async fn prefetch_one(
        &self,
        image: &str,
        platforms: &[Platform],
        options: &PrefetchOptions,
        tx: &mpsc::Sender<PrefetchEvent>,
    ) -> Result<(u64, u64), String> {
        let r: PrefetchRef = image.parse().map_err(|e: BadImage| e.to_string())?;
        let repo = self.resolve_image(&r.image).map_err(|e| e.to_string())?;
        let at = repo.at().map_err(|e| e.to_string())?;
        let reference = r.reference();
        let mut work = Work {
            image,
            tx,
            manifests: Vec::new(),
            blobs: Vec::new(),
            seen: HashSet::new(),
            bytes: 0,
        };
        work.send(PrefetchEvent::Started {
            image: image.to_string(),
            upstream: repo.namespace().to_string(),
            repository: repo.name().to_string(),
            reference: reference.to_string(),
        })
        .await;
        let (digest, fetched) = self
            .fetch_image(&at, &reference, platforms, options.referrers, &mut work)
            .await
            .map_err(|e| e.to_string())?;
        if options.pin {
            let tag = match &reference {
                Reference::Tag(t) => Some(t),
                Reference::Digest(_) => None,
            };
            let everything: Vec<Digest> = work.manifests.iter().chain(&work.blobs).cloned().collect();
            let mut keys: Vec<Key> = work.manifests.iter().map(Key::manifest).collect();
            keys.extend(work.blobs.iter().map(Key::blob));
            keys.extend(
                self.mirror
                    .cache()
                    .record_keys(repo.namespace(), repo.name(), tag, &everything)
                    .map_err(|e| format!("cannot name the records to pin: {e}"))?,
            );
            set_pins(self.mirror.cache(), keys, true)
                .await
                .map_err(|e| format!("cannot pin: {e}"))?;
        }
        let blobs = work.blobs.len() as u64;
        work.send(PrefetchEvent::Done {
            image: image.to_string(),
            digest: digest.to_string(),
            platforms: fetched,
            manifests: work.manifests.len() as u64,
            blobs,
            bytes: work.bytes,
            pinned: options.pin,
        })
        .await;
        Ok((blobs, work.bytes))
    }

    /// The manifest, its children and their blobs; returns the top digest and the platforms
    /// fetched of an index.
    async fn fetch_image(
        &self,
        at: &At<'_>,
        reference: &Reference,
        platforms: &[Platform],
        with_referrers: bool,
        work: &mut Work<'_>,
    ) -> Result<(Digest, Vec<String>), RegistryError> {
        let top = match reference {
            Reference::Digest(d) => self.mirror.by_digest(at, d, false).await?,
            Reference::Tag(t) => self.mirror.by_tag(at, t, false).await?,
        };
        let top_bytes = self.manifest_bytes(at, &top.digest, top.bytes).await?;
        let parsed = parse(&top_bytes)?;
        work.manifests.push(top.digest.clone());
        let mut fetched_platforms = Vec::new();
        if is_index(&top.media_type, &parsed) {
            let children = parsed.manifests.unwrap_or_default();
            let wanted: Vec<&Descriptor> = children
                .iter()
                .filter(|c| {
                    platforms.is_empty()
                        || c.platform
                            .as_ref()
                            .is_some_and(|p| platforms.iter().any(|want| want.matches(p)))
                })
                .collect();
            if wanted.is_empty() && !platforms.is_empty() {
                let offered: Vec<String> = children
                    .iter()
                    .filter_map(|c| c.platform.as_ref().map(DescPlatform::text))
                    .collect();
                return Err(RegistryError::ManifestUnknown(format!(
                    "the index offers none of the platforms asked for (it has {})",
                    offered.join(", ")
                )));
            }
            for child in wanted {
                let d = digest_of(child)?;
                let platform = child.platform.as_ref().map(DescPlatform::text);
                if let Some(p) = &platform {
                    fetched_platforms.push(p.clone());
                }
                self.fetch_manifest_content(at, &d, platform, work).await?;
            }
        } else {
            self.fetch_blobs(at, &top.digest, &parsed, None, work).await?;
        }
        if with_referrers {
            let subjects = work.manifests.clone();
            for subject in subjects {
                let found = self.mirror.referrers(at, &subject, None).await?;
                for d in references(&found.body).manifests {
                    if !work.manifests.contains(&d) {
                        self.fetch_manifest_content(at, &d, None, work).await?;
                    }
                }
            }
        }
        Ok((top.digest, fetched_platforms))
    }

    /// A manifest by digest and, for an image manifest, its blobs; one level of an index.
    async fn fetch_manifest_content(
        &self,
        at: &At<'_>,
        digest: &Digest,
        platform: Option<String>,
        work: &mut Work<'_>,
    ) -> Result<(), RegistryError> {
        let m = self.mirror.by_digest(at, digest, false).await?;
        let bytes = self.manifest_bytes(at, digest, m.bytes).await?;
        let parsed = parse(&bytes)?;
        work.manifests.push(digest.clone());
        if is_index(&m.media_type, &parsed) {
            for child in parsed.manifests.unwrap_or_default() {
                let d = digest_of(&child)?;
                if !work.manifests.contains(&d) {
                    let m = self.mirror.by_digest(at, &d, false).await?;
                    let bytes = self.manifest_bytes(at, &d, m.bytes).await?;
                    work.manifests.push(d.clone());
                    self.fetch_blobs(at, &d, &parse(&bytes)?, None, work).await?;
                }
            }
            return Ok(());
        }
        self.fetch_blobs(at, digest, &parsed, platform, work).await
    }

    async fn manifest_bytes(
        &self,
        at: &At<'_>,
        digest: &Digest,
        bytes: Option<Bytes>,
    ) -> Result<Bytes, RegistryError> {
        match bytes {
            Some(b) => Ok(b),
            None => self
                .mirror
                .by_digest(at, digest, false)
                .await?
                .bytes
                .ok_or_else(|| RegistryError::Internal(format!("no bytes for manifest {digest}"))),
        }
    }

    /// The config and layers of an image manifest, each read to its end.
    async fn fetch_blobs(
        &self,
        at: &At<'_>,
        digest: &Digest,
        parsed: &Parsed,
        platform: Option<String>,
        work: &mut Work<'_>,
    ) -> Result<(), RegistryError> {
        let mut todo: Vec<(Digest, u64)> = Vec::new();
        for desc in parsed.config.iter().chain(&parsed.layers) {
            let d = digest_of(desc)?;
            // A blob shared with a manifest fetched before (or named twice) is fetched once.
            if work.seen.insert(d.clone()) {
                todo.push((d, desc.size));
            }
        }
        work.send(PrefetchEvent::Manifest {
            image: work.image.to_string(),
            digest: digest.to_string(),
            platform,
            blobs: todo.len() as u64,
            bytes: todo.iter().map(|(_, size)| size).sum(),
        })
        .await;
        for (d, _) in todo {
            let (bytes, cached) = self.read_blob(at, &d).await?;
            work.blobs.push(d.clone());
            work.bytes += bytes;
            work.send(PrefetchEvent::Blob {
                image: work.image.to_string(),
                digest: d.to_string(),
                bytes,
                cached,
            })
            .await;
        }
        Ok(())
    }

    /// Reads a blob from the cache or its single download to the end; an error of the download
    /// or of its verification is an error here.
    async fn read_blob(&self, at: &At<'_>, digest: &Digest) -> Result<(u64, bool), RegistryError> {
        let blob = self.mirror.blob(at, digest).await?;
        let cached = blob.result == CacheResult::Hit;
        let fill = match &blob.source {
            Source::Filling(fill) => Some(fill.clone()),
            Source::Complete(_) => None,
        };
        let size = blob.size;
        let mut body = blob.body(0, size, None);
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| RegistryError::Internal(format!("blob {digest} did not complete: {e}")))?;
            if let Some(data) = frame.data_ref() {
                n += data.len() as u64;
            }
        }
        if let Some(fill) = fill {
            // The fill's task publishes the verified file, then ends and drops its sender.
            let mut progress = fill.progress();
            let _ = progress.wait_for(|_| false).await;
            let state = progress.borrow().state.clone();
            match state {
                FillState::Verified => {}
                FillState::PassThrough(why) => {
                    return Err(RegistryError::Internal(format!(
                        "blob {digest} was read but the cache did not keep it ({})",
                        why.as_str()
                    )))
                }
                FillState::Failed(e) => return Err(RegistryError::Internal(format!("blob {digest}: {e}"))),
                FillState::Running => {
                    return Err(RegistryError::Internal(format!(
                        "blob {digest}: the download ended early"
                    )))
                }
            }
        }
        Ok((n, cached))
    }
}
