//! Import, second half of the checking: the entries of `index.json` are the images, and each
//! is walked down from its manifest. Every manifest reached must parse; every config and layer
//! an image manifest names must be in the bundle (already checked against its digest when it was
//! staged, and here against the size its descriptor gives) or already cached; a child of an
//! index may be absent (an export carries the platforms that were cached), and is counted. A
//! missing blob refuses the whole bundle, naming the blob and the image. Blocking (manifests are
//! read from their staged files).

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;

use super::import::Received;
use super::layout::{platform_text, Descriptor, LayoutIndex, ManifestHead, MAX_DOCUMENT};
use super::BundleError;
use crate::cache::{Cache, Key};
use crate::oci::Digest;

/// An entry of the bundle: a named image, or an unnamed manifest (a referrer).
#[derive(Debug, Clone)]
pub(super) struct RootSpec {
    pub name: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// One entry, checked: everything it reaches.
#[derive(Debug)]
pub(super) struct CheckedRoot {
    pub spec: RootSpec,
    /// The media type to serve its manifest with.
    pub media_type: String,
    /// Every manifest and blob it reaches that the bundle or the cache holds.
    pub closure: Vec<Digest>,
    pub platforms: Vec<String>,
    /// Of its top manifest, for the referrers list of its subject.
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// What the bundle's images need, all checked.
#[derive(Debug, Default)]
pub(super) struct Checked {
    pub roots: Vec<CheckedRoot>,
    /// Manifests in the bundle that the images reach: digest, media type, bytes.
    pub manifests: Vec<(Digest, String, Bytes)>,
    /// Blobs in the bundle that the images reach.
    pub blobs: Vec<Digest>,
    pub absent_children: u64,
}

/// The entries of an OCI layout's `index.json`.
pub(super) fn layout_roots(index: &[u8]) -> Result<Vec<RootSpec>, BundleError> {
    let index: LayoutIndex = serde_json::from_slice(index)
        .map_err(|e| BundleError::Unreadable(format!("index.json does not parse: {e}")))?;
    if index.manifests.is_empty() {
        return Err(BundleError::Unreadable("index.json lists no image".into()));
    }
    index
        .manifests
        .iter()
        .map(|d| {
            let digest = d
                .digest
                .parse()
                .map_err(|e| BundleError::Unreadable(format!("index.json names {:?}: {e}", d.digest)))?;
            Ok(RootSpec {
                name: d.name().map(str::to_string),
                digest,
                media_type: d.media_type.clone(),
                size: d.size,
            })
        })
        .collect()
}

/// Walks every entry; the first thing missing or malformed refuses the bundle.
pub(super) fn check(cache: &Cache, roots: &[RootSpec], received: &Received) -> Result<Checked, BundleError> {
    let mut checked = Checked::default();
    let mut manifests_seen: HashSet<Digest> = HashSet::new();
    let mut blobs_seen: HashSet<Digest> = HashSet::new();
    for spec in roots {
        let label = spec.name.clone().unwrap_or_else(|| spec.digest.to_string());
        let mut root = CheckedRoot {
            spec: spec.clone(),
            media_type: spec.media_type.clone(),
            closure: Vec::new(),
            platforms: Vec::new(),
            subject: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        };
        let mut visited: HashSet<Digest> = HashSet::new();
        // (digest, declared media type, declared size, optional, platform)
        let mut todo = vec![(
            spec.digest.clone(),
            spec.media_type.clone(),
            spec.size,
            false,
            None,
        )];
        while let Some((d, declared, size, optional, platform)) = todo.pop() {
            if !visited.insert(d.clone()) {
                continue;
            }
            let Some(staged) = received.blobs.get(&d) else {
                if cache.contains(&Key::manifest(&d)) {
                    root.closure.push(d);
                } else if optional {
                    checked.absent_children += 1;
                } else {
                    return Err(BundleError::Incomplete(format!(
                        "manifest {d} of {label} is in neither the bundle nor the cache"
                    )));
                }
                continue;
            };
            sized(&d, size, staged.size, &label)?;
            if staged.size > MAX_DOCUMENT {
                return Err(BundleError::Unreadable(format!(
                    "{d} of {label} is too large for a manifest"
                )));
            }
            let bytes = Bytes::from(staged.read()?);
            let head = ManifestHead::parse(&bytes)
                .map_err(|e| BundleError::Unreadable(format!("{d} of {label}: {e}")))?;
            let media_type = if declared.is_empty() {
                head.media_type()
            } else {
                declared
            };
            if d == spec.digest {
                root.media_type = media_type.clone();
                root.subject = head.subject();
                root.artifact_type = head.artifact_type();
                root.annotations = head.annotations.clone();
            }
            root.closure.push(d.clone());
            if head.is_index() {
                for child in head.manifests.iter().flatten() {
                    let c = parse_digest(child, &d)?;
                    let p = child.platform.as_ref().and_then(platform_text);
                    todo.push((c, child.media_type.clone(), child.size, true, p));
                }
            } else {
                if let Some(p) = platform {
                    root.platforms.push(p);
                }
                for blob in head.config.iter().chain(&head.layers) {
                    let b = parse_digest(blob, &d)?;
                    if let Some(staged) = received.blobs.get(&b) {
                        sized(&b, blob.size, staged.size, &label)?;
                        if blobs_seen.insert(b.clone()) {
                            checked.blobs.push(b.clone());
                        }
                    } else if cache.blob_size(&b).is_none() {
                        return Err(BundleError::Incomplete(format!(
                            "blob {b} of {label} (named by manifest {d}) is in neither the bundle nor the cache"
                        )));
                    }
                    root.closure.push(b);
                }
            }
            if manifests_seen.insert(d.clone()) {
                checked.manifests.push((d, media_type, bytes));
            }
        }
        checked.roots.push(root);
    }
    Ok(checked)
}

fn parse_digest(d: &Descriptor, within: &Digest) -> Result<Digest, BundleError> {
    d.digest
        .parse()
        .map_err(|e| BundleError::Unreadable(format!("manifest {within} names {:?}: {e}", d.digest)))
}

/// A descriptor's size must be the content's.
fn sized(d: &Digest, declared: u64, actual: u64, label: &str) -> Result<(), BundleError> {
    if declared == actual {
        return Ok(());
    }
    Err(BundleError::Corrupt(format!(
        "{d} in the bundle has {actual} bytes where {label} says {declared}"
    )))
}
