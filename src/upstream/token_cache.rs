//! Bearer tokens, cached per (host, realm, service, scope, credential generation) until their
//! lifetime minus a safety margin runs out. When many requests need the same missing token at
//! once, exactly one fetches it and the others wait for that fetch and share its outcome, a
//! failure included. The wait is a drop-safe async mutex per key: a fetch whose caller goes
//! away releases it, and the next waiter fetches instead. Time is tokio's, so tests can pause it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::token::Token;
use super::UpstreamError;
use crate::secret::Secret;

/// Past this many keys, entries without a live token are dropped when a new key arrives.
const PRUNE_ABOVE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TokenKey {
    /// The authority that challenged (`registry-1.docker.io`, a redirect target).
    pub host: String,
    pub realm: String,
    pub service: Option<String>,
    pub scope: String,
    /// 0 for anonymous tokens.
    pub generation: u64,
}

#[derive(Default)]
struct SlotState {
    token: Option<(Secret, Instant)>,
    /// Fetches that ran to the end (a cancelled one does not count).
    finished: u64,
    /// How the last finished fetch failed, for the callers that waited on it.
    failed: Option<UpstreamError>,
}

#[derive(Default)]
struct Slot {
    fetching: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> Option<Secret> {
        let s = self.state();
        s.token
            .as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }
}

#[derive(Default)]
pub(super) struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<Slot>>>,
}

/// Renew a little early so a token never expires between our check and the upstream's.
pub(super) fn usable_for(lifetime: Duration) -> Duration {
    let skew = (lifetime / 10).min(Duration::from_secs(30));
    lifetime - skew
}

impl TokenCache {
    fn slot(&self, key: &TokenKey) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        if slots.len() >= PRUNE_ABOVE {
            slots.retain(|_, s| Arc::strong_count(s) > 1 || s.live().is_some());
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// The live token for `key`, or the outcome of one `fetch` shared with concurrent callers.
    pub(super) async fn get_or_fetch<F, Fut>(&self, key: &TokenKey, fetch: F) -> Result<Secret, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, UpstreamError>>,
    {
        let slot = self.slot(key);
        if let Some(t) = slot.live() {
            return Ok(t);
        }
        let seen = slot.state().finished;
        let _fetching = slot.fetching.lock().await;
        {
            let s = slot.state();
            if let Some((t, _)) = s.token.as_ref().filter(|(_, until)| Instant::now() < *until) {
                return Ok(t.clone());
            }
            // A fetch finished while this caller waited: share its failure rather than retry.
            if s.finished != seen {
                if let Some(e) = &s.failed {
                    return Err(e.clone());
                }
            }
        }
        let outcome = fetch().await;
        let mut s = slot.state();
        s.finished += 1;
        match outcome {
            Ok(token) => {
                s.token = Some((token.value.clone(), Instant::now() + usable_for(token.lifetime)));
                s.failed = None;
                Ok(token.value)
            }
            Err(e) => {
                s.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Forgets `token` for `key` (the upstream refused it), unless a newer one replaced it.
    pub(super) fn invalidate(&self, key: &TokenKey, token: &Secret) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(key) {
            let mut s = slot.state();
            if s.token.as_ref().is_some_and(|(t, _)| t == token) {
                s.token = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(scope: &str) -> TokenKey {
        TokenKey {
            host: "reg".into(),
            realm: "https://auth/token".into(),
            service: Some("svc".into()),
            scope: scope.into(),
            generation: 0,
        }
    }

    async fn fetch(n: &AtomicUsize, lifetime: Option<u64>) -> Result<Token, UpstreamError> {
        let i = n.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Token {
            value: Secret::new(format!("t{i}")),
            lifetime: lifetime
                .map(Duration::from_secs)
                .unwrap_or(super::super::token::DEFAULT_TOKEN_LIFETIME),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_live_until_expires_in_minus_skew() {
        let cache = TokenCache::default();
        let n = AtomicUsize::new(0);
        let k = key("repository:a:pull");
        assert_eq!(
            cache
                .get_or_fetch(&k, || fetch(&n, Some(300)))
                .await
                .unwrap()
                .expose(),
            "t0"
        );
        tokio::time::advance(Duration::from_secs(269)).await;
        assert_eq!(
            cache
                .get_or_fetch(&k, || fetch(&n, Some(300)))
                .await
                .unwrap()
                .expose(),
            "t0"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.get_or_fetch(&k, || fetch(&n, None)).await.unwrap().expose(),
            "t1"
        );
        // 60 s when the service does not say, renewed 6 s early.
        tokio::time::advance(Duration::from_secs(53)).await;
        assert_eq!(
            cache.get_or_fetch(&k, || fetch(&n, None)).await.unwrap().expose(),
            "t1"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.get_or_fetch(&k, || fetch(&n, None)).await.unwrap().expose(),
            "t2"
        );
        // A refused token is dropped; a stale invalidation does not drop its successor.
        cache.invalidate(&k, &Secret::new("t1"));
        assert_eq!(
            cache.get_or_fetch(&k, || fetch(&n, None)).await.unwrap().expose(),
            "t2"
        );
        cache.invalidate(&k, &Secret::new("t2"));
        assert_eq!(
            cache.get_or_fetch(&k, || fetch(&n, None)).await.unwrap().expose(),
            "t3"
        );
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_its_failure() {
        let cache = Arc::new(TokenCache::default());
        let n = Arc::new(AtomicUsize::new(0));
        let k = key("repository:b:pull");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, n, k) = (cache.clone(), n.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                cache.get_or_fetch(&k, || fetch(&n, Some(300))).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().expose(), "t0");
        }
        assert_eq!(n.load(Ordering::SeqCst), 1);

        let failures = Arc::new(AtomicUsize::new(0));
        let k = key("repository:c:pull");
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (cache, failures, k) = (cache.clone(), failures.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&k, || async move {
                        failures.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(UpstreamError::Token {
                            upstream: "u".into(),
                            reason: "down".into(),
                        })
                    })
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        assert_eq!(failures.load(Ordering::SeqCst), 1, "waiters share the failure");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_fetch_lets_the_next_caller_fetch() {
        let cache = Arc::new(TokenCache::default());
        let n = Arc::new(AtomicUsize::new(0));
        let k = key("repository:d:pull");
        let first = {
            let (cache, n, k) = (cache.clone(), n.clone(), k.clone());
            tokio::spawn(async move { cache.get_or_fetch(&k, || fetch(&n, None)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = {
            let (cache, n, k) = (cache.clone(), n.clone(), k.clone());
            tokio::spawn(async move { cache.get_or_fetch(&k, || fetch(&n, None)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        assert_eq!(second.await.unwrap().unwrap().expose(), "t1");
    }
}
