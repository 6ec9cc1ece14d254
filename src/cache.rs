//! The local cache: verified blobs and manifests by digest, tag records per upstream and
//! repository, the single-flight fills that populate the blob store, and the index that keeps
//! the blob and manifest store within its disk budget (least recently used content goes first;
//! content being read and pinned content never does).

mod adopt;
mod ahead;
mod atomic;
mod background;
mod blobs;
mod budget;
pub mod dirlock;
mod download;
mod evict;
mod file_body;
mod fill;
mod index;
mod key;
#[cfg(test)]
mod layering;
mod layout;
mod lease;
mod ledger;
mod listing;
mod manifests;
pub mod origin;
mod passthrough;
mod priority;
mod progress;
mod reader;
mod records;
mod scan;
pub mod shared;
pub mod shared_gc;
mod snapshot;
pub mod store_mark;
mod tags;
mod trash;
mod uses;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::oci::{Digest, RepoName, Tag};
pub use adopt::{AdoptError, Adopted, Incoming, StagedContent};
pub use blobs::CachedBlob;
pub use budget::{Budget, GcReport, Released, Stats};
use bytes::Bytes;
use fill::Fills;
pub use fill::Lookup;
use index::Index;

pub use background::SNAPSHOT_EVERY;
pub use key::{Key, Kind};
pub use layout::Layout;
pub use listing::{EntryKind, LastPulled, ListEntry};
pub use manifests::{ManifestStore, StoredManifest};
use origin::Origin;
pub use progress::{Fill, FillError, FillState, Uncached};
pub use reader::{BlobBody, Source};
use std::path::PathBuf;
pub use tags::{TagRecord, TagStore};

/// What the cache is opened with (built from `[cache]` and `[fetch]` by the daemon's wiring).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub dir: PathBuf,
    pub budget: Budget,
    /// A download that sends nothing for this long fails.
    pub read_timeout: Duration,
    /// Downloads continue when every client has gone.
    pub finish_abandoned: bool,
    /// A store shared by replicas behind the directory (`shared.rs`); None: the directory only.
    pub shared: Option<Arc<dyn shared::Shared>>,
}

/// The cache, used through its methods: blobs (hits and single-flight fills), manifests, tag
/// records and kept documents, and the budget's operations (stats, gc, pins).
pub struct Cache {
    index: Arc<Index>,
    fills: Arc<Fills>,
    manifests: ManifestStore,
    tags: TagStore,
    shared: Option<Arc<shared::Level>>,
}

impl Cache {
    /// Opens (creating if needed) the cache directory and rebuilds the index from it. Blocking.
    pub fn open(settings: &CacheSettings, metrics: Arc<Metrics>) -> io::Result<Cache> {
        let layout = Layout::new(&settings.dir);
        let blobs = blobs::BlobStore::open(&layout)?;
        let index = Index::open(layout.clone(), settings.budget, metrics.clone())?;
        index.enforce();
        Cache::assemble(layout, blobs, index, settings, metrics)
    }

    /// Opens the directory of a stopped daemon for the operator commands: the index is rebuilt,
    /// nothing is evicted until asked. Blocking.
    pub fn inspect(settings: &CacheSettings, metrics: Arc<Metrics>) -> io::Result<Cache> {
        let layout = Layout::new(&settings.dir);
        let blobs = blobs::BlobStore::open(&layout)?;
        let index = Index::open(layout.clone(), settings.budget, metrics.clone())?;
        Cache::assemble(layout, blobs, index, settings, metrics)
    }

    fn assemble(
        layout: Layout,
        blobs: blobs::BlobStore,
        index: Arc<Index>,
        settings: &CacheSettings,
        metrics: Arc<Metrics>,
    ) -> io::Result<Cache> {
        let shared = settings
            .shared
            .clone()
            .map(|s| shared::Level::new(s, metrics.clone()));
        Ok(Cache {
            fills: Arc::new(Fills::new(
                blobs,
                index.clone(),
                settings.read_timeout,
                settings.finish_abandoned,
                metrics.clone(),
                shared.clone(),
            )),
            manifests: ManifestStore::open(&layout, index.clone(), metrics.clone(), shared.clone())?,
            tags: TagStore::open(&layout, index.clone(), metrics, shared.clone())?,
            index,
            shared,
        })
    }

