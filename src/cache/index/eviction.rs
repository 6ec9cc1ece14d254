//! Evicting on demand: `gc` (down to a target or the low watermark) and `expire_unused`
//! (`[cache] unused_ttl`: whatever nobody has used for that long, whatever the budget). Both
//! take their victims under the index's lock as the budget's own evictions do (`evict.rs`),
//! so pinned entries and entries a response is reading stay.

use super::super::budget::GcReport;
use super::super::evict;
use super::super::layout::Layout;
use super::super::ledger::Ledger;
use super::super::trash::Trash;
use super::Index;

impl Index {
    /// Evicts now, down to `to` bytes of usage, or to the low watermark when `to` is None (a
    /// no-op for an unlimited cache), then saves the recency snapshot. Blocking.
    pub fn gc(&self, to: Option<u64>) -> GcReport {
        let target = to.or(self.budget.max.map(|_| self.budget.low_mark()));
        self.evict_with(target, |ledger, layout, trash| match target {
            Some(t) => evict::evict(ledger, layout, t, trash),
            None => (0, 0),
        })
    }

    /// Runs an eviction (`evict`, with the lock held) and reports it against `target`; saves
    /// the recency snapshot when anything went. Blocking.
    fn evict_with(
        &self,
        target: Option<u64>,
        evict: impl FnOnce(&mut Ledger, &Layout, &mut Trash) -> (u64, u64),
    ) -> GcReport {
        let mut trash = self.trash();
        let report = {
            let mut ledger = self.ledger.lock();
            let (evicted, freed_bytes) = evict(&mut ledger, &self.layout, &mut trash);
            GcReport {
                evicted,
                freed_bytes,
                bytes: ledger.usage(),
                target,
                released: None,
            }
        };
        trash.discard();
        if report.evicted > 0 {
            if let Err(e) = self.save_if_dirty() {
                tracing::warn!(error = %e, "cannot save the recency snapshot");
            }
        }
        report
    }

    /// Evicts what nobody has used since `before` (wall-clock milliseconds since the Unix
    /// epoch), then saves the recency snapshot. Blocking.
    pub fn expire_unused(&self, before: u64) -> GcReport {
        self.evict_with(None, |ledger, layout, trash| {
            evict::expire(ledger, layout, before, trash)
        })
    }
}
