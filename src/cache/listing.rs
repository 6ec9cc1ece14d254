//! What the cache holds, by upstream, repository and tag (`regcache cache ls`, `GET
//! /admin/cache/ls`): one entry per tag record, with the manifest it points at described from the
//! cached bytes (platforms, bytes cached, how many of the referenced blobs are cached, last
//! access, pinned), then the cached manifests no tag points to, by digest, under each repository
//! whose links (`@links` records) name them, or as unreferenced.
//!
//! A listing is a read: it copies the index's entries out under its lock (`Index::survey`), then
//! reads manifests, configs and tag records from the files without a lease and without touching
//! recency, so listing never changes what is evicted next. A file that vanished in between (an
//! eviction) counts as not cached. Blocking: callers run it off the async threads.

mod held;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::index::{Index, Surveyed};
use super::key::RecordPath;
use super::tags::TagRecord;
use crate::oci::{references, Digest};
use held::{sort_out, Described, Reader};

/// What an entry lists.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A tag record of a repository.
    Tag,
    /// A cached manifest no tag points to, known to belong to the repository by its link.
    Digest,
    /// A cached manifest no tag points to and no repository links.
    Unreferenced,
}

/// Where `last_pulled_ms` comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LastPulled {
    /// The index's last access of the manifest (a pull by tag or digest, or of an index naming it).
    Manifest,
    /// The index's last access of the tag record (the manifest is not cached).
    TagRecord,
}

/// One line of the listing; the field names are the JSON of `GET /admin/cache/ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListEntry {
    pub kind: EntryKind,
    /// The upstream's client-facing host (`docker.io`); None when unreferenced.
    pub upstream: Option<String>,
    /// `library/alpine`; None when unreferenced.
    pub repository: Option<String>,
    /// Only for `kind: tag`.
    pub tag: Option<String>,
    pub digest: String,
    pub media_type: String,
    /// Whether the manifest's bytes are cached (a tag record may outlive its manifest).
    pub manifest_cached: bool,
    /// `os/arch[/variant]`: an index's children, or a single manifest's cached config.
    pub platforms: Vec<String>,
    /// Content bytes cached: the manifest, and its config and layers that are cached; for an
    /// index, itself and that of each cached child.
    pub size: u64,
    /// Config and layer blobs cached, of `blobs_total` referenced (over the cached children of an
    /// index).
    pub blobs_cached: u64,
    pub blobs_total: u64,
    /// Child manifests cached, of `children_total` (an index; 0 of 0 otherwise).
    pub children_cached: u64,
    pub children_total: u64,
    /// Milliseconds since the Unix epoch.
    pub last_pulled_ms: Option<u64>,
    pub last_pulled_from: Option<LastPulled>,
    pub pinned: bool,
}

/// Whether `upstream/repository` falls under `prefix`, as whole path components: `ghcr.io/org`
/// and `org` both take `ghcr.io/org/app`; `library/alp` takes nothing.
fn matches(prefix: &str, upstream: &str, repository: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    let under =
        |name: &str| name == prefix || (name.starts_with(prefix) && name[prefix.len()..].starts_with('/'));
    prefix.is_empty() || under(&format!("{upstream}/{repository}")) || under(repository)
}

fn entry(kind: EntryKind, place: Option<(&str, &str)>, digest: &Digest, d: Described) -> ListEntry {
    ListEntry {
        kind,
        upstream: place.map(|p| p.0.to_string()),
        repository: place.map(|p| p.1.to_string()),
        tag: None,
        digest: digest.to_string(),
        media_type: d.media_type,
        manifest_cached: d.cached,
        platforms: d.platforms,
        size: d.size,
        blobs_cached: d.blobs.0,
        blobs_total: d.blobs.1,
        children_cached: d.children.0,
        children_total: d.children.1,
        last_pulled_ms: None,
        last_pulled_from: None,
        pinned: false,
    }
}

