//! A short memory of what the upstream said does not exist (manifest 404s), so a crash-looping
//! pod asking for a missing tag costs one upstream request per `negative_ttl`, not one per try.
//! Bounded: it never holds more than `MAX_ENTRIES` keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::oci::RepoName;

const MAX_ENTRIES: usize = 10_000;

/// (upstream host, repository, reference)
pub type MissingKey = (String, RepoName, String);

pub struct NegativeCache {
    ttl: Duration,
    seen: Mutex<HashMap<MissingKey, Instant>>,
}

impl NegativeCache {
    pub fn new(ttl: Duration) -> NegativeCache {
        NegativeCache {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_missing(&self, key: &MissingKey) -> bool {
        !self.ttl.is_zero()
            && self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .is_some_and(|t| t.elapsed() < self.ttl)
    }

    pub fn remember(&self, key: MissingKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            seen.retain(|_, t| t.elapsed() < ttl);
            if seen.len() >= MAX_ENTRIES {
                seen.clear();
            }
        }
        seen.insert(key, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn forgets_after_ttl() {
        let n = NegativeCache::new(Duration::from_secs(30));
        let key = (
            "docker.io".to_string(),
            "library/x".parse().unwrap(),
            "latest".to_string(),
        );
        assert!(!n.is_missing(&key));
        n.remember(key.clone());
        assert!(n.is_missing(&key));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!n.is_missing(&key));
        let off = NegativeCache::new(Duration::ZERO);
        off.remember(key.clone());
        assert!(!off.is_missing(&key));
    }
}
