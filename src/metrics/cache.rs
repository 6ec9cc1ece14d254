//! The cache: downloads, verification failures, the disk budget's gauges, evictions, and what
//! could not be kept.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, gauge};

/// Why a blob streams through without being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncached {
    NoRoom,
    WriteError,
}

impl Uncached {
    pub fn as_str(self) -> &'static str {
        match self {
            Uncached::NoRoom => "no_room",
            Uncached::WriteError => "write_error",
        }
    }
}

pub struct CacheMetrics {
    pub inflight_downloads: IntGauge,
    pub digest_mismatches: IntCounter,
    pub failed_downloads: IntCounter,
    /// Bytes of published content, counted in 4 KiB blocks.
    pub bytes: IntGauge,
    pub blobs: IntGauge,
    /// Bytes set aside for downloads in progress.
    pub reserved_bytes: IntGauge,
    /// `[cache] max_size`; 0 when unlimited.
    pub max_bytes: IntGauge,
    pub evictions: IntCounter,
    pub evicted_bytes: IntCounter,
    /// Writes that failed (disk full, I/O error); the content was served anyway.
    pub write_errors: IntCounter,
    uncached: IntCounterVec,
    shared: IntCounterVec,
}

impl CacheMetrics {
    pub(super) fn register(r: &Registry) -> CacheMetrics {
        CacheMetrics {
            inflight_downloads: gauge(
                r,
                "regcache_inflight_downloads",
                "Blob downloads from upstream in progress",
            ),
            digest_mismatches: counter(
                r,
                "regcache_digest_mismatches_total",
                "Upstream content whose digest did not match (never kept)",
            ),
            failed_downloads: counter(
                r,
                "regcache_failed_downloads_total",
                "Blob downloads that failed and kept nothing",
            ),
            bytes: gauge(
                r,
                "regcache_cache_bytes",
                "Bytes of blobs and manifests in the cache (in 4 KiB blocks)",
            ),
            blobs: gauge(r, "regcache_cache_blobs", "Blobs in the cache"),
            reserved_bytes: gauge(
                r,
                "regcache_cache_reserved_bytes",
                "Bytes reserved within the disk budget by downloads in progress",
            ),
            max_bytes: gauge(
                r,
                "regcache_cache_max_bytes",
                "The disk budget (cache.max_size); 0 when unlimited",
            ),
            evictions: counter(
                r,
                "regcache_evictions_total",
                "Blobs and manifests evicted to stay within the disk budget or as unused past cache.unused_ttl",
            ),
            evicted_bytes: counter(
                r,
                "regcache_evicted_bytes_total",
                "Bytes of blobs and manifests evicted to stay within the disk budget or as unused past cache.unused_ttl",
            ),
            write_errors: counter(
                r,
                "regcache_cache_write_errors_total",
                "Writes to the cache that failed (disk full, I/O errors); content was served anyway",
            ),
            shared: counter_vec(
                r,
                "regcache_shared_store_requests_total",
                "Requests to the shared store ([storage] kind = \"s3\") by operation and result",
                &["op", "result"],
            ),
            uncached: counter_vec(
                r,
                "regcache_uncached_blobs_total",
                "Blobs streamed from upstream without being kept, by reason (no_room, write_error)",
                &["reason"],
            ),
        }
    }

    /// One shared-store operation (`op`: get_blob, get_range, head, get, put_blob, put,
    /// delete) and how it went (hit, miss, ok, error; skipped: not asked, after a failed read).
    pub fn shared(&self, op: &str, result: &str) {
        self.shared.with_label_values(&[op, result]).inc();
    }

    /// A blob streamed to its clients without being kept.
    pub fn uncached(&self, why: Uncached) {
        self.uncached.with_label_values(&[why.as_str()]).inc();
    }
}
