//! The eviction policy: a hard byte budget with two watermarks. Usage is the published content
//! plus the reservations of downloads in progress. When an insert or reservation would pass the
//! high watermark, least-recently-used entries are evicted until usage (with the newcomer) is
//! under the low watermark; the newcomer is admitted only if it then fits under the budget
//! itself. With `[cache] unused_ttl`, entries unused for longer go too, whatever the budget
//! (`expire`). Entries with readers and pinned entries are never evicted.
//!
//! Blobs, manifests and small records (tag records, kept documents) compete in the same order.
//! These are functions over the ledger, called by the index with its lock held. Victims' files
//! go to the `Trash` (renamed into `tmp/` now, deleted once the lock is released). The eviction
//! counters, whose names promise blobs and manifests, leave records out; a `GcReport` has all.

use super::key::{Key, Kind};
use super::layout::Layout;
use super::ledger::Ledger;
use super::trash::Trash;

/// With the lock held: evicts if `incoming` more bytes would pass the high watermark, and says
/// whether they then fit under the budget.
pub(super) fn make_room(ledger: &mut Ledger, layout: &Layout, incoming: u64, trash: &mut Trash) -> bool {
    let budget = ledger.budget;
    let Some(max) = budget.max else {
        return true;
    };
    if incoming > max {
        return false;
    }
    if ledger.usage() + incoming > budget.high_mark() {
        let target = budget.low_mark().saturating_sub(incoming);
        evict(ledger, layout, target, trash);
    }
    ledger.usage() + incoming <= max
}

/// With the lock held: evicts least-recently-used entries that nobody reads and nobody pinned
/// until usage is at most `target`. Returns (entries, bytes) evicted.
pub(super) fn evict(ledger: &mut Ledger, layout: &Layout, target: u64, trash: &mut Trash) -> (u64, u64) {
    let need = ledger.usage().saturating_sub(target);
    if need == 0 {
        return (0, 0);
    }
    let victims = ledger.victims(need);
    remove(
        ledger,
        layout,
        victims,
        trash,
        "evicted least recently used content",
    )
}

/// With the lock held: evicts every entry nobody reads and nobody pinned that was last used
/// before `before` (wall-clock milliseconds). Returns (entries, bytes) evicted.
pub(super) fn expire(ledger: &mut Ledger, layout: &Layout, before: u64, trash: &mut Trash) -> (u64, u64) {
    let victims = ledger.unused_before(before);
    remove(
        ledger,
        layout,
        victims,
        trash,
        "evicted content unused for longer than unused_ttl",
    )
}

/// Moves `victims`' files to the trash and drops them from the ledger; counts the blobs and
/// manifests among them as evictions and logs `why` when any went. Returns (entries, bytes)
/// removed.
fn remove(
    ledger: &mut Ledger,
    layout: &Layout,
    victims: Vec<Key>,
    trash: &mut Trash,
    why: &str,
) -> (u64, u64) {
    let (mut count, mut bytes) = (0, 0);
    let (mut content, mut content_bytes) = (0, 0);
    for key in victims {
        let record = ledger.entries.get(&key).and_then(|e| e.record.clone());
        if !trash.take(&layout.files(&key, record.as_ref())) {
            continue;
        }
        if let Some(e) = ledger.remove(&key) {
            count += 1;
            bytes += e.disk;
            if key.kind != Kind::Record {
                content += 1;
                content_bytes += e.disk;
            }
            tracing::debug!(digest = %key.digest, bytes = e.disk, "evicted");
        }
    }
    ledger.metrics().cache.evictions.inc_by(content);
    ledger.metrics().cache.evicted_bytes.inc_by(content_bytes);
    if count > 0 {
        tracing::info!(entries = count, bytes, usage = ledger.used, "{why}");
    }
    ledger.report();
    (count, bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::cache::budget::Budget;
    use crate::cache::key::{Key, BLOCK};
    use crate::metrics::Metrics;
    use crate::oci::Digest;

    #[test]
    fn evicts_the_oldest_entries_towards_the_low_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let budget = Budget {
            max: Some(10 * BLOCK),
            high: 0.9,
            low: 0.5,
        };
        let mut ledger = Ledger::new(budget, HashSet::new(), Arc::new(Metrics::new()));
        let keys: Vec<Key> = (0..3u8).map(|i| Key::blob(&Digest::sha256_of(&[i]))).collect();
        for (i, k) in keys.iter().enumerate() {
            std::fs::write(layout.blob(&k.digest), [0u8; 10]).unwrap();
            ledger.insert(k.clone(), None, 10, 3 * BLOCK, Some(i as u64));
        }
        // The oldest entry's file is already gone: the entry goes all the same.
        std::fs::remove_file(layout.blob(&keys[0].digest)).unwrap();
        let mut trash = Trash::new(layout.tmp());
        // 9 blocks used; 2 more pass the high mark (9): evict down to 5 - 2 = 3 blocks.
        assert!(make_room(&mut ledger, &layout, 2 * BLOCK, &mut trash));
        assert_eq!(ledger.used, 3 * BLOCK);
        assert!(ledger.entries.contains_key(&keys[2]));
        assert!(!layout.blob(&keys[1].digest).exists());
        trash.discard();
        assert_eq!(std::fs::read_dir(layout.tmp()).unwrap().count(), 0);
        let mut trash = Trash::new(layout.tmp());
        assert!(
            !make_room(&mut ledger, &layout, 11 * BLOCK, &mut trash),
            "larger than the budget"
        );
        assert_eq!(ledger.used, 3 * BLOCK, "and nothing was evicted for it");
    }
}
