//! How a request to an upstream failed, said once for every caller: unreachable, silent,
//! answering a status, rate-limiting, denying, its token service or credentials failing, a
//! protocol problem, or not asked at all (offline, marked down, a 429's wait in force).

use std::time::Duration;

use http::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} could not be reached: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("upstream {upstream} answered {status}")]
    Status {
        upstream: String,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("upstream {upstream} is rate-limiting this mirror; not asking it again for {}s", retry_after.as_secs().max(1))]
    RateLimited { upstream: String, retry_after: Duration },
    #[error("upstream {upstream} denied access ({status})")]
    Denied { upstream: String, status: StatusCode },
    #[error("token service of upstream {upstream}: {reason}")]
    Token { upstream: String, reason: String },
    #[error("credentials for upstream {upstream}: {reason}")]
    Credentials { upstream: String, reason: String },
    #[error("upstream {upstream}: {reason}")]
    Protocol { upstream: String, reason: String },
    #[error("regcache is offline for {upstream}: only cached content is served")]
    Offline { upstream: String },
    #[error("upstream {upstream} is marked down after repeated failures; retrying in the background")]
    Down { upstream: String },
}

impl UpstreamError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// Failures that say the upstream is unhealthy (as opposed to answering "no").
    pub(super) fn is_outage(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::Timeout { .. }
        )
    }

    /// A 5xx: the upstream's trouble, or only this repository's (`health.rs` tells which).
    pub(super) fn is_server_error(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. } if status.is_server_error())
    }

    /// We did not ask: offline mode, a downed upstream, or a rate limit still in force.
    pub fn is_not_attempted(&self) -> bool {
        matches!(
            self,
            UpstreamError::Offline { .. } | UpstreamError::Down { .. } | UpstreamError::RateLimited { .. }
        )
    }
}
