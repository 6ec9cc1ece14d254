//! What the registry layer answers with: typed values the HTTP layer turns into responses, each
//! saying how it was served (`CacheResult`) for the access log and metrics.

use bytes::Bytes;

use crate::cache::{BlobBody, Source, StoredManifest};
use crate::metrics::Served;
use crate::oci::Digest;
use crate::splice::Splice;

/// How a request was answered, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// From the cache, no upstream request.
    Hit,
    /// Fetched from upstream (this request started the fetch).
    Miss,
    /// From the cache because the upstream failed.
    Stale,
    /// Joined a download or upstream request another client started.
    Coalesced,
    Error,
    /// Not a cache question (`/v2/`, pass-through listings).
    Pass,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::Coalesced => "coalesced",
            CacheResult::Error => "error",
            CacheResult::Pass => "pass",
        }
    }

    /// Bytes of a hit come from disk; everything else streamed through a fill or upstream.
    pub fn source(self) -> Served {
        match self {
            CacheResult::Hit | CacheResult::Stale => Served::Cache,
            _ => Served::Upstream,
        }
    }
}

/// A manifest answer; for `HEAD` the bytes may be absent.
#[derive(Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub bytes: Option<Bytes>,
    pub result: CacheResult,
}

impl From<StoredManifest> for Manifest {
    fn from(m: StoredManifest) -> Self {
        Manifest {
            size: m.bytes.len() as u64,
            digest: m.digest,
            media_type: m.media_type,
            bytes: Some(m.bytes),
            result: CacheResult::Hit,
        }
    }
}

impl Manifest {
    pub(crate) fn with(mut self, result: CacheResult) -> Manifest {
        self.result = result;
        self
    }
}

/// A blob ready to stream: from the cache, or following the single download of it.
pub struct Blob {
    /// None when the upstream announced no length (ranges are then impossible).
    pub size: Option<u64>,
    pub result: CacheResult,
    pub(crate) source: Source,
}

impl Blob {
    /// A body streaming bytes `start..end` (`end` None: until the download ends); a cached
    /// file's bytes go out with sendfile when the connection offers `splice`.
    pub fn body(self, start: u64, end: Option<u64>, splice: Option<Splice>) -> BlobBody {
        BlobBody::spawn(self.source, start, end, splice)
    }
}

/// One page of a tag list, with the query of the next page (without `ns`) when there is one.
pub struct TagPage {
    pub body: Bytes,
    pub next: Option<Vec<(String, String)>>,
    pub result: CacheResult,
}

/// A referrers index, filtered by artifact type when one was asked for.
pub struct Referrers {
    pub body: Bytes,
    pub filtered: bool,
    pub result: CacheResult,
}
