//! The index's bookkeeping, in memory and behind one mutex: every cached entry with its size, last
//! access, reader count and generation; the entries in least-recently-used order; the pinned set;
//! and the byte accounting (published content plus the reservations of downloads in progress),
//! mirrored into the cache gauges after every change. Blobs, manifests and records share one
//! budget and one LRU order; the gauges, whose names promise blobs and manifests, leave records
//! out (`Stats` has them). It knows nothing of files: the index
//! (`index.rs`) does the renames and calls in here with the lock held, and leases (`lease.rs`)
//! hold a `Shared` handle to give back what they hold.
//!
//! Access times are wall-clock milliseconds, strictly increasing within a process, because they
//! must keep their order across restarts (`snapshot.rs`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::budget::{Budget, Stats};
use super::key::{Key, Kind, RecordPath};
use crate::metrics::Metrics;

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(super) struct Entry {
    /// Content bytes (a manifest's bytes, without its media-type file).
    pub len: u64,
    /// Bytes counted against the budget.
    pub disk: u64,
    pub last: u64,
    pub readers: u32,
    /// Tells a lease on a removed-and-re-added entry from one on the current entry.
    pub generation: u64,
    /// Where a record's file is (records only).
    pub record: Option<RecordPath>,
}

pub(super) struct Ledger {
    pub entries: HashMap<Key, Entry>,
    /// Entries by last access, oldest first.
    pub order: BTreeSet<(u64, Key)>,
    pub pinned: HashSet<Key>,
    pub used: u64,
    pub reserved: u64,
    pub blobs: u64,
    pub records: u64,
    /// Bytes of `used` that records take.
    pub record_bytes: u64,
    pub budget: Budget,
    pub dirty: bool,
    clock: u64,
    generation: u64,
    metrics: Arc<Metrics>,
}

