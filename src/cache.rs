//! The local cache: verified blobs and manifests by digest, tag records per upstream and
//! repository, and the single-flight fills that populate the blob store.

pub mod blobs;
pub mod coalesce;
pub mod fill;
pub mod manifests;
pub mod negative;
pub mod reader;

use std::io;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
pub use fill::{Fill, FillError, FillState, Fills, Lookup};
pub use manifests::{ManifestStore, StoredManifest, TagRecord, TagStore};
pub use reader::{BlobBody, Source};

pub struct Cache {
    pub fills: Arc<Fills>,
    pub manifests: ManifestStore,
    pub tags: TagStore,
    pub missing: negative::NegativeCache,
}

impl Cache {
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> io::Result<Cache> {
        let dir = &config.cache.dir;
        std::fs::create_dir_all(dir)?;
        let blobs = blobs::BlobStore::open(dir)?;
        Ok(Cache {
            fills: Arc::new(Fills::new(
                blobs,
                config.fetch.read_timeout,
                config.fetch.finish_abandoned,
                metrics,
            )),
            manifests: ManifestStore::open(dir)?,
            tags: TagStore::open(dir)?,
            missing: negative::NegativeCache::new(config.cache.negative_ttl),
        })
    }
}
