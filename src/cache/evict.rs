//! The eviction policy: a hard byte budget with two watermarks. Usage is the published content
//! plus the reservations of downloads in progress. When an insert or reservation would pass the
//! high watermark, least-recently-used entries are evicted until usage (with the newcomer) is
//! under the low watermark; the newcomer is admitted only if it then fits under the budget
//! itself. Entries with readers and pinned entries are never evicted.
//!
//! Victims are renamed into `tmp/` while the index lock is held (a rename is cheap and ordered
//! with publishes of the same digest), then deleted after the lock is released, so a large
//! unlink never stalls other requests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::index::{Index, Inner, Key};
use crate::config::CacheConfig;

static TRASH_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// None: unlimited.
    pub max: Option<u64>,
    pub high: f64,
    pub low: f64,
}

impl Budget {
    pub fn from_config(c: &CacheConfig) -> Budget {
        Budget {
            max: c.max_size,
            high: c.high_watermark,
            low: c.low_watermark,
        }
    }

    pub fn unlimited() -> Budget {
        Budget {
            max: None,
            high: 0.95,
            low: 0.85,
        }
    }

    fn mark(&self, fraction: f64) -> u64 {
        self.max.map_or(u64::MAX, |m| (m as f64 * fraction) as u64)
    }

    pub fn high_mark(&self) -> u64 {
        self.mark(self.high)
    }

    pub fn low_mark(&self) -> u64 {
        self.mark(self.low)
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no room within the cache budget")]
pub struct NoRoom;

/// What a `gc` run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub evicted: u64,
    pub freed_bytes: u64,
    /// Usage (published plus reserved) afterwards.
    pub bytes: u64,
    /// The usage it evicted towards.
    pub target: Option<u64>,
}

impl Index {
    /// With the lock held: evicts if `incoming` more bytes would pass the high watermark, and
    /// says whether they then fit under the budget.
    pub(super) fn make_room(&self, inner: &mut Inner, incoming: u64, trash: &mut Vec<PathBuf>) -> bool {
        let Some(max) = self.budget.max else {
            return true;
        };
        if incoming > max {
            return false;
        }
        if inner.used + inner.reserved + incoming > self.budget.high_mark() {
            let target = self.budget.low_mark().saturating_sub(incoming);
            self.evict_locked(inner, target, trash);
        }
        inner.used + inner.reserved + incoming <= max
    }

    /// With the lock held: evicts least-recently-used entries that nobody reads and nobody
    /// pinned until usage is at most `target`. Returns (entries, bytes) evicted.
    pub(super) fn evict_locked(
        &self,
        inner: &mut Inner,
        target: u64,
        trash: &mut Vec<PathBuf>,
    ) -> (u64, u64) {
        let mut need = (inner.used + inner.reserved).saturating_sub(target);
        if need == 0 {
            return (0, 0);
        }
        let mut victims: Vec<Key> = Vec::new();
        for (_, key) in &inner.order {
            if need == 0 {
                break;
            }
            let Some(e) = inner.entries.get(key) else {
                continue;
            };
            if e.readers > 0 || inner.pinned.contains(key) {
                continue;
            }
            need = need.saturating_sub(e.disk);
            victims.push(key.clone());
        }
        let (mut count, mut bytes) = (0, 0);
        for key in victims {
            if !self.move_to_trash(&key, trash) {
                continue;
            }
            if let Some(e) = inner.remove(&key) {
                count += 1;
                bytes += e.disk;
                tracing::debug!(digest = %key.digest, bytes = e.disk, "evicted");
            }
        }
        if count > 0 {
            self.metrics.cache.evictions.inc_by(count);
            self.metrics.cache.evicted_bytes.inc_by(bytes);
            tracing::info!(
                entries = count,
                bytes,
                usage = inner.used,
                "evicted least recently used content"
            );
        }
        self.report(inner);
        (count, bytes)
    }

