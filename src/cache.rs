//! The local cache: verified blobs and manifests by digest, tag records per upstream and
//! repository, the single-flight fills that populate the blob store, and the index that keeps
//! the blob and manifest store within its disk budget (least recently used content goes first;
//! content being read and pinned content never does).

mod atomic;
pub mod blobs;
mod budget;
pub mod coalesce;
pub mod control;
pub mod dirlock;
mod download;
pub mod evict;
pub mod fill;
pub mod index;
mod key;
#[cfg(test)]
mod layering;
pub mod layout;
mod lease;
mod ledger;
pub mod manifests;
pub mod negative;
pub mod origin;
mod passthrough;
mod progress;
pub mod reader;
mod records;
mod scan;
mod snapshot;
pub mod tags;
mod trash;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
pub use blobs::CachedBlob;
pub use evict::{Budget, GcReport};
pub use fill::{Fills, Lookup};
pub use index::{Index, Key, Kind, Stats};
pub use layout::Layout;
pub use manifests::{ManifestStore, StoredManifest};
pub use progress::{Fill, FillError, FillState, Uncached};
pub use reader::{BlobBody, Source};
pub use tags::{TagRecord, TagStore};

/// How often the recency snapshot is rewritten when something was accessed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

pub struct Cache {
    pub index: Arc<Index>,
    pub fills: Arc<Fills>,
    pub manifests: ManifestStore,
    pub tags: TagStore,
    pub missing: negative::NegativeCache,
}

impl Cache {
    /// Opens (creating if needed) the cache directory and rebuilds the index from it. Blocking.
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> io::Result<Cache> {
        let layout = Layout::new(&config.cache.dir);
        let blobs = blobs::BlobStore::open(&layout)?;
        let index = Index::open(
            layout.clone(),
            Budget::from_config(&config.cache),
            metrics.clone(),
        )?;
        index.enforce();
        Ok(Cache {
            fills: Arc::new(Fills::new(
                blobs,
                index.clone(),
                config.fetch.read_timeout,
                config.fetch.finish_abandoned,
                metrics.clone(),
            )),
            manifests: ManifestStore::open(&layout, index.clone(), metrics.clone())?,
            tags: TagStore::open(&layout, index.clone(), metrics)?,
            missing: negative::NegativeCache::new(config.cache.negative_ttl),
            index,
        })
    }

    /// Saves the recency snapshot every `SNAPSHOT_EVERY` while anything changed, and once more
    /// when `stop` turns true.
    pub fn persist_recency(&self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let index = self.index.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SNAPSHOT_EVERY);
            every.tick().await;
            loop {
                let last = tokio::select! {
                    _ = every.tick() => false,
                    _ = stop.wait_for(|s| *s) => true,
                };
                let i = index.clone();
                match tokio::task::spawn_blocking(move || i.save_if_dirty()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the recency snapshot"),
                    Err(e) => tracing::warn!(error = %e, "recency snapshot task failed"),
                }
                if last {
                    return;
                }
            }
        })
    }
}
