//! Export: what a bundle will hold is worked out first from the cache alone (`Registry::
//! export_plan`: each image's manifest, the children of an index that are cached, every config
//! and layer, the cached referrers with their content), so an image the cache no longer holds
//! whole is refused before a byte is written. Then `ExportPlan::write` streams the archive: the
//! layout files, the manifests, then each blob read from the store under a lease, one at a time,
//! so memory stays bounded whatever the bundle's size. A write that fails poisons the writer, so
//! the archive's end marker (which `tar` writes when dropped) never follows a cut-short blob.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;

use super::archive::{append_bytes, header, Counted, Poisonable};
use super::layout::{
    blob_path, platform_text, Descriptor, LayoutIndex, ManifestHead, IMAGE_NAME, INDEX_JSON, LAYOUT_VERSION,
    OCI_LAYOUT, REF_NAME,
};
use super::{BundleError, BundleImage, ExportOptions, ExportReport};
use crate::cache::{Cache, EntryKind};
use crate::oci::{references, Digest, RepoName, Tag};
use crate::registry::mirror::referrers_doc;
use crate::registry::{PrefetchRef, Registry};

/// A bundle worked out and ready to stream.
pub struct ExportPlan {
    cache: Arc<Cache>,
    entries: Vec<Descriptor>,
    manifests: Vec<(Digest, Bytes)>,
    blobs: Vec<(Digest, u64)>,
    report: ExportReport,
}

/// An image to export, resolved.
struct Root {
    upstream: String,
    repo: RepoName,
    tag: Option<Tag>,
    digest: Digest,
}

impl Root {
    fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{}", self.upstream, self.repo, t),
            None => format!("{}/{}@{}", self.upstream, self.repo, self.digest),
        }
    }
}

/// The plan as it is being built: each manifest and blob once.
#[derive(Default)]
struct Gathered {
    manifests: Vec<(Digest, Bytes)>,
    seen_manifests: HashSet<Digest>,
    blobs: Vec<(Digest, u64)>,
    seen_blobs: HashSet<Digest>,
    entries: Vec<Descriptor>,
    left_out: u64,
}

impl Gathered {
    fn add_manifest(&mut self, digest: &Digest, bytes: &Bytes) {
        if self.seen_manifests.insert(digest.clone()) {
            self.manifests.push((digest.clone(), bytes.clone()));
        }
    }

    fn add_blob(&mut self, digest: &Digest, size: u64) {
        if self.seen_blobs.insert(digest.clone()) {
            self.blobs.push((digest.clone(), size));
        }
    }
}

impl Registry {
    /// Works out a bundle of `options`' images from what the cache holds; no upstream request.
    pub async fn export_plan(&self, options: &ExportOptions) -> Result<ExportPlan, BundleError> {
        let cache = self.mirror.cache().clone();
        let roots = self.export_roots(options).await?;
        if roots.is_empty() {
            return Err(BundleError::NotCached(
                "nothing to export: no image was named, or the cache holds none of the kind asked".into(),
            ));
        }
        let mut g = Gathered::default();
        let mut report = ExportReport::default();
        for root in &roots {
            report.images.push(gather(&cache, root, &mut g).await?);
        }
        report.manifests = g.manifests.len() as u64;
        report.children_left_out = g.left_out;
        report.blobs = g.blobs.len() as u64;
        report.bytes = g.manifests.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
            + g.blobs.iter().map(|(_, s)| s).sum::<u64>();
        Ok(ExportPlan {
            cache,
            entries: g.entries,
            manifests: g.manifests,
            blobs: g.blobs,
            report,
        })
    }

