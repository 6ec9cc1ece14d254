//! The upstreams: responses by status class, bytes fetched, rate-limit headers and hold-offs,
//! connections in use, token fetches, credential lookups, refused redirects, the breaker and
//! requests answered by an upstream's fallbacks.
//! Each upstream takes its own pre-labelled handles once (`for_upstream`), so its request path
//! never builds labels.

use http::StatusCode;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{counter_vec, gauge_vec};

/// How an upstream request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    Redirect,
    ClientError,
    ServerError,
    /// No response (connect error, timeout, broken exchange).
    Failed,
}

impl StatusClass {
    pub fn of(status: StatusCode) -> StatusClass {
        match status.as_u16() {
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Failed => "error",
        }
    }
}

pub struct UpstreamMetrics {
    bytes: IntCounterVec,
    responses: IntCounterVec,
    ratelimit_remaining: IntGaugeVec,
    ratelimit_limit: IntGaugeVec,
    throttled: IntCounterVec,
    active_requests: IntGaugeVec,
    token_fetches: IntCounterVec,
    down: IntGaugeVec,
    credential_resolutions: IntCounterVec,
    redirects_refused: IntCounterVec,
    fallbacks: IntCounterVec,
}

/// One upstream's handles, labelled with its configured host.
#[derive(Clone)]
pub struct UpstreamCounters {
    host: String,
    responses: IntCounterVec,
    /// Bytes fetched (blob and manifest bodies).
    pub bytes: IntCounter,
    pub ratelimit_remaining: IntGauge,
    pub ratelimit_limit: IntGauge,
    /// Requests not sent because the last 429's Retry-After has not passed.
    pub throttled: IntCounter,
    /// Requests in progress, body downloads included (what `max_connections` caps).
    pub active_requests: IntGauge,
    pub token_fetches: IntCounter,
    /// 1 while the circuit breaker holds the upstream down.
    pub down: IntGauge,
    pub credentials_resolved: IntCounter,
    pub credentials_failed: IntCounter,
    /// Redirects not followed: their target is not allowed (see upstream/redirect.rs).
    pub redirects_refused: IntCounter,
    /// Failed requests a fallback answered, and ones no fallback could.
    pub fallback_served: IntCounter,
    pub fallback_failed: IntCounter,
}

impl UpstreamCounters {
    /// One upstream response (or failure to get one).
    pub fn response(&self, method: &http::Method, class: StatusClass) {
        self.responses
            .with_label_values(&[self.host.as_str(), method.as_str(), class.as_str()])
            .inc();
    }
}

impl UpstreamMetrics {
    pub(super) fn register(r: &Registry) -> UpstreamMetrics {
        UpstreamMetrics {
            bytes: counter_vec(
                r,
                "regcache_upstream_bytes_total",
                "Bytes fetched from upstreams",
                &["upstream"],
            ),
            responses: counter_vec(
                r,
                "regcache_upstream_requests_total",
                "Upstream responses by upstream, method and status class",
                &["upstream", "method", "class"],
            ),
            ratelimit_remaining: gauge_vec(
                r,
                "regcache_upstream_ratelimit_remaining",
                "Last RateLimit-Remaining an upstream reported",
                &["upstream"],
            ),
            ratelimit_limit: gauge_vec(
                r,
                "regcache_upstream_ratelimit_limit",
                "Last RateLimit-Limit an upstream reported",
                &["upstream"],
            ),
            throttled: counter_vec(
                r,
                "regcache_upstream_throttled_total",
                "Requests not sent because the upstream answered 429 and its Retry-After has not passed",
                &["upstream"],
            ),
            active_requests: gauge_vec(
                r,
                "regcache_upstream_active_requests",
                "Upstream requests in progress, body downloads included",
                &["upstream"],
            ),
            token_fetches: counter_vec(
                r,
                "regcache_upstream_token_fetches_total",
                "Bearer tokens fetched from upstream token services",
                &["upstream"],
            ),
            down: gauge_vec(
                r,
                "regcache_upstream_down",
                "1 while an upstream is marked down after repeated failures",
                &["upstream"],
            ),
            credential_resolutions: counter_vec(
                r,
                "regcache_upstream_credential_resolutions_total",
                "Credential lookups from a Docker config.json or credential helper, by result",
                &["upstream", "result"],
            ),
            redirects_refused: counter_vec(
                r,
                "regcache_upstream_redirects_refused_total",
                "Upstream redirects not followed because their target is not allowed",
                &["upstream"],
            ),
            fallbacks: counter_vec(
                r,
                "regcache_upstream_fallbacks_total",
                "Failed upstream requests handed to the upstream's fallbacks, by result (served, failed)",
                &["upstream", "result"],
            ),
        }
    }

    /// The handles of the upstream configured as `host`.
    pub fn for_upstream(&self, host: &str) -> UpstreamCounters {
        UpstreamCounters {
            host: host.to_string(),
            responses: self.responses.clone(),
            bytes: self.bytes.with_label_values(&[host]),
            ratelimit_remaining: self.ratelimit_remaining.with_label_values(&[host]),
            ratelimit_limit: self.ratelimit_limit.with_label_values(&[host]),
            throttled: self.throttled.with_label_values(&[host]),
            active_requests: self.active_requests.with_label_values(&[host]),
            token_fetches: self.token_fetches.with_label_values(&[host]),
            down: self.down.with_label_values(&[host]),
            credentials_resolved: self.credential_resolutions.with_label_values(&[host, "ok"]),
            credentials_failed: self.credential_resolutions.with_label_values(&[host, "error"]),
            redirects_refused: self.redirects_refused.with_label_values(&[host]),
            fallback_served: self.fallbacks.with_label_values(&[host, "served"]),
            fallback_failed: self.fallbacks.with_label_values(&[host, "failed"]),
        }
    }

    /// Bytes fetched from the upstream named `host` (a fill's origin names itself).
    pub fn bytes(&self, host: &str) -> IntCounter {
        self.bytes.with_label_values(&[host])
    }
}
