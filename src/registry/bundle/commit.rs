//! Import, last step: every entry is placed under a configured upstream and repository before
//! anything is written (`place_images`: a name that cannot be placed refuses the bundle), then the
//! checked content is adopted into the store in one step (room for all of it, or nothing), and
//! only then are the names written: each image's repository links, its tag record, the referrers
//! lists of its subjects, and the pins of those records. A tag thus never names content that is
//! not there.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::import::{ImportOptions, Received};
use super::layout::{Descriptor, LayoutIndex};
use super::plan::{Checked, CheckedRoot};
use super::{BundleError, BundleImage, ImportReport};
use crate::cache::{AdoptError, StagedContent, StoredManifest, TagRecord};
use crate::oci::{Digest, RepoName, Tag};
use crate::registry::mirror::referrers_doc;
use crate::registry::prefetch::set_pins;
use crate::registry::{BadImage, ImageRef, PrefetchRef, Registry};

/// Where an entry of the bundle goes.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    upstream: String,
    repo: RepoName,
    tag: Option<Tag>,
}

impl Registry {
    /// Places every entry: a named one by its name, an unnamed one with its subject's image (a
    /// referrer) or under `--repository`.
    pub(super) fn place_images(
        &self,
        checked: &Checked,
        options: &ImportOptions,
    ) -> Result<Vec<Placement>, BundleError> {
        let mut placed: Vec<Option<Placement>> = Vec::with_capacity(checked.roots.len());
        for root in &checked.roots {
            placed.push(match &root.spec.name {
                Some(name) => Some(self.place_named(root, name, options)?),
                None => None,
            });
        }
        let mut out = Vec::with_capacity(placed.len());
        for (i, root) in checked.roots.iter().enumerate() {
            if let Some(p) = &placed[i] {
                out.push(p.clone());
                continue;
            }
            let by_subject = root.subject.as_ref().and_then(|s| {
                checked
                    .roots
                    .iter()
                    .zip(&placed)
                    .find(|(r, p)| p.is_some() && r.closure.contains(s))
                    .and_then(|(_, p)| p.clone())
            });
            let p = match (by_subject, &options.repository) {
                (Some(p), _) => Placement { tag: None, ..p },
                (None, Some(repository)) => {
                    let image: ImageRef = repository
                        .parse()
                        .map_err(|e: BadImage| BundleError::Unplaceable(e.to_string()))?;
                    let repo = self
                        .resolve_image(&image)
                        .map_err(|e| BundleError::Unplaceable(format!("--repository {repository}: {e}")))?;
                    Placement {
                        upstream: repo.namespace().to_string(),
                        repo: repo.name().clone(),
                        tag: None,
                    }
                }
                (None, None) => {
                    return Err(BundleError::Unplaceable(format!(
                        "the bundle's entry {} has no name and refers to no named image in it; \
                         pass --repository HOST/NAME to say where it belongs",
                        root.spec.digest
                    )))
                }
            };
            out.push(p);
        }
        Ok(out)
    }

    fn place_named(
        &self,
        root: &CheckedRoot,
        name: &str,
        options: &ImportOptions,
    ) -> Result<Placement, BundleError> {
        // Other tools name an entry by its tag alone (`v1`); `--repository` says whose.
        let full = match (name.contains(['/', ':', '@']), &options.repository) {
            (true, _) => name.to_string(),
            (false, Some(repository)) => format!("{repository}:{name}"),
            (false, None) => {
                return Err(BundleError::Unplaceable(format!(
                    "the bundle names an image only by the tag {name:?}; pass --repository HOST/NAME to say where it belongs"
                )))
            }
        };
        let r: PrefetchRef = full
            .parse()
            .map_err(|e: BadImage| BundleError::Unplaceable(e.to_string()))?;
        if let Some(d) = &r.digest {
            if *d != root.spec.digest {
                return Err(BundleError::Unplaceable(format!(
                    "the bundle names {full} for the manifest {}",
                    root.spec.digest
                )));
            }
        }
        let repo = self.resolve_image(&r.image).map_err(|e| {
            BundleError::Unplaceable(format!(
                "{full}: {e} (an offline site lists its upstreams too, with offline = true)"
            ))
        })?;
        Ok(Placement {
            upstream: repo.namespace().to_string(),
            repo: repo.name().clone(),
            tag: r.digest.is_none().then(|| r.tag()),
        })
    }

