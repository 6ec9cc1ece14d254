//! The cache's background tasks. `persist`: the recency snapshot (and, with a shared store,
//! what was used since the last time: `shared_gc.rs`) saved every `SNAPSHOT_EVERY` while
//! anything changed, and once more when the daemon stops.
//!
//! `sweep`, for `[cache] unused_ttl`: content nobody has pulled for that long is removed from
//! the directory, whatever the budget, so a cache does not keep last year's images until the
//! disk fills. A
//! sweep runs every quarter of the TTL (at least every second, at most every hour) and evicts,
//! as the budget would, what was last used before now minus the TTL; pinned content (hosted
//! repositories, `prefetch --pin`, imports) and content a response is reading stay. Last use is
//! the recency the budget keeps, which survives restarts; with a shared store only the local
//! copies go (the bucket has its own gc).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::index::Index;
use super::ledger::now_ms;
use super::shared::Level;

/// How often the recency snapshot is rewritten when something was accessed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(60);

/// Saves `index`'s recency snapshot (and flushes `shared`'s use records) every
/// `SNAPSHOT_EVERY` while anything changed, and once more when `stop` turns true.
pub(super) fn persist(
    index: Arc<Index>,
    shared: Option<Arc<Level>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SNAPSHOT_EVERY);
        every.tick().await;
        loop {
            let last = tokio::select! {
                _ = every.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            let i = index.clone();
            match tokio::task::spawn_blocking(move || i.save_if_dirty()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the recency snapshot"),
                Err(e) => tracing::warn!(error = %e, "recency snapshot task failed"),
            }
            if let Some(level) = &shared {
                // At shutdown a store in trouble gets a moment, not its whole timeout: a
                // replica that stops reads nothing more, so its last uses matter little.
                let limit = if last {
                    Duration::from_secs(3)
                } else {
                    SNAPSHOT_EVERY
                };
                let _ = tokio::time::timeout(limit, level.flush_uses()).await;
            }
            if last {
                return;
            }
        }
    })
}

/// Sweeps `index` of content unused for `ttl` until `stop` turns true.
pub(super) fn sweep(index: Arc<Index>, ttl: Duration, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let before = now_ms().saturating_sub(ttl.as_millis() as u64);
            let i = index.clone();
            match tokio::task::spawn_blocking(move || i.expire_unused(before)).await {
                Ok(r) if r.evicted > 0 => {
                    tracing::debug!(entries = r.evicted, bytes = r.freed_bytes, "unused content swept")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "unused-content sweep failed"),
            }
        }
    })
}
