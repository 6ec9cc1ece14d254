//! `[fetch]`: how regcache talks to upstreams (timeouts, manifest size limit, abandoned
//! downloads, the circuit breaker, the egress proxy).

use std::time::Duration;

use super::file::FileFetch;
use super::{duration, FetchConfig};

pub(super) fn validate(errors: &mut Vec<String>, raw: FileFetch) -> FetchConfig {
    FetchConfig {
        connect_timeout: duration(
            errors,
            "fetch.connect_timeout",
            raw.connect_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        read_timeout: duration(
            errors,
            "fetch.read_timeout",
            raw.read_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        header_timeout: duration(
            errors,
            "fetch.header_timeout",
            raw.header_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        max_manifest_size: match raw.max_manifest_size {
            Some(0) => {
                errors.push("fetch.max_manifest_size: 0 refuses every manifest".into());
                0
            }
            n => n.unwrap_or(4 * 1024 * 1024),
        },
        finish_abandoned: raw.finish_abandoned.unwrap_or(true),
        breaker_threshold: raw.breaker_threshold.unwrap_or(5).max(1),
        breaker_probe_interval: duration(
            errors,
            "fetch.breaker_probe_interval",
            raw.breaker_probe_interval.as_deref(),
            Duration::from_secs(5),
        ),
        egress: super::egress::validate(errors, raw.proxy.as_deref(), &raw.no_proxy, |name| {
            std::env::var(name).ok()
        }),
    }
}