/// The listing of everything cached under `prefix` (everything, unreferenced manifests too,
/// without one), tags first, sorted by upstream, repository and tag. Blocking.
pub(super) fn list(index: &Index, prefix: Option<&str>) -> Vec<ListEntry> {
    let held = sort_out(index.survey());
    let reader = Reader {
        layout: &index.layout,
        held: &held,
    };
    let wanted = |u: &str, r: &str| prefix.is_none_or(|p| matches(p, u, r));
    let mut out = Vec::new();
    let mut covered: HashSet<Digest> = HashSet::new();
    for (upstream, repo, tag, path, last) in &held.tags {
        let Some(rec) = std::fs::read(index.layout.record(path))
            .ok()
            .and_then(|b| serde_json::from_slice::<TagRecord>(&b).ok())
        else {
            continue;
        };
        let Some(digest) = rec.digest() else { continue };
        covered.insert(digest.clone());
        if !wanted(upstream, repo) {
            continue;
        }
        let mut e = entry(
            EntryKind::Tag,
            Some((upstream, repo)),
            &digest,
            reader.describe(&digest),
        );
        e.tag = Some(tag.clone());
        if e.media_type.is_empty() {
            e.media_type = rec.media_type.clone();
        }
        (e.last_pulled_ms, e.last_pulled_from, e.pinned) = match held.manifests.get(&digest) {
            Some(m) if e.manifest_cached => (Some(m.last), Some(LastPulled::Manifest), m.pinned),
            _ => (Some(*last), Some(LastPulled::TagRecord), false),
        };
        out.push(e);
    }
    untagged(&reader, &mut covered, prefix, &mut out);
    out.sort_by(|a, b| {
        let key = |e: &ListEntry| {
            (
                e.kind,
                e.upstream.clone(),
                e.repository.clone(),
                e.tag.clone(),
                e.digest.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// The cached manifests no tag points to and no cached index names as a child.
fn untagged(
    reader: &Reader<'_>,
    covered: &mut HashSet<Digest>,
    prefix: Option<&str>,
    out: &mut Vec<ListEntry>,
) {
    for digest in reader.held.manifests.keys() {
        if let Some((_, bytes)) = reader.manifest(digest) {
            covered.extend(references(&bytes).manifests);
        }
    }
    let roots: BTreeMap<&Digest, &Surveyed> = reader
        .held
        .manifests
        .iter()
        .filter(|(d, _)| !covered.contains(*d))
        .collect();
    for (digest, m) in roots {
        let linked = reader
            .held
            .links
            .get(digest)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let places: Vec<Option<(&str, &str)>> = if linked.is_empty() {
            vec![None]
        } else {
            linked
                .iter()
                .map(|(u, r)| Some((u.as_str(), r.as_str())))
                .collect()
        };
        for place in places {
            let kind = if place.is_some() {
                EntryKind::Digest
            } else {
                EntryKind::Unreferenced
            };
            let keep = match (prefix, place) {
                (None, _) => true,
                (Some(p), Some((u, r))) => matches(p, u, r),
                (Some(_), None) => false,
            };
            if !keep {
                continue;
            }
            let mut e = entry(kind, place, digest, reader.describe(digest));
            (e.last_pulled_ms, e.last_pulled_from, e.pinned) =
                (Some(m.last), Some(LastPulled::Manifest), m.pinned);
            out.push(e);
        }
    }
}

/// The repository of a record under the namespace `upstream` (`<upstream>/<repo>/@<section>/…`).
fn repository_of(path: &RecordPath, upstream: &str) -> Option<crate::oci::RepoName> {
    let parts: Vec<&str> = path.components().collect();
    let section = parts.iter().position(|p| p.starts_with('@'))?;
    if parts.first() != Some(&upstream) || section < 2 {
        return None;
    }
    parts[1..section].join("/").parse().ok()
}

/// Every repository with records (links, tags, documents) under the namespace `upstream`.
/// Blocking (copies the index out).
pub(super) fn repositories(index: &Index, upstream: &str) -> BTreeSet<crate::oci::RepoName> {
    index
        .survey()
        .iter()
        .filter_map(|s| s.record.as_ref().and_then(|p| repository_of(p, upstream)))
        .collect()
}

/// Every repository link kept under the namespace `upstream`: the repository, the digest,
/// and when the link was last used (ms since the epoch). Blocking (copies the index out).
pub(super) fn links(index: &Index, upstream: &str) -> Vec<(crate::oci::RepoName, Digest, u64)> {
    index
        .survey()
        .iter()
        .filter_map(|s| {
            let path = s.record.as_ref()?;
            Some((repository_of(path, upstream)?, path.linked_digest()?, s.last))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_components() {
        assert!(matches("library/alpine", "docker.io", "library/alpine"));
        assert!(matches("docker.io/library", "docker.io", "library/alpine"));
        assert!(matches("ghcr.io/org", "ghcr.io", "org/app"));
        assert!(matches("ghcr.io/org/", "ghcr.io", "org/app"));
        assert!(!matches("library/alp", "docker.io", "library/alpine"));
        assert!(!matches("ghcr.io/org", "docker.io", "library/alpine"));
    }
}
