//! Tag records (`tags/<upstream>/<repo>/@tags/<tag>`: digest, media type and size) and the last
//! tag list and referrers answers (`tags/<upstream>/<repo>/@docs/<name>`), kept as budgeted,
//! evictable records (`records.rs`). `@` cannot occur in a repository name, so these never
//! collide with nested repositories. A record or document that was evicted is simply looked up
//! upstream again.
//!
//! How fresh a tag is, is the pull-through policy's business (`registry/mirror`), not the store's.
//! A tag record that cannot be written (no room, disk full) is logged and counted, not turned
//! into a client error: the answer is served from memory all the same.
//!
//! Tag records read or written lately are also held in memory, parsed (bounded in number), so a
//! fresh tag costs no disk read and no JSON parse; the index still decides whether a record is
//! kept, so an evicted or purged one is not served from memory.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

use super::index::Index;
use super::key::{link_name, Key, RecordPath};
use super::layout::Layout;
use super::records::Records;
use super::shared::Level;
use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName, Tag};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl TagRecord {
    pub fn digest(&self) -> Option<Digest> {
        self.digest.parse().ok()
    }
}

/// Where a repository's record `name` of `section` (`@tags`, `@docs`) lives.
fn record_path(upstream: &str, repo: &RepoName, section: &str, name: &str) -> io::Result<RecordPath> {
    let parts = std::iter::once(upstream)
        .chain(repo.components())
        .chain([section, name]);
    RecordPath::new(parts).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{upstream:?}/{repo}/{section}/{name:?} is no record path"),
        )
    })
}

/// The most tag records held in memory.
const HOT_RECORDS: u64 = 65_536;

pub struct TagStore {
    records: Records,
    metrics: Arc<Metrics>,
    hot: Cache<RecordPath, TagRecord>,
}

impl TagStore {
    pub fn open(
        layout: &Layout,
        index: Arc<Index>,
        metrics: Arc<Metrics>,
        shared: Option<Arc<Level>>,
    ) -> io::Result<TagStore> {
        std::fs::create_dir_all(layout.tags())?;
        Ok(TagStore {
            records: Records::new(layout, index, shared),
            metrics,
            hot: Cache::new(HOT_RECORDS),
        })
    }

    pub async fn get(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        let path = record_path(upstream, repo, "@tags", tag.as_str())?;
        if let Some(rec) = self.hot.get(&path) {
            if self.records.touch(&path) {
                return Ok(Some(rec));
            }
            self.hot.invalidate(&path);
        }
        let Some(bytes) = self.records.get(&path).await? else {
            return Ok(None);
        };
        let rec: Option<TagRecord> = serde_json::from_slice(&bytes).ok();
        if let Some(r) = &rec {
            // Never over a record a concurrent `put` just placed.
            self.hot.entry(path).or_insert(r.clone());
        }
        Ok(rec)
    }

    /// Records where a tag points; false when it was not kept. A record that cannot be written
    /// is logged, not an error: the tag is then looked up upstream again next time.
    pub async fn put(&self, upstream: &str, repo: &RepoName, tag: &Tag, rec: &TagRecord) -> io::Result<bool> {
        let bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
        let path = record_path(upstream, repo, "@tags", tag.as_str())?;
        // Whatever happens to the write, an older record in memory is no longer the tag's.
        self.hot.invalidate(&path);
        match self.records.put(path.clone(), bytes).await {
            Ok(true) => {
                self.hot.insert(path, rec.clone());
                Ok(true)
            }
            Ok(false) => {
                tracing::info!(%repo, %tag, "no room for a tag record within the cache budget; not kept");
                Ok(false)
            }
            Err(e) => {
                self.metrics.cache.write_errors.inc();
                tracing::warn!(%repo, %tag, error = %e, "cannot write a tag record to the cache");
                Ok(false)
            }
        }
    }

