//! Client requests: count, duration and bytes served by request kind and cache result, and the
//! requests that joined work already under way.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, Registry};

use super::{counter, counter_vec, histogram_vec};

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Manifest,
    Blob,
    Tags,
    Referrers,
    /// `/v2/`
    Base,
    /// Anything refused before it named a repository.
    Other,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Manifest => "manifest",
            RequestKind::Blob => "blob",
            RequestKind::Tags => "tags",
            RequestKind::Referrers => "referrers",
            RequestKind::Base => "base",
            RequestKind::Other => "other",
        }
    }
}

/// Where served bytes came from: on disk before the request, or streamed from upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Cache,
    Upstream,
}

impl Served {
    fn as_str(self) -> &'static str {
        match self {
            Served::Cache => "cache",
            Served::Upstream => "upstream",
        }
    }
}

pub struct RequestMetrics {
    /// kind, result = hit|miss|stale|coalesced|error|pass, upstream.
    requests: IntCounterVec,
    seconds: HistogramVec,
    served_bytes: IntCounterVec,
    coalesced: IntCounterVec,
    /// Bytes of cached blobs the kernel sent with sendfile (`splice.rs`), counted by the
    /// connections as they go out.
    pub sendfile_bytes: IntCounter,
}

impl RequestMetrics {
    pub(super) fn register(r: &Registry) -> RequestMetrics {
        RequestMetrics {
            requests: counter_vec(
                r,
                "regcache_requests_total",
                "Client requests by kind, cache result and upstream",
                &["kind", "result", "upstream"],
            ),
            seconds: histogram_vec(
                r,
                "regcache_request_duration_seconds",
                "Time from request to the end of the response body, by kind",
                vec![0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0],
                &["kind"],
            ),
            served_bytes: counter_vec(
                r,
                "regcache_served_bytes_total",
                "Bytes sent to clients, by kind and source (cache or upstream)",
                &["kind", "source"],
            ),
            coalesced: counter_vec(
                r,
                "regcache_coalesced_total",
                "Requests that joined a download or upstream request already under way",
                &["kind"],
            ),
            sendfile_bytes: counter(
                r,
                "regcache_sendfile_bytes_total",
                "Bytes of cached blobs sent with sendfile(2) on plain HTTP/1.1 connections (also in regcache_served_bytes_total)",
            ),
        }
    }

    /// One finished request. `result` is the cache result's label; `upstream` a configured host
    /// (or empty).
    pub fn finished(
        &self,
        kind: RequestKind,
        result: &'static str,
        upstream: &str,
        secs: f64,
        bytes: (u64, Served),
    ) {
        let kind = kind.as_str();
        self.requests.with_label_values(&[kind, result, upstream]).inc();
        self.seconds.with_label_values(&[kind]).observe(secs);
        if bytes.0 > 0 {
            self.served_bytes
                .with_label_values(&[kind, bytes.1.as_str()])
                .inc_by(bytes.0);
        }
    }

    /// A request joined a download or upstream request already under way.
    pub fn coalesced(&self, kind: RequestKind) {
        self.coalesced.with_label_values(&[kind.as_str()]).inc();
    }
}