    /// Writes the recency snapshot if anything changed. Blocking.
    pub fn save_recency(&self) -> io::Result<()> {
        self.index.save_if_dirty()
    }

    /// A cached blob (under a lease), the fill already running for it, or a new fill that
    /// downloads it from `origin`.
    pub fn blob(&self, digest: &Digest, origin: Arc<dyn Origin>) -> io::Result<Lookup> {
        self.fills.get_or_start(digest, origin)
    }

    /// A new staged file for imported content, hashed with `algorithm` (`adopt.rs`). Blocking.
    pub fn incoming(&self, algorithm: crate::oci::Algorithm) -> io::Result<Incoming> {
        adopt::incoming(self.fills.store(), algorithm)
    }

    /// Places checked, staged blobs and manifests into the store (pinned first when `pin`): all
    /// of them, or none when the budget has no room for them. Blocking.
    pub fn adopt(
        &self,
        blobs: Vec<StagedContent>,
        manifests: Vec<(StoredManifest, StagedContent)>,
        pin: bool,
    ) -> Result<Adopted, AdoptError> {
        let blob_digests: Vec<Digest> = blobs.iter().map(|b| b.digest.clone()).collect();
        let kept: Vec<StoredManifest> = manifests.iter().map(|(m, _)| m.clone()).collect();
        let adopted = adopt::adopt(&self.index, self.fills.store(), blobs, manifests, pin)?;
        // Pushed and imported content is every replica's too (uploads run in the background).
        if let Some(level) = &self.shared {
            for d in &blob_digests {
                self.fills.share(d, level);
            }
            for m in &kept {
                self.manifests.share(m);
            }
        }
        Ok(adopted)
    }

    /// A cached blob opened for reading under a lease, or None; never downloads.
    pub fn cached_blob(&self, digest: &Digest) -> io::Result<Option<CachedBlob>> {
        self.fills.open_cached(digest)
    }

    /// The content bytes of a cached entry, without counting as an access.
    pub fn content_len(&self, key: &Key) -> Option<u64> {
        self.index.len_of(key)
    }