    /// Drops the record of `tag`, or every tag record of the repository without one, so the
    /// next pull asks the upstream; kept documents and repository links stay. Returns how many
    /// records went.
    pub async fn purge(&self, upstream: &str, repo: &RepoName, tag: Option<&Tag>) -> io::Result<u64> {
        if let Some(tag) = tag {
            let path = record_path(upstream, repo, "@tags", tag.as_str())?;
            self.hot.invalidate(&path);
            self.records.remove_shared(&path);
            return self.records.remove_where(move |p| *p == path).await;
        }
        // `@` cannot occur in a repository name: this prefix never matches a nested repository.
        let probe = record_path(upstream, repo, "@tags", "-")?;
        let prefix = probe.as_str().trim_end_matches('-').to_string();
        for (path, _) in self.hot.iter() {
            if path.as_str().starts_with(&prefix) {
                self.hot.invalidate(path.as_ref());
            }
        }
        self.records.remove_shared_under(&prefix);
        self.records
            .remove_where(move |p| p.as_str().starts_with(&prefix))
            .await
    }

    /// The last copy of a per-repository document (tag list, referrers) kept for offline use.
    /// `name` is chosen by regcache, never by a client.
    pub async fn get_doc(&self, upstream: &str, repo: &RepoName, name: &str) -> io::Result<Option<Bytes>> {
        let path = record_path(upstream, repo, "@docs", name)?;
        Ok(self.records.get(&path).await?.map(Bytes::from))
    }

    /// Whether `digest` was fetched or verified for this repository (its link record exists).
    pub async fn is_linked(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        let path = record_path(upstream, repo, "@links", &link_name(digest))?;
        Ok(self.records.get(&path).await?.is_some())
    }

