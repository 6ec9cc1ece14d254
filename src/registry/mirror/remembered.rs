//! Short memories of the pull-through policy, bounded and self-pruning (`moka`): which tags were
//! confirmed with the upstream and when (the tag TTL), and what the upstream said does not exist
//! (manifest 404s, so a crash-looping pod asking for a missing tag costs one upstream request per
//! `negative_ttl`, not one per try). The moment of each entry is kept on the tokio clock, which
//! decides freshness (so TTL tests run with paused time); moka only bounds the memory, dropping
//! the least useful entries beyond `MAX_ENTRIES` and entries well past their TTL.

use std::time::Duration;

use moka::sync::Cache;
use tokio::time::Instant;

use crate::oci::RepoName;

const MAX_ENTRIES: u64 = 100_000;

/// (upstream host, repository, reference)
pub(super) type RefKey = (String, RepoName, String);

/// When each key was last seen, for at most `ttl`.
#[derive(Clone)]
pub(super) struct Remembered {
    ttl: Duration,
    seen: Cache<RefKey, Instant>,
}

impl Remembered {
    pub(super) fn new(ttl: Duration, max_entries: u64) -> Remembered {
        // Real-time expiry only prunes: twice the TTL, so it never decides before the tokio
        // clock does in a running daemon.
        let keep = ttl.saturating_mul(2).max(Duration::from_secs(1));
        Remembered {
            ttl,
            seen: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(keep)
                .build(),
        }
    }

    /// Whether `key` was remembered less than the TTL ago.
    pub(super) fn holds(&self, key: &RefKey) -> bool {
        !self.ttl.is_zero() && self.seen.get(key).is_some_and(|t| t.elapsed() < self.ttl)
    }

    pub(super) fn remember(&self, key: RefKey) {
        if !self.ttl.is_zero() {
            self.seen.insert(key, Instant::now());
        }
    }

    /// Forgets every key `matches` accepts, at once.
    pub(super) fn forget_where(&self, matches: impl Fn(&RefKey) -> bool) {
        for (key, _) in self.seen.iter() {
            if matches(&key) {
                self.seen.invalidate(key.as_ref());
            }
        }
    }
}

/// Tags confirmed with the upstream (trusted for `tag_ttl`).
pub(super) fn freshness(tag_ttl: Duration) -> Remembered {
    Remembered::new(tag_ttl, MAX_ENTRIES)
}

/// Tags whose revalidation met an upstream that did not answer (timeout, connection error):
/// served from the cache without asking again for a while, so an unresponsive upstream costs
/// one wait, not one per pull. An upstream that answers (even with an error) is asked each time,
/// so a tag deleted upstream is noticed at once.
pub(super) fn unanswered_revalidations() -> Remembered {
    Remembered::new(UNANSWERED_BACKOFF, 10_000)
}

/// How long a tag whose revalidation got no answer is served without asking again.
pub(super) const UNANSWERED_BACKOFF: Duration = Duration::from_secs(30);

/// Upstream "manifest unknown" answers (remembered for `negative_ttl`).
pub(super) fn missing(negative_ttl: Duration) -> Remembered {
    Remembered::new(negative_ttl, 10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn forgets_after_ttl() {
        let n = missing(Duration::from_secs(30));
        let key = (
            "docker.io".to_string(),
            "library/x".parse().unwrap(),
            "latest".to_string(),
        );
        assert!(!n.holds(&key));
        n.remember(key.clone());
        assert!(n.holds(&key));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!n.holds(&key));
        let off = missing(Duration::ZERO);
        off.remember(key.clone());
        assert!(!off.holds(&key));
    }

    #[test]
    fn memory_is_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = Remembered::new(Duration::from_secs(60), 100);
            for i in 0..1_000 {
                r.remember(("h".into(), "a/b".parse().unwrap(), format!("t{i}")));
            }
            r.seen.run_pending_tasks();
            assert!(r.seen.entry_count() <= 100, "{}", r.seen.entry_count());
        });
    }
}