    async fn export_roots(&self, options: &ExportOptions) -> Result<Vec<Root>, BundleError> {
        let cache = self.mirror.cache();
        let mut roots = Vec::new();
        for image in &options.images {
            let r: PrefetchRef = image
                .parse()
                .map_err(|e: crate::registry::BadImage| BundleError::Unplaceable(e.to_string()))?;
            let repo = self
                .resolve_image(&r.image)
                .map_err(|e| BundleError::Unplaceable(format!("{image}: {e}")))?;
            let (upstream, name) = (repo.namespace().to_string(), repo.name().clone());
            let (tag, digest) = match &r.digest {
                Some(d) => (None, d.clone()),
                None => {
                    let tag = r.tag();
                    let rec = cache.tag(&upstream, &name, &tag).await?;
                    let digest = rec.and_then(|rec| rec.digest()).ok_or_else(|| {
                        BundleError::NotCached(format!(
                            "{image}: the cache holds no tag record for {upstream}/{name}:{tag}; prefetch it first"
                        ))
                    })?;
                    (Some(tag), digest)
                }
            };
            roots.push(Root {
                upstream,
                repo: name,
                tag,
                digest,
            });
        }
        if options.all || options.pinned {
            let c = cache.clone();
            let listed = tokio::task::spawn_blocking(move || c.list(None))
                .await
                .map_err(io::Error::other)?;
            for e in listed {
                let wanted = match e.kind {
                    EntryKind::Tag | EntryKind::Digest => e.manifest_cached && (options.all || e.pinned),
                    EntryKind::Unreferenced => false,
                };
                let (Some(upstream), Some(repo)) = (e.upstream, e.repository) else {
                    continue;
                };
                let (Ok(repo), Ok(digest)) = (repo.parse::<RepoName>(), e.digest.parse::<Digest>()) else {
                    continue;
                };
                if wanted {
                    let tag = e.tag.and_then(|t| t.parse::<Tag>().ok());
                    roots.push(Root {
                        upstream,
                        repo,
                        tag,
                        digest,
                    });
                }
            }
        }
        let mut seen = HashSet::new();
        roots.retain(|r| seen.insert(r.name()));
        Ok(roots)
    }
}

