//! Fallbacks of an upstream (`[[upstreams]] fallback`): other registries serving the same
//! content, such as `mirror.gcr.io` for Docker Hub, asked in order when the upstream itself
//! fails: unreachable, timing out, answering 5xx or 429, marked down by the breaker, holding off
//! after a 429, or its token service failing. So a pull of content regcache has not cached yet
//! still works while Docker Hub is down or rate-limits this mirror.
//!
//! What a fallback may answer is the caller's choice (`Fallback`): anything by digest (verified
//! as everything is), blobs, tag lists, referrers, and a tag regcache has no manifest for; never
//! the revalidation of a tag regcache holds, whose cached copy is served instead (a fallback
//! may lag behind the upstream and would move the tag back). A "not found" or "denied" from the
//! upstream is its answer and no fallback is asked; a fallback's own failure, "not found"
//! included, leaves the upstream's error as the answer, so an outage is never remembered as a
//! missing manifest. Each fallback is an upstream of its own (client, token cache, credentials,
//! breaker, rate limit), labelled `<host> fallback <authority>` in its metrics.

use http::header::HeaderMap;
use http::{Method, Response, StatusCode};

use super::permits::UpstreamBody;
use super::Reloaded;
use super::{ClientBuildError, Upstream, UpstreamError};
use crate::config::{FetchConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::oci::RepoName;

/// Whether a failed request may be answered by the upstream's fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    Allowed,
    /// The revalidation of a cached tag: a failure serves the cached copy instead.
    Never,
}

impl UpstreamError {
    /// The upstream failed as a service (as opposed to answering "no such thing" or "denied").
    fn wants_fallback(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Down { .. }
            | UpstreamError::RateLimited { .. }
            | UpstreamError::Token { .. } => true,
            UpstreamError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            UpstreamError::Denied { .. }
            | UpstreamError::Credentials { .. }
            | UpstreamError::Protocol { .. }
            | UpstreamError::Offline { .. } => false,
        }
    }
}

/// The fallbacks of `config`, each an upstream of its own with its URL, credentials and CA
/// file, and the upstream's limits and redirect rules.
pub(super) fn build(
    config: &UpstreamConfig,
    fetch: &FetchConfig,
    metrics: &std::sync::Arc<Metrics>,
) -> Result<Vec<Upstream>, ClientBuildError> {
    config
        .fallback
        .iter()
        .map(|f| {
            let own = UpstreamConfig {
                max_connections: config.max_connections,
                offline: false,
                redirect_hosts: config.redirect_hosts.clone(),
                private: config.private,
                fallback: Vec::new(),
                ..f.clone()
            };
            let name = format!("{} fallback {}", config.host, f.authority);
            Upstream::named(name, own, fetch, metrics.clone())
        })
        .collect()
}

impl Upstream {
    /// Applies reloaded credentials to the fallbacks, in order; `NeedsRestart` when the list
    /// changed or one needs it.
    pub(super) fn reload_fallbacks(&self, config: &UpstreamConfig) -> Reloaded {
        if config.fallback.len() != self.fallbacks.len() {
            return Reloaded::NeedsRestart;
        }
        let mut outcome = Reloaded::Unchanged;
        for (f, new) in self.fallbacks.iter().zip(&config.fallback) {
            match f.auth.reload_credentials(new) {
                Reloaded::Unchanged => {}
                Reloaded::NeedsRestart => return Reloaded::NeedsRestart,
                other => outcome = other,
            }
        }
        outcome
    }
}

impl Upstream {
    /// `outcome` of a request to this upstream, or, when it failed as a service and `fallback`
    /// allows, the first answer of a fallback.
    pub(super) async fn or_fallback(
        &self,
        outcome: Result<Response<UpstreamBody>, UpstreamError>,
        fallback: Fallback,
        request: (&Method, &RepoName, &str, &HeaderMap),
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let error = match outcome {
            Err(e) if fallback == Fallback::Allowed && !self.fallbacks.is_empty() && e.wants_fallback() => e,
            other => return other,
        };
        let (method, repo, tail, headers) = request;
        for f in &self.fallbacks {
            match f.request_here(method.clone(), repo, tail, headers, None).await {
                Ok(resp) => {
                    self.counters.fallback_served.inc();
                    tracing::info!(upstream = %self.host(), fallback = %f.config.authority, %repo, tail, error = %error, "answered by a fallback");
                    return Ok(resp);
                }
                Err(e) => {
                    tracing::debug!(upstream = %self.host(), fallback = %f.config.authority, %repo, tail, error = %e, "fallback failed too")
                }
            }
        }
        self.counters.fallback_failed.inc();
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_service_fall_back() {
        let up = || "docker.io".to_string();
        let status = |s: u16| UpstreamError::Status {
            upstream: up(),
            status: StatusCode::from_u16(s).unwrap(),
            retry_after: None,
        };
        for e in [
            UpstreamError::Connect {
                upstream: up(),
                reason: "refused".into(),
            },
            UpstreamError::Timeout { upstream: up() },
            UpstreamError::Down { upstream: up() },
            UpstreamError::RateLimited {
                upstream: up(),
                retry_after: std::time::Duration::from_secs(60),
            },
            UpstreamError::Token {
                upstream: up(),
                reason: "503".into(),
            },
            status(500),
            status(503),
            status(429),
        ] {
            assert!(e.wants_fallback(), "{e}");
        }
        for e in [
            status(404),
            status(400),
            UpstreamError::Denied {
                upstream: up(),
                status: StatusCode::FORBIDDEN,
            },
            UpstreamError::Offline { upstream: up() },
        ] {
            assert!(!e.wants_fallback(), "{e}");
        }
    }
}
