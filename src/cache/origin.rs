//! Where a fill's bytes come from. The cache knows nothing of registries: a fill is handed an
//! `Origin` that can start a download of the whole blob (again, for pass-through readers), and
//! of one byte range of it (for a client whose range the fill has not reached), and names
//! itself for metrics. The pull-through layer implements it over an upstream registry;
//! a later tier (another cache, object storage) can implement it too.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Any failure of an origin; the layer that made the origin classifies it (by downcasting).
pub type OriginError = Box<dyn std::error::Error + Send + Sync>;

/// A blob's body as the origin streams it.
pub type OriginBody = UnsyncBoxBody<Bytes, OriginError>;

/// An origin's answer: the announced size (if any) and the body.
pub struct Fetched {
    pub size: Option<u64>,
    pub body: OriginBody,
}

pub type Fetching = Pin<Box<dyn Future<Output = Result<Fetched, OriginError>> + Send>>;

pub trait Origin: Send + Sync + 'static {
    /// A bounded name for metrics labels (the upstream's configured host).
    fn name(&self) -> &str;

    /// Starts a new download of the whole blob.
    fn fetch(&self) -> Fetching;

    /// Starts a download of bytes `start..end` of the blob, exactly those (an origin that
    /// answers with anything else fails). An origin without ranges always fails.
    fn fetch_range(&self, start: u64, end: u64) -> Fetching {
        let _ = (start, end);
        Box::pin(async { Err("this origin does not serve ranges".into()) })
    }
}
