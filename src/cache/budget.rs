//! The disk budget and what is reported about it, as plain values: `Budget` (max_size and the two
//! watermarks), `NoRoom` (a reservation or publish that does not fit), `Stats` (what
//! `cache stats` shows) and `GcReport` (what a `gc` run did). No I/O and no locks here; the
//! policy that uses them is in `evict.rs`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// None: unlimited.
    pub max: Option<u64>,
    pub high: f64,
    pub low: f64,
}

impl Budget {
    pub fn unlimited() -> Budget {
        Budget {
            max: None,
            high: 0.95,
            low: 0.85,
        }
    }

    fn mark(&self, fraction: f64) -> u64 {
        self.max.map_or(u64::MAX, |m| (m as f64 * fraction) as u64)
    }

    pub fn high_mark(&self) -> u64 {
        self.mark(self.high)
    }

    pub fn low_mark(&self) -> u64 {
        self.mark(self.low)
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no room within the cache budget")]
pub struct NoRoom;

/// What a `gc` run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub evicted: u64,
    pub freed_bytes: u64,
    /// Usage (published plus reserved) afterwards.
    pub bytes: u64,
    /// The usage it evicted towards.
    pub target: Option<u64>,
    /// With `hosted`: the content no repository links any more, released first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Released>,
}

/// What a release did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    /// Blobs and manifests whose pin went.
    pub unpinned: u64,
    /// Of those, deleted now, and their bytes (the others are being read: eviction takes them).
    pub deleted: u64,
    pub deleted_bytes: u64,
}

/// What `cache stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub blobs: u64,
    pub manifests: u64,
    /// Tag records and kept documents (tag lists, referrers answers).
    #[serde(default)]
    pub records: u64,
    /// Bytes counted against the budget: published blobs, manifests and records.
    pub bytes: u64,
    /// The part of `bytes` that records take.
    #[serde(default)]
    pub record_bytes: u64,
    /// Bytes reserved by downloads in progress.
    pub reserved_bytes: u64,
    pub max_size: Option<u64>,
    pub high_watermark: f64,
    pub low_watermark: f64,
    /// Milliseconds since the Unix epoch of the least recently used entry.
    pub oldest_access_ms: Option<u64>,
    pub pinned: u64,
    pub pinned_bytes: u64,
    /// Entries being read right now (never evicted while they are).
    pub in_use: u64,
}