    /// Adopts the checked content, then writes links, tags, referrers lists and pins.
    pub(super) async fn commit(
        &self,
        mut received: Received,
        checked: Checked,
        placed: Vec<Placement>,
        options: &ImportOptions,
    ) -> Result<ImportReport, BundleError> {
        let cache = self.mirror.cache().clone();
        let mut manifests: Vec<(StoredManifest, StagedContent)> = Vec::new();
        for (digest, media_type, bytes) in &checked.manifests {
            if let Some(staged) = received.blobs.remove(digest) {
                let m = StoredManifest {
                    digest: digest.clone(),
                    media_type: media_type.clone(),
                    bytes: bytes.clone(),
                };
                manifests.push((m, staged));
            }
        }
        let blobs: Vec<StagedContent> = checked
            .blobs
            .iter()
            .filter_map(|b| received.blobs.remove(b))
            .collect();
        // What no image reaches is deleted with its staged file.
        drop(received);
        let mut report = ImportReport {
            manifests: manifests.len() as u64,
            blobs: blobs.len() as u64,
            absent_children: checked.absent_children,
            pinned: options.pin,
            ..ImportReport::default()
        };
        let (c, pin) = (cache.clone(), options.pin);
        let adopted = tokio::task::spawn_blocking(move || c.adopt(blobs, manifests, pin))
            .await
            .map_err(io::Error::other)?
            .map_err(|e| match e {
                AdoptError::NoRoom { .. } => BundleError::NoRoom(e.to_string()),
                AdoptError::Io(e) => BundleError::Io(e),
            })?;
        report.added = adopted.added;
        report.added_bytes = adopted.added_bytes;
        report.present = adopted.present;

        let mut referrers: BTreeMap<(String, String, Digest), Vec<Descriptor>> = BTreeMap::new();
        let mut pins = Vec::new();
        for (root, place) in checked.roots.iter().zip(&placed) {
            for d in &root.closure {
                cache.link(&place.upstream, &place.repo, d).await?;
            }
            let media_type = match root.media_type.is_empty() {
                false => root.media_type.clone(),
                true => cache
                    .manifest(&root.spec.digest)
                    .await?
                    .map(|m| m.media_type)
                    .unwrap_or_default(),
            };
            if let Some(tag) = &place.tag {
                let rec = TagRecord {
                    digest: root.spec.digest.to_string(),
                    media_type: media_type.clone(),
                    size: root.spec.size,
                };
                if !cache.put_tag(&place.upstream, &place.repo, tag, &rec).await? {
                    return Err(BundleError::Io(io::Error::other(format!(
                        "the tag record of {}/{}:{tag} could not be written (see the log)",
                        place.upstream, place.repo
                    ))));
                }
            }
            if let Some(subject) = &root.subject {
                referrers
                    .entry((place.upstream.clone(), place.repo.to_string(), subject.clone()))
                    .or_default()
                    .push(Descriptor {
                        media_type,
                        digest: root.spec.digest.to_string(),
                        size: root.spec.size,
                        artifact_type: root.artifact_type.clone(),
                        annotations: root.annotations.clone(),
                        platform: None,
                    });
            }
            if options.pin {
                pins.extend(cache.record_keys(
                    &place.upstream,
                    &place.repo,
                    place.tag.as_ref(),
                    &root.closure,
                )?);
            }
            if root.spec.name.is_some() {
                report.images.push(image_of(root, place));
            }
        }
        for ((upstream, repo, subject), found) in referrers {
            let repo: RepoName = repo.parse().map_err(|e| io::Error::other(format!("{e}")))?;
            merge_referrers(&cache, &upstream, &repo, &subject, found).await?;
        }
        if !pins.is_empty() {
            set_pins(&cache, pins, true).await?;
        }
        tracing::info!(
            images = report.images.len(),
            added = report.added,
            bytes = report.added_bytes,
            present = report.present,
            "imported a bundle"
        );
        Ok(report)
    }
}

/// Adds one referrer (a descriptor as JSON) to the kept referrers list of `subject` (a manifest
/// pushed with a `subject`).
pub(in crate::registry) async fn add_referrer(
    cache: &crate::cache::Cache,
    upstream: &str,
    repo: &RepoName,
    subject: &Digest,
    entry: serde_json::Value,
) -> io::Result<()> {
    let d: Descriptor = serde_json::from_value(entry).map_err(io::Error::other)?;
    merge_referrers(cache, upstream, repo, subject, vec![d]).await
}

/// Adds `found` to the kept referrers list of `subject`, replacing entries of the same digest.
async fn merge_referrers(
    cache: &crate::cache::Cache,
    upstream: &str,
    repo: &RepoName,
    subject: &Digest,
    found: Vec<Descriptor>,
) -> io::Result<()> {
    let name = referrers_doc(subject);
    let mut list = match cache.doc(upstream, repo, &name).await? {
        Some(doc) => serde_json::from_slice::<LayoutIndex>(&doc)
            .map(|l| l.manifests)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut by_digest: HashMap<String, usize> = list
        .iter()
        .enumerate()
        .map(|(i, d)| (d.digest.clone(), i))
        .collect();
    for d in found {
        match by_digest.get(&d.digest) {
            Some(&i) => list[i] = d,
            None => {
                by_digest.insert(d.digest.clone(), list.len());
                list.push(d);
            }
        }
    }
    let doc = serde_json::to_vec(&LayoutIndex::new(list)).map_err(io::Error::other)?;
    cache.put_doc(upstream, repo, &name, &doc).await
}

fn image_of(root: &CheckedRoot, place: &Placement) -> BundleImage {
    let name = match &place.tag {
        Some(t) => format!("{}/{}:{t}", place.upstream, place.repo),
        None => format!("{}/{}@{}", place.upstream, place.repo, root.spec.digest),
    };
    BundleImage {
        name,
        upstream: place.upstream.clone(),
        repository: place.repo.to_string(),
        tag: place.tag.as_ref().map(|t| t.to_string()),
        digest: root.spec.digest.to_string(),
        platforms: root.platforms.clone(),
    }
}
