//! Every Prometheus metric regcache exports, registered in one place on a per-daemon registry.
//! Names are `regcache_<what>_<unit>[_total]`; labels come only from bounded sets (request kind,
//! cache result, upstream host from the config, method, status class), never from repository
//! names, tags or digests.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// kind = manifest|blob|tags|referrers|base|other, result = hit|miss|stale|coalesced|error.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Bytes sent to clients, by kind and by where they came from (cache = already on disk
    /// before the request, upstream = streamed from a download or an upstream answer).
    pub served_bytes: IntCounterVec,
    /// Bytes fetched from each upstream (blob and manifest bodies).
    pub upstream_bytes: IntCounterVec,
    /// Upstream responses by upstream, method and status class (2xx, 3xx, 4xx, 5xx, error).
    pub upstream_requests: IntCounterVec,
    pub upstream_ratelimit_remaining: IntGaugeVec,
    pub upstream_ratelimit_limit: IntGaugeVec,
    /// Requests not sent because the upstream's last 429 asked us to wait.
    pub upstream_throttled: IntCounterVec,
    /// Upstream requests in progress, body downloads included (what `max_connections` caps).
    pub upstream_active_requests: IntGaugeVec,
    pub upstream_token_fetches: IntCounterVec,
    /// 1 while an upstream is marked down by its circuit breaker.
    pub upstream_down: IntGaugeVec,
    /// Credential lookups (config.json, credential helper) by upstream and result (ok, error).
    pub upstream_credential_resolutions: IntCounterVec,
    pub inflight_downloads: IntGauge,
    /// Requests that joined a download or upstream request already under way, by kind.
    pub coalesced: IntCounterVec,
    pub digest_mismatches: IntCounter,
    pub failed_downloads: IntCounter,
    /// Bytes of published blobs and manifests, counted in 4 KiB blocks.
    pub cache_bytes: IntGauge,
    pub cache_blobs: IntGauge,
    /// Bytes set aside for downloads in progress.
    pub cache_reserved_bytes: IntGauge,
    /// `[cache] max_size`; 0 when unlimited.
    pub cache_max_bytes: IntGauge,
    /// Blobs and manifests evicted, and their bytes.
    pub evictions: IntCounter,
    pub evicted_bytes: IntCounter,
    /// Writes to the cache that failed (disk full, I/O error); the content was served anyway.
    pub cache_write_errors: IntCounter,
    /// Blobs streamed to clients without being kept, by reason = no_room|write_error.
    pub uncached: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definition is valid");
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    r.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definition is valid");
    r.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "regcache_request_duration_seconds",
                "Time from request to the end of the response body, by kind",
            )
            .buckets(vec![0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0, 300.0]),
            &["kind"],
        )
        .expect("metric definition is valid");
        r.register(Box::new(request_seconds.clone()))
            .expect("metric names are unique");
        let upstream_down = gauge_vec(
            &r,
            "regcache_upstream_down",
            "1 while an upstream is marked down after repeated failures",
            &["upstream"],
        );
        Metrics {
            registry: r.clone(),
            requests: counter_vec(
                &r,
                "regcache_requests_total",
                "Client requests by kind, cache result and upstream",
                &["kind", "result", "upstream"],
            ),
            request_seconds,
            served_bytes: counter_vec(
                &r,
                "regcache_served_bytes_total",
                "Bytes sent to clients, by kind and source (cache or upstream)",
                &["kind", "source"],
            ),
            upstream_bytes: counter_vec(
                &r,
                "regcache_upstream_bytes_total",
                "Bytes fetched from upstreams",
                &["upstream"],
            ),
            upstream_requests: counter_vec(
                &r,
                "regcache_upstream_requests_total",
                "Upstream responses by upstream, method and status class",
                &["upstream", "method", "class"],
            ),
            upstream_ratelimit_remaining: gauge_vec(
                &r,
                "regcache_upstream_ratelimit_remaining",
                "Last RateLimit-Remaining an upstream reported",
                &["upstream"],
            ),
            upstream_ratelimit_limit: gauge_vec(
                &r,
                "regcache_upstream_ratelimit_limit",
                "Last RateLimit-Limit an upstream reported",
                &["upstream"],
            ),
            upstream_throttled: counter_vec(
                &r,
                "regcache_upstream_throttled_total",
                "Requests not sent because the upstream answered 429 and its Retry-After has not passed",
                &["upstream"],
            ),
            upstream_active_requests: gauge_vec(
                &r,
                "regcache_upstream_active_requests",
                "Upstream requests in progress, body downloads included",
                &["upstream"],
            ),
            upstream_down,
            upstream_token_fetches: counter_vec(
                &r,
                "regcache_upstream_token_fetches_total",
                "Bearer tokens fetched from upstream token services",
                &["upstream"],
            ),
            upstream_credential_resolutions: counter_vec(
                &r,
                "regcache_upstream_credential_resolutions_total",
                "Credential lookups from a Docker config.json or credential helper, by result",
                &["upstream", "result"],
            ),
            inflight_downloads: gauge(
                &r,
                "regcache_inflight_downloads",
                "Blob downloads from upstream in progress",
            ),
            coalesced: counter_vec(
                &r,
                "regcache_coalesced_total",
                "Requests that joined a download or upstream request already under way",
                &["kind"],
            ),
            digest_mismatches: counter(
                &r,
                "regcache_digest_mismatches_total",
                "Upstream content whose digest did not match (never kept)",
            ),
            failed_downloads: counter(
                &r,
                "regcache_failed_downloads_total",
                "Blob downloads that failed and kept nothing",
            ),
            cache_bytes: gauge(
                &r,
                "regcache_cache_bytes",
                "Bytes of blobs and manifests in the cache (in 4 KiB blocks)",
            ),
            cache_blobs: gauge(&r, "regcache_cache_blobs", "Blobs in the cache"),
            cache_reserved_bytes: gauge(
                &r,
                "regcache_cache_reserved_bytes",
                "Bytes reserved within the disk budget by downloads in progress",
            ),
            cache_max_bytes: gauge(
                &r,
                "regcache_cache_max_bytes",
                "The disk budget (cache.max_size); 0 when unlimited",
            ),
            evictions: counter(
                &r,
                "regcache_evictions_total",
                "Blobs and manifests evicted to stay within the disk budget",
            ),
            evicted_bytes: counter(
                &r,
                "regcache_evicted_bytes_total",
                "Bytes of blobs and manifests evicted to stay within the disk budget",
            ),
            cache_write_errors: counter(
                &r,
                "regcache_cache_write_errors_total",
                "Writes to the cache that failed (disk full, I/O errors); content was served anyway",
            ),
            uncached: counter_vec(
                &r,
                "regcache_uncached_blobs_total",
                "Blobs streamed from upstream without being kept, by reason (no_room, write_error)",
                &["reason"],
            ),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Status class label for an upstream response.
    pub fn class(status: http::StatusCode) -> &'static str {
        match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        }
    }
}
