//! Upstream rate limits. `RateLimit-Limit`/`RateLimit-Remaining` (Docker Hub's `100;w=21600`
//! form) are read for the metrics; a 429 with `Retry-After` (seconds or an HTTP date) marks the
//! upstream as limited until then, and regcache sends it nothing before that time: callers fail
//! fast and serve from cache what they can. Time is tokio's, so tests can pause it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

/// Assumed when a 429 says nothing about when to come back.
pub(super) const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);
/// Longest honoured backoff (Docker Hub's window is 6 h); protects against absurd values.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

#[derive(Default)]
pub(super) struct RateLimit {
    until: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// How long the upstream is still off limits, if it is.
    pub(super) fn remaining(&self) -> Option<Duration> {
        let until = *self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.and_then(|t| t.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()))
    }

    /// Records a 429; returns how long requests are held back.
    pub(super) fn limited(&self, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.unwrap_or(DEFAULT_BACKOFF).min(MAX_BACKOFF);
        let until = Instant::now() + wait;
        let mut cur = self.until.lock().unwrap_or_else(|e| e.into_inner());
        *cur = Some(cur.map_or(until, |c| c.max(until)));
        wait
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
pub(super) fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The leading number of a `RateLimit-*` header (`100;w=21600` → 100).
pub(super) fn header_number(headers: &HeaderMap, name: &str) -> Option<i64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .split([';', ','])
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("120")),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
        let d = parse_retry_after(&HeaderValue::from_str(&later).unwrap()).unwrap();
        assert!(
            d > Duration::from_secs(590) && d <= Duration::from_secs(600),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn ratelimit_headers() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", HeaderValue::from_static("100;w=21600"));
        h.insert("ratelimit-remaining", HeaderValue::from_static(" 7 "));
        assert_eq!(header_number(&h, "ratelimit-limit"), Some(100));
        assert_eq!(header_number(&h, "ratelimit-remaining"), Some(7));
        assert_eq!(header_number(&h, "docker-ratelimit-source"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn limited_until_retry_after() {
        let r = RateLimit::default();
        assert_eq!(r.remaining(), None);
        assert_eq!(r.limited(Some(Duration::from_secs(30))), Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(r.remaining(), Some(Duration::from_secs(20)));
        // A shorter later answer does not shorten the wait.
        r.limited(Some(Duration::from_secs(5)));
        assert_eq!(r.remaining(), Some(Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(r.remaining(), None);
        assert_eq!(r.limited(None), DEFAULT_BACKOFF);
        assert_eq!(r.limited(Some(Duration::from_secs(1 << 30))), MAX_BACKOFF);
    }
}