    /// Records that `digest` belongs to this repository: it was fetched from it, or the upstream
    /// confirmed it. Without room it is not kept (the next request verifies again).
    pub async fn link(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> io::Result<()> {
        let path = record_path(upstream, repo, "@links", &link_name(digest))?;
        if !self.records.put(path, Vec::new()).await? {
            tracing::debug!(%repo, %digest, "no room for a repository link within the cache budget; not kept");
        }
        Ok(())
    }

    /// The index key of a repository's kept document `name` (to pin it).
    pub fn doc_key(&self, upstream: &str, repo: &RepoName, name: &str) -> io::Result<Key> {
        Ok(record_path(upstream, repo, "@docs", name)?.key())
    }

    /// Forgets that `digest` belongs to this repository (a delete in a hosted repository).
    pub async fn unlink(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        let path = record_path(upstream, repo, "@links", &link_name(digest))?;
        self.records.remove_shared(&path);
        Ok(self.records.remove_where(move |p| *p == path).await? > 0)
    }

    /// The tags a repository has records for, sorted by bytes (a hosted repository's tag list).
    pub async fn tag_names(&self, upstream: &str, repo: &RepoName) -> io::Result<Vec<String>> {
        let probe = record_path(upstream, repo, "@tags", "-")?;
        let dir = RecordPath::new(probe.components().take(probe.components().count() - 1))
            .ok_or_else(|| io::Error::other("a repository without a record directory"))?;
        self.records.names_under(dir).await
    }

    /// The index keys of a repository's records that a pinned image needs to be served
    /// without its upstream: its tag record (when `tag` is given) and the links of `digests`.
    pub fn record_keys(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: Option<&Tag>,
        digests: &[Digest],
    ) -> io::Result<Vec<Key>> {
        let mut keys = Vec::with_capacity(digests.len() + 1);
        if let Some(tag) = tag {
            keys.push(record_path(upstream, repo, "@tags", tag.as_str())?.key());
        }
        for d in digests {
            keys.push(record_path(upstream, repo, "@links", &link_name(d))?.key());
        }
        Ok(keys)
    }

    /// Keeps a document if the budget has room (without room it is served, not kept).
    pub async fn put_doc(&self, upstream: &str, repo: &RepoName, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = record_path(upstream, repo, "@docs", name)?;
        if !self.records.put(path, bytes.to_vec()).await? {
            tracing::info!(%repo, name, "no room for a kept document within the cache budget; not kept");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::budget::Budget;
    use crate::cache::key::BLOCK;

    #[tokio::test]
    async fn referrers_of_made_up_digests_stay_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let budget = Budget {
            max: Some(20 * BLOCK),
            high: 0.9,
            low: 0.5,
        };
        let metrics = Arc::new(Metrics::new());
        let index = Index::open(layout.clone(), budget, metrics.clone()).unwrap();
        let tags = TagStore::open(&layout, index.clone(), metrics, None).unwrap();
        let repo: RepoName = "library/app".parse().unwrap();
        let tag: Tag = "v1".parse().unwrap();
        let rec = TagRecord {
            digest: Digest::sha256_of(b"m").to_string(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 1,
        };
        assert!(tags.put("docker.io", &repo, &tag, &rec).await.unwrap());
        for i in 0..100 {
            let name = format!("referrers-sha256-{}", Digest::sha256_of(&[i]).hex());
            tags.put_doc("docker.io", &repo, &name, b"{}").await.unwrap();
            // The tag is read as often as clients pull it: it stays.
            assert_eq!(
                tags.get("docker.io", &repo, &tag).await.unwrap(),
                Some(rec.clone())
            );
            assert!(index.stats().bytes <= 20 * BLOCK);
        }
        let docs = std::fs::read_dir(dir.path().join("tags/docker.io/library/app/@docs")).unwrap();
        assert!(docs.count() <= 19, "what was evicted is gone from disk too");
        let name = format!("referrers-sha256-{}", Digest::sha256_of(&[99]).hex());
        assert!(tags.get_doc("docker.io", &repo, &name).await.unwrap().is_some());
        let first = format!("referrers-sha256-{}", Digest::sha256_of(&[0]).hex());
        assert!(tags.get_doc("docker.io", &repo, &first).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn purge_drops_tag_records_of_one_repository_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let metrics = Arc::new(Metrics::new());
        let index = Index::open(layout.clone(), Budget::unlimited(), metrics.clone()).unwrap();
        let tags = TagStore::open(&layout, index.clone(), metrics, None).unwrap();
        let (app, nested): (RepoName, RepoName) =
            ("library/app".parse().unwrap(), "library/app/sub".parse().unwrap());
        let (v1, v2): (Tag, Tag) = ("v1".parse().unwrap(), "v2".parse().unwrap());
        let rec = TagRecord {
            digest: Digest::sha256_of(b"m").to_string(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 1,
        };
        for (repo, tag) in [(&app, &v1), (&app, &v2), (&nested, &v1)] {
            assert!(tags.put("docker.io", repo, tag, &rec).await.unwrap());
        }
        tags.put_doc("docker.io", &app, "tags", b"{}").await.unwrap();
        tags.link("docker.io", &app, &Digest::sha256_of(b"m"))
            .await
            .unwrap();
        assert_eq!(tags.purge("docker.io", &app, Some(&v1)).await.unwrap(), 1);
        assert!(tags.get("docker.io", &app, &v1).await.unwrap().is_none());
        assert!(tags.get("docker.io", &app, &v2).await.unwrap().is_some());
        assert_eq!(tags.purge("ghcr.io", &app, None).await.unwrap(), 0);
        assert_eq!(tags.purge("docker.io", &app, None).await.unwrap(), 1);
        assert!(tags.get("docker.io", &app, &v2).await.unwrap().is_none());
        assert!(!dir.path().join("tags/docker.io/library/app/@tags/v2").exists());
        assert!(tags.get("docker.io", &nested, &v1).await.unwrap().is_some());
        assert!(tags.get_doc("docker.io", &app, "tags").await.unwrap().is_some());
        assert!(tags
            .is_linked("docker.io", &app, &Digest::sha256_of(b"m"))
            .await
            .unwrap());
        assert_eq!(
            index.stats().records,
            3,
            "the nested tag, the kept list and the link"
        );
    }
}
