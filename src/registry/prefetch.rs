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
//! client reads.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::mirror::At;
use super::purge::{BadImage, ImageRef};
use super::{CacheResult, Registry, RegistryError};
use crate::cache::{Cache, FillState, Key, Source};
use crate::oci::{references, Digest, MediaType, Reference, Tag};

/// An image as a client names it, by tag or digest: `[HOST/]NAME[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchRef {
    pub image: ImageRef,
    /// A digest wins over a tag given beside it.
    pub digest: Option<Digest>,
}

impl std::str::FromStr for PrefetchRef {
    type Err = BadImage;

    fn from_str(text: &str) -> Result<PrefetchRef, BadImage> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|e| BadImage {
                    image: text.to_string(),
                    reason: format!("{e}"),
                })?;
                (rest, Some(digest))
            }
            None => (text, None),
        };
        let image: ImageRef = rest.parse().map_err(|e: BadImage| BadImage {
            image: text.to_string(),
            reason: e.reason,
        })?;
        Ok(PrefetchRef { image, digest })
    }
}

impl PrefetchRef {
    fn tag(&self) -> Tag {
        self.image
            .tag
            .clone()
            .unwrap_or_else(|| "latest".parse().expect("latest is a valid tag"))
    }

    fn reference(&self) -> Reference {
        match &self.digest {
            Some(d) => Reference::Digest(d.clone()),
            None => Reference::Tag(self.tag()),
        }
    }
}

/// A platform as `os/architecture[/variant]` (`linux/arm64`, `linux/arm/v7`). Without a
/// variant it matches every variant of the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let bad = || format!("{s:?} is no platform: write os/architecture[/variant], like linux/amd64");
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

impl Platform {
    fn matches(&self, p: &DescPlatform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant.as_ref() == Some(v))
    }
}

/// What `POST /admin/prefetch` takes as its JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchOptions {
    /// Images as clients name them.
    pub images: Vec<String>,
    /// `os/architecture[/variant]`: only these children of an index (all when empty).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Also the referrers (signatures, SBOMs, attestations) of each manifest and their content.
    #[serde(default)]
    pub referrers: bool,
    /// Pin everything fetched, so eviction keeps it.
    #[serde(default)]
    pub pin: bool,
}

impl PrefetchOptions {
    pub fn parsed_platforms(&self) -> Result<Vec<Platform>, String> {
        self.platforms.iter().map(|p| p.parse()).collect()
    }
}

/// One line of `POST /admin/prefetch`'s answer (newline-delimited JSON, tagged by `event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PrefetchEvent {
    /// An image's work begins: where its name resolved to.
    Started {
        image: String,
        upstream: String,
        repository: String,
        reference: String,
    },
    /// An image manifest to fetch the blobs of: how many blobs and their announced bytes.
    Manifest {
        image: String,
        digest: String,
        platform: Option<String>,
        blobs: u64,
        bytes: u64,
    },
    /// A blob is in the cache, verified (`cached`: it was there before).
    Blob {
        image: String,
        digest: String,
        bytes: u64,
        cached: bool,
    },
    /// An image is complete.
    Done {
        image: String,
        /// The digest the reference resolved to (the index, for a multi-platform image).
        digest: String,
        /// The platforms fetched of an index; empty for a single-platform image.
        platforms: Vec<String>,
        manifests: u64,
        blobs: u64,
        bytes: u64,
        pinned: bool,
    },
    /// An image failed; the others go on.
    Failed { image: String, reason: String },
    /// The last line.
    Summary {
        images: u64,
        failed: u64,
        blobs: u64,
        bytes: u64,
    },
}

/// What an unpin did (the admin API's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpinReport {
    pub upstream: String,
    pub repository: String,
    pub digest: String,
    pub manifests: u64,
    pub blobs: u64,
}

#[derive(Deserialize)]
struct DescPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl DescPlatform {
    fn text(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<DescPlatform>,
}

#[derive(Deserialize)]
struct Parsed {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
}

fn parse(bytes: &[u8]) -> Result<Parsed, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::BadUpstreamManifest(format!("manifest does not parse: {e}")))
}

fn is_index(media_type: &str, parsed: &Parsed) -> bool {
    let declared = parsed.media_type.as_deref().unwrap_or(media_type);
    declared == MediaType::OCI_INDEX || declared == MediaType::DOCKER_LIST || parsed.manifests.is_some()
}

fn digest_of(d: &Descriptor) -> Result<Digest, RegistryError> {
    d.digest
        .parse()
        .map_err(|e| RegistryError::BadUpstreamManifest(format!("descriptor digest {:?}: {e}", d.digest)))
}

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
        let at = repo.at();
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
        let mut body = blob.body(0, size);
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
        set_pins(cache, keys, false).await?;
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
async fn set_pins(cache: &Arc<Cache>, keys: Vec<Key>, pinned: bool) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_by_tag_and_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r: PrefetchRef = format!("ghcr.io/org/app@{d}").parse().unwrap();
        assert_eq!(r.image.host.as_deref(), Some("ghcr.io"));
        assert_eq!(r.reference().to_string(), d);
        let r: PrefetchRef = "alpine".parse().unwrap();
        assert_eq!(r.reference().to_string(), "latest");
        let r: PrefetchRef = "127.0.0.1:5000/org/app:v1".parse().unwrap();
        assert_eq!(r.image.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.reference().to_string(), "v1");
        assert!("app@sha256:abc".parse::<PrefetchRef>().is_err());
    }

    #[test]
    fn platforms_match_os_arch_and_variant() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        let desc = |v: Option<&str>| DescPlatform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: v.map(String::from),
        };
        assert!(p("linux/arm").matches(&desc(Some("v7"))));
        assert!(p("linux/arm/v7").matches(&desc(Some("v7"))));
        assert!(!p("linux/arm/v6").matches(&desc(Some("v7"))));
        assert!(!p("linux/amd64").matches(&desc(None)));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
    }
}