/// Adds one image (its manifests, blobs and cached referrers) to the plan.
async fn gather(cache: &Cache, root: &Root, g: &mut Gathered) -> Result<BundleImage, BundleError> {
    let name = root.name();
    let not_cached =
        |what: String| BundleError::NotCached(format!("{name}: {what}; prefetch the image again"));
    let top = cache
        .manifest(&root.digest)
        .await?
        .ok_or_else(|| not_cached(format!("manifest {} is not cached", root.digest)))?;
    let mut held = vec![root.digest.clone()];
    let mut platforms = Vec::new();
    let head = ManifestHead::parse(&top.bytes).map_err(|e| not_cached(format!("{}: {e}", root.digest)))?;
    g.add_manifest(&root.digest, &top.bytes);
    if head.is_index() {
        let mut todo: Vec<Descriptor> = head.manifests.unwrap_or_default();
        while let Some(child) = todo.pop() {
            let Ok(d) = child.digest.parse::<Digest>() else {
                continue;
            };
            // A platform never pulled is left out, as the cache left it out.
            let Some(m) = cache.manifest(&d).await? else {
                g.left_out += 1;
                continue;
            };
            let child_head = ManifestHead::parse(&m.bytes).map_err(|e| not_cached(format!("{d}: {e}")))?;
            if child_head.is_index() {
                todo.extend(child_head.manifests.unwrap_or_default());
            } else {
                blobs_of(cache, &m.bytes, g).map_err(|d| not_cached(format!("blob {d} is not cached")))?;
                if let Some(p) = child.platform.as_ref().and_then(platform_text) {
                    platforms.push(p);
                }
            }
            g.add_manifest(&d, &m.bytes);
            held.push(d);
        }
        if held.len() == 1 {
            return Err(not_cached("none of the index's platforms is cached".into()));
        }
    } else {
        blobs_of(cache, &top.bytes, g).map_err(|d| not_cached(format!("blob {d} is not cached")))?;
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(REF_NAME.to_string(), name.clone());
    annotations.insert(IMAGE_NAME.to_string(), name.clone());
    g.entries.push(Descriptor {
        media_type: top.media_type.clone(),
        digest: root.digest.to_string(),
        size: top.bytes.len() as u64,
        artifact_type: None,
        annotations,
        platform: None,
    });
    for subject in held {
        referrers_of(cache, root, &subject, g).await?;
    }
    Ok(BundleImage {
        name,
        upstream: root.upstream.clone(),
        repository: root.repo.to_string(),
        tag: root.tag.as_ref().map(|t| t.to_string()),
        digest: root.digest.to_string(),
        platforms,
    })
}

/// Adds a manifest's config and layers; the digest of the first one not cached is the error.
fn blobs_of(cache: &Cache, manifest: &[u8], g: &mut Gathered) -> Result<(), Digest> {
    let refs = references(manifest);
    let mut sizes = Vec::with_capacity(refs.blobs.len());
    for d in refs.blobs {
        let size = cache.blob_size(&d).ok_or_else(|| d.clone())?;
        sizes.push((d, size));
    }
    for (d, size) in sizes {
        g.add_blob(&d, size);
    }
    Ok(())
}

/// The referrers of `subject` that the cache holds whole, as unnamed entries (an import finds
/// their repository through their subject).
async fn referrers_of(
    cache: &Cache,
    root: &Root,
    subject: &Digest,
    g: &mut Gathered,
) -> Result<(), BundleError> {
    let Some(doc) = cache
        .doc(&root.upstream, &root.repo, &referrers_doc(subject))
        .await?
    else {
        return Ok(());
    };
    let Ok(listed) = serde_json::from_slice::<LayoutIndex>(&doc) else {
        return Ok(());
    };
    for desc in listed.manifests {
        let Ok(d) = desc.digest.parse::<Digest>() else {
            continue;
        };
        if g.seen_manifests.contains(&d) {
            continue;
        }
        let Some(m) = cache.manifest(&d).await? else {
            continue;
        };
        // A referrer whose blobs were evicted is left out whole.
        if blobs_of(cache, &m.bytes, g).is_err() {
            continue;
        }
        g.add_manifest(&d, &m.bytes);
        g.entries.push(Descriptor {
            media_type: m.media_type.clone(),
            digest: d.to_string(),
            size: m.bytes.len() as u64,
            artifact_type: desc.artifact_type.clone(),
            annotations: BTreeMap::new(),
            platform: None,
        });
    }
    Ok(())
}

impl ExportPlan {
    /// What the bundle will hold.
    pub fn report(&self) -> &ExportReport {
        &self.report
    }

    /// Streams the archive to `out`. Blocking. On an error the writer is poisoned, so nothing
    /// after the error (not even the archive's end marker) is written.
    pub fn write(self, out: impl Write) -> Result<ExportReport, BundleError> {
        let mut tar = tar::Builder::new(Poisonable {
            inner: out,
            poisoned: false,
        });
        match self.write_to(&mut tar) {
            Ok(report) => {
                tar.into_inner()?.flush()?;
                Ok(report)
            }
            Err(e) => {
                // Before the builder drops and writes the end marker.
                tar.get_mut().poisoned = true;
                Err(e)
            }
        }
    }

    fn write_to<W: Write>(self, tar: &mut tar::Builder<W>) -> Result<ExportReport, BundleError> {
        let mut dirs: Vec<String> = vec!["blobs/".into()];
        for d in self
            .manifests
            .iter()
            .map(|(d, _)| d)
            .chain(self.blobs.iter().map(|(d, _)| d))
        {
            let dir = format!("blobs/{}/", d.algorithm().as_str());
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            let mut h = header(tar::EntryType::Directory, 0);
            h.set_mode(0o755);
            tar.append_data(&mut h, dir, io::empty())?;
        }
        let index = serde_json::to_vec(&LayoutIndex::new(self.entries)).map_err(io::Error::other)?;
        append_bytes(tar, OCI_LAYOUT, LAYOUT_VERSION.as_bytes())?;
        append_bytes(tar, INDEX_JSON, &index)?;
        for (d, bytes) in &self.manifests {
            append_bytes(tar, &blob_path(d), bytes)?;
        }
        for (d, size) in &self.blobs {
            let blob = self.cache.cached_blob(d)?.ok_or_else(|| {
                BundleError::NotCached(format!("blob {d} was evicted while the bundle was written"))
            })?;
            if blob.size != *size {
                return Err(BundleError::NotCached(format!(
                    "blob {d} changed size while the bundle was written"
                )));
            }
            let mut h = header(tar::EntryType::Regular, blob.size);
            let mut counted = Counted {
                inner: (&*blob.file).take(blob.size),
                n: 0,
            };
            tar.append_data(&mut h, blob_path(d), &mut counted)?;
            if counted.n != blob.size {
                return Err(BundleError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("blob {d} is shorter on disk than the index says"),
                )));
            }
        }
        Ok(self.report)
    }
}