    /// The size of a cached blob, without counting as an access.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.fills.cached_size(digest)
    }

    /// Whether a shared store stands behind the directory.
    pub fn has_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The size of a blob the shared store holds (None without one), for a `HEAD`.
    pub async fn shared_blob_size(&self, digest: &Digest) -> Option<u64> {
        self.shared.as_ref()?.blob_size(digest).await
    }

    /// The download in progress for `digest`, if any.
    pub fn filling(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.fills.active(digest)
    }

    /// A cached manifest, counting as an access to it and to everything it references.
    pub async fn manifest(&self, digest: &Digest) -> io::Result<Option<StoredManifest>> {
        self.manifests.get(digest).await
    }

    /// Keeps verified manifest bytes if the budget has room (a failed write is logged and
    /// counted, not an error).
    pub async fn put_manifest(&self, m: &StoredManifest) -> io::Result<()> {
        self.manifests.put(m).await
    }

    /// The keys of a repository's tag record (if `tag`) and of its links to `digests`, to pin.
    pub fn record_keys(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: Option<&Tag>,
        digests: &[Digest],
    ) -> io::Result<Vec<Key>> {
        self.tags.record_keys(upstream, repo, tag, digests)
    }

    pub async fn tag(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        self.tags.get(upstream, repo, tag).await
    }

    /// Records where a tag points; false when the record could not be written (logged).
    pub async fn put_tag(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: &Tag,
        rec: &TagRecord,
    ) -> io::Result<bool> {
        self.tags.put(upstream, repo, tag, rec).await
    }

    /// Drops the record of `tag`, or every tag record of the repository without one (content
    /// by digest, repository links and kept tag lists stay); returns how many went.
    pub async fn purge_tags(&self, upstream: &str, repo: &RepoName, tag: Option<&Tag>) -> io::Result<u64> {
        self.tags.purge(upstream, repo, tag).await
    }

    /// The last copy of a per-repository document (tag list, referrers) kept for outages.
    pub async fn doc(&self, upstream: &str, repo: &RepoName, name: &str) -> io::Result<Option<Bytes>> {
        self.tags.get_doc(upstream, repo, name).await
    }

    /// Whether `digest` was fetched or verified for the repository.
    pub async fn is_linked(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        self.tags.is_linked(upstream, repo, digest).await
    }

    /// The index key of a repository's kept document (to pin it).
    pub fn doc_key(&self, upstream: &str, repo: &RepoName, name: &str) -> io::Result<Key> {
        self.tags.doc_key(upstream, repo, name)
    }

    /// Every repository with records under a namespace, sorted. Blocking.
    pub fn repositories(&self, upstream: &str) -> std::collections::BTreeSet<RepoName> {
        listing::repositories(&self.index, upstream)
    }

    /// Every repository link under a namespace: (repository, digest, last use in ms since the
    /// epoch). Blocking.
    pub fn links(&self, upstream: &str) -> Vec<(RepoName, Digest, u64)> {
        listing::links(&self.index, upstream)
    }

    /// Forgets that `digest` belongs to the repository; whether it did.
    pub async fn unlink(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        self.tags.unlink(upstream, repo, digest).await
    }

    /// The tags a repository has records for, sorted.
    pub async fn tag_names(&self, upstream: &str, repo: &RepoName) -> io::Result<Vec<String>> {
        self.tags.tag_names(upstream, repo).await
    }

    /// Records that `digest` was fetched or verified for the repository.
    pub async fn link(&self, upstream: &str, repo: &RepoName, digest: &Digest) -> io::Result<()> {
        self.tags.link(upstream, repo, digest).await
    }

    pub async fn put_doc(&self, upstream: &str, repo: &RepoName, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.tags.put_doc(upstream, repo, name, bytes).await
    }

    pub fn stats(&self) -> Stats {
        self.index.stats()
    }

    /// Whether the index holds `key`.
    pub fn contains(&self, key: &Key) -> bool {
        self.index.contains(key)
    }

    /// What the cache holds under an image prefix (`library/alpine`, `ghcr.io/org`; everything
    /// without one): each tag record with its manifest described, then manifests by digest.
    /// Reads files without touching recency. Blocking.
    pub fn list(&self, prefix: Option<&str>) -> Vec<ListEntry> {
        listing::list(&self.index, prefix)
    }

    /// Evicts now, down to `to` bytes, or to the low watermark. Blocking.
    pub fn gc(&self, to: Option<u64>) -> GcReport {
        self.index.gc(to)
    }

    /// Evicts now what nobody has used for `unused_for` (as `[cache] unused_ttl` does). Blocking.
    pub fn gc_unused(&self, unused_for: Duration) -> GcReport {
        let before = ledger::now_ms().saturating_sub(unused_for.as_millis() as u64);
        self.index.expire_unused(before)
    }

    /// With `hosted`, first releases what no repository links any more (deleted from hosted
    /// repositories: `index/release.rs`), then evicts as `gc` does. Blocking.
    pub fn gc_with(&self, to: Option<u64>, hosted: bool) -> io::Result<GcReport> {
        let released = match hosted {
            true => Some(self.index.release_unlinked()?),
            false => None,
        };
        let mut report = self.index.gc(to);
        report.released = released;
        Ok(report)
    }

    /// Lets `keys` go from their pins, except content another pinned link still names. Blocking.
    pub fn unpin_keeping_linked(&self, keys: &[Key]) -> io::Result<()> {
        self.index.unpin_keeping_linked(keys)
    }

    /// Keeps `key` from eviction (or lets it go again); persisted.
    pub fn pin(&self, key: Key, pinned: bool) -> io::Result<()> {
        self.index.pin(key, pinned)
    }

    /// Returns when no download is running.
    pub async fn wait_idle(&self) {
        self.fills.wait_idle().await;
        if let Some(level) = &self.shared {
            level.wait_idle().await;
        }
    }

    /// Makes the next `n` blob writes fail, as a full disk would (tests of that path).
    #[doc(hidden)]
    pub fn fail_next_writes(&self, n: usize) {
        self.fills.store().fail_next_writes(n)
    }

    /// Sweeps away content unused for `ttl` (`background.rs`) until `stop` turns true.
    pub fn expire_unused(&self, ttl: Duration, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        background::sweep(self.index.clone(), ttl, stop)
    }

    /// Saves the recency snapshot (and, with a shared store, what was used since the last time:
    /// `shared_gc.rs`) every `SNAPSHOT_EVERY` while anything changed, and once more
    /// when `stop` turns true.
    pub fn persist_recency(&self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        background::persist(self.index.clone(), self.shared.clone(), stop)
    }
}