    /// Renames an entry's files out of the store; false if they could not be moved.
    fn move_to_trash(&self, key: &Key, trash: &mut Vec<PathBuf>) -> bool {
        let tmp = self.layout.tmp();
        for (i, path) in self.layout.files(key).into_iter().enumerate() {
            let to = tmp.join(format!(
                "evicted.{}.{}",
                std::process::id(),
                TRASH_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::rename(&path, &to) {
                Ok(()) => trash.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if i == 0 => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot evict");
                    return false;
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot evict"),
            }
        }
        true
    }

    /// Evicts now, down to `to` bytes of usage, or to the low watermark when `to` is None (a
    /// no-op for an unlimited cache), then saves the recency snapshot. Blocking.
    pub fn gc(&self, to: Option<u64>) -> GcReport {
        let target = to.or(self.budget.max.map(|_| self.budget.low_mark()));
        let mut trash = Vec::new();
        let (report, dirty) = {
            let mut inner = self.lock();
            let (evicted, freed_bytes) = match target {
                Some(t) => self.evict_locked(&mut inner, t, &mut trash),
                None => (0, 0),
            };
            let report = GcReport {
                evicted,
                freed_bytes,
                bytes: inner.used + inner.reserved,
                target,
            };
            (report, evicted > 0)
        };
        discard(trash);
        if dirty {
            if let Err(e) = self.save_if_dirty() {
                tracing::warn!(error = %e, "cannot save the recency snapshot");
            }
        }
        report
    }
}

/// Deletes evicted files; called without the lock.
pub(super) fn discard(trash: Vec<PathBuf>) {
    for p in trash {
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::warn!(path = %p.display(), error = %e, "cannot delete an evicted file");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::index::{Admission, BLOCK};
    use crate::cache::layout::Layout;
    use crate::metrics::Metrics;
    use crate::oci::Digest;

    /// A directory with `n` cached blobs of 4 blocks each, accessed in order (0 oldest).
    fn cache(n: u8, max_blocks: Option<u64>) -> (tempfile::TempDir, Arc<Index>, Vec<Key>) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let budget = Budget {
            max: max_blocks.map(|b| b * BLOCK),
            high: 0.9,
            low: 0.5,
        };
        let index = Index::open(layout.clone(), budget, Arc::new(Metrics::new())).unwrap();
        let mut keys = Vec::new();
        for i in 0..n {
            let bytes = vec![i; 4 * BLOCK as usize];
            let d = Digest::sha256_of(&bytes);
            let tmp = layout.tmp().join(format!("t{i}"));
            std::fs::write(&tmp, &bytes).unwrap();
            let key = Key::blob(&d);
            let kept = index
                .publish(key.clone(), bytes.len() as u64, 4 * BLOCK, None, false, || {
                    std::fs::rename(&tmp, layout.blob(&d))
                })
                .unwrap();
            assert!(matches!(kept, Admission::Kept(None)));
            keys.push(key);
        }
        (dir, index, keys)
    }

    fn present(index: &Index, keys: &[Key]) -> Vec<bool> {
        keys.iter()
            .map(|k| index.contains(k) && index.layout.blob(&k.digest).is_file())
            .collect()
    }

    #[test]
    fn reservations_evict_least_recently_used_down_to_the_low_watermark() {
        // 20 blocks: high mark 18, low mark 10. Four blobs use 16.
        let (_dir, index, keys) = cache(4, Some(20));
        assert_eq!(index.stats().bytes, 16 * BLOCK);
        index.lease(&keys[0]); // touched (the lease drops at once): now the newest
        let r = index.reserve(4 * BLOCK).unwrap();
        // 16 + 4 > 18: evict until 4 + usage <= 10, i.e. keep one blob: the touched one.
        assert_eq!(present(&index, &keys), [true, false, false, false]);
        assert_eq!(index.stats().reserved_bytes, 4 * BLOCK);
        assert_eq!(index.metrics.cache.evictions.get(), 3);
        drop(r);
        assert_eq!(index.stats().reserved_bytes, 0);
        let tmp_left = std::fs::read_dir(index.layout.tmp()).unwrap().count();
        assert_eq!(tmp_left, 0, "evicted files are deleted");
    }

    #[test]
    fn readers_and_pins_are_never_evicted() {
        let (_dir, index, keys) = cache(4, Some(20));
        let (lease, len) = index.lease(&keys[1]).unwrap();
        assert_eq!(len, 4 * BLOCK);
        index.pin(keys[2].clone(), true).unwrap();
        let report = index.gc(Some(0));
        assert_eq!(report.evicted, 2);
        assert_eq!(present(&index, &keys), [false, true, true, false]);
        assert_eq!(index.stats().in_use, 1);
        assert_eq!(index.stats().pinned, 1);
        drop(lease);
        index.gc(Some(0));
        assert_eq!(present(&index, &keys), [false, false, true, false]);
        // No room for more than the budget minus what is pinned.
        assert!(index.reserve(17 * BLOCK).is_err());
        assert!(index.reserve(16 * BLOCK).is_ok());
    }

    #[test]
    fn a_blob_larger_than_the_budget_evicts_nothing() {
        let (_dir, index, keys) = cache(2, Some(20));
        assert!(index.reserve(21 * BLOCK).is_err());
        assert_eq!(present(&index, &keys), [true, true]);
    }

    #[test]
    fn unlimited_never_evicts_and_gc_needs_a_target() {
        let (_dir, index, keys) = cache(3, None);
        assert!(index.reserve(1 << 40).is_ok());
        assert_eq!(index.gc(None).evicted, 0);
        assert_eq!(index.gc(Some(8 * BLOCK)).evicted, 1);
        assert_eq!(present(&index, &keys), [false, true, true]);
    }

    #[test]
    fn recency_survives_a_reopen() {
        let (dir, index, keys) = cache(3, Some(20));
        index.lease(&keys[0]);
        index.save_if_dirty().unwrap();
        drop(index);
        let layout = Layout::new(dir.path());
        let budget = Budget {
            max: Some(20 * BLOCK),
            high: 0.9,
            low: 0.5,
        };
        let index = Index::open(layout, budget, Arc::new(Metrics::new())).unwrap();
        assert_eq!(index.stats().blobs, 3);
        index.gc(Some(8 * BLOCK));
        assert_eq!(present(&index, &keys), [true, false, true]);
    }
}