impl Ledger {
    pub(super) fn new(budget: Budget, pinned: HashSet<Key>, metrics: Arc<Metrics>) -> Ledger {
        Ledger {
            entries: HashMap::new(),
            order: BTreeSet::new(),
            pinned,
            used: 0,
            reserved: 0,
            blobs: 0,
            records: 0,
            record_bytes: 0,
            budget,
            dirty: false,
            clock: 0,
            generation: 0,
            metrics,
        }
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Published plus reserved bytes.
    pub(super) fn usage(&self) -> u64 {
        self.used + self.reserved
    }

    fn tick(&mut self) -> u64 {
        self.clock = now_ms().max(self.clock + 1);
        self.clock
    }

    /// Moves the clock to at least now, so entries inserted with recorded times never run ahead
    /// of the ones accessed from here on.
    pub(super) fn catch_up(&mut self) {
        self.clock = self.clock.max(now_ms());
    }

    /// Adds or replaces an entry (a record with its path); `last` None means now. Returns the
    /// entry's generation.
    pub(super) fn insert(
        &mut self,
        key: Key,
        record: Option<RecordPath>,
        len: u64,
        disk: u64,
        last: Option<u64>,
    ) -> u64 {
        self.remove(&key);
        let last = match last {
            Some(t) => {
                self.clock = self.clock.max(t);
                t
            }
            None => self.tick(),
        };
        self.generation += 1;
        self.count(&key, disk, true);
        self.order.insert((last, key.clone()));
        self.entries.insert(
            key,
            Entry {
                len,
                disk,
                last,
                readers: 0,
                generation: self.generation,
                record,
            },
        );
        self.dirty = true;
        self.generation
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.order.remove(&(e.last, key.clone()));
        self.count(key, e.disk, false);
        self.dirty = true;
        Some(e)
    }

    /// Adds an entry to the counts, or takes it out.
    fn count(&mut self, key: &Key, disk: u64, add: bool) {
        let record = key.kind == Kind::Record;
        let change = |n: &mut u64, by: u64| *n = if add { *n + by } else { *n - by };
        change(&mut self.used, disk);
        change(&mut self.blobs, u64::from(key.kind == Kind::Blob));
        change(&mut self.records, u64::from(record));
        change(&mut self.record_bytes, if record { disk } else { 0 });
    }

    /// Makes `key` the most recently used entry.
    pub(super) fn touch(&mut self, key: &Key) -> Option<&mut Entry> {
        let now = self.tick();
        let e = self.entries.get_mut(key)?;
        self.order.remove(&(e.last, key.clone()));
        e.last = now;
        self.order.insert((now, key.clone()));
        self.dirty = true;
        Some(e)
    }

    /// Counts one more reader of `key`; returns its generation.
    pub(super) fn add_reader(&mut self, key: &Key) -> Option<u64> {
        let e = self.entries.get_mut(key)?;
        e.readers += 1;
        Some(e.generation)
    }

    /// One reader fewer, unless the entry was replaced since the reader came.
    pub(super) fn drop_reader(&mut self, key: &Key, generation: u64) {
        if let Some(e) = self.entries.get_mut(key) {
            if e.generation == generation {
                e.readers = e.readers.saturating_sub(1);
            }
        }
    }

    /// The least recently used entries that nobody reads and nobody pinned, oldest first, until
    /// they add up to `need` bytes (or there are no more).
    pub(super) fn victims(&self, mut need: u64) -> Vec<Key> {
        let mut victims = Vec::new();
        for (_, key) in &self.order {
            if need == 0 {
                break;
            }
            let Some(disk) = self.evictable(key) else {
                continue;
            };
            need = need.saturating_sub(disk);
            victims.push(key.clone());
        }
        victims
    }

    /// The entries nobody reads and nobody pinned that were last used before `before`
    /// (wall-clock milliseconds), oldest first.
    pub(super) fn unused_before(&self, before: u64) -> Vec<Key> {
        self.order
            .iter()
            .take_while(|(t, _)| *t < before)
            .filter(|(_, k)| self.evictable(k).is_some())
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The bytes evicting `key` would free, if it may be evicted: nobody reads it, nobody pinned
    /// it, and it takes space (repository links take none and would free nothing).
    fn evictable(&self, key: &Key) -> Option<u64> {
        let e = self.entries.get(key)?;
        (e.readers == 0 && e.disk > 0 && !self.pinned.contains(key)).then_some(e.disk)
    }

    /// Updates the cache gauges; called with the lock held after every change.
    pub(super) fn report(&self) {
        let m = &self.metrics;
        m.cache.bytes.set((self.used - self.record_bytes) as i64);
        m.cache.blobs.set(self.blobs as i64);
        m.cache.reserved_bytes.set(self.reserved as i64);
        m.cache.max_bytes.set(self.budget.max.unwrap_or(0) as i64);
    }

    pub(super) fn stats(&self) -> Stats {
        let pinned: Vec<&Entry> = self.pinned.iter().filter_map(|k| self.entries.get(k)).collect();
        Stats {
            blobs: self.blobs,
            manifests: self.entries.len() as u64 - self.blobs - self.records,
            records: self.records,
            bytes: self.used,
            record_bytes: self.record_bytes,
            reserved_bytes: self.reserved,
            max_size: self.budget.max,
            high_watermark: self.budget.high,
            low_watermark: self.budget.low,
            oldest_access_ms: self.order.first().map(|(t, _)| *t),
            pinned: pinned.len() as u64,
            pinned_bytes: pinned.iter().map(|e| e.disk).sum(),
            in_use: self.entries.values().filter(|e| e.readers > 0).count() as u64,
        }
    }

    /// Every entry as (key, length, last access), oldest first, for the recency snapshot.
    pub(super) fn rows(&self) -> Vec<(Key, u64, u64)> {
        self.order
            .iter()
            .filter_map(|(t, k)| self.entries.get(k).map(|e| (k.clone(), e.len, *t)))
            .collect()
    }
}

/// The ledger as the index, its leases and its reservations share it.
#[derive(Clone)]
pub(super) struct Shared(Arc<Mutex<Ledger>>);

impl Shared {
    pub(super) fn new(ledger: Ledger) -> Shared {
        Shared(Arc::new(Mutex::new(ledger)))
    }

    /// The ledger, also after a panic elsewhere: its invariants hold between statements, never
    /// across a call that could panic halfway.
    pub(super) fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn same(&self, other: &Shared) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn key(i: u8) -> Key {
        Key::blob(&Digest::sha256_of(&[i]))
    }

    #[test]
    fn victims_are_the_oldest_entries_nobody_reads_or_pinned() {
        let mut l = Ledger::new(Budget::unlimited(), HashSet::new(), Arc::new(Metrics::new()));
        for i in 0..4 {
            l.insert(key(i), None, 10, 4096, Some(100 + u64::from(i)));
        }
        l.add_reader(&key(0));
        l.pinned.insert(key(1));
        assert_eq!(l.victims(4096), [key(2)]);
        assert_eq!(l.victims(4097), [key(2), key(3)]);
        assert_eq!(l.victims(1 << 20), [key(2), key(3)]);
        assert_eq!(l.unused_before(103), [key(2)], "read, pinned or used since stay");
        assert_eq!(l.unused_before(104), [key(2), key(3)]);
        l.touch(&key(2));
        assert_eq!(l.victims(4096), [key(3)]);
        assert_eq!(l.used, 4 * 4096);
        let gen = l.add_reader(&key(3)).unwrap();
        l.insert(key(3), None, 10, 4096, None);
        l.drop_reader(&key(3), gen);
        assert_eq!(
            l.entries[&key(3)].readers,
            0,
            "a stale lease leaves the new entry alone"
        );
        l.remove(&key(0));
        assert_eq!((l.used, l.blobs), (3 * 4096, 3));
    }
}
