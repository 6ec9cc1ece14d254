//! The in-memory index of what the cache keeps on disk: for every blob and manifest its size,
//! its last access and how many readers hold it, plus the pinned set and the byte accounting
//! (published content plus the reservations of downloads in progress). It is the one authority
//! on what is cached: a lookup takes a `Lease` that keeps the entry from being evicted until it
//! drops, and every rename into or out of the store happens under the index's lock, so a
//! publish and an eviction of the same digest never interleave.
//!
//! Sizes are counted in whole 4 KiB blocks, the way file systems allocate them. Access times
//! are wall-clock milliseconds, strictly increasing within a process, because they must keep
//! their order across restarts (`snapshot.rs`). The index is rebuilt from the files at start
//! (`scan.rs`); the eviction policy lives in `evict.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::evict::{discard, Budget, NoRoom};
use super::layout::Layout;
pub use super::lease::{Lease, Reservation};
use super::{scan, snapshot};
use crate::metrics::Metrics;
use crate::oci::{references, Digest};

/// Allocation unit the accounting rounds sizes up to.
pub const BLOCK: u64 = 4096;

/// Bytes a file of `len` bytes is counted as.
pub fn on_disk(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1) * BLOCK
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Blob,
    Manifest,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub digest: Digest,
}

impl Key {
    pub fn blob(digest: &Digest) -> Key {
        Key {
            kind: Kind::Blob,
            digest: digest.clone(),
        }
    }

    pub fn manifest(digest: &Digest) -> Key {
        Key {
            kind: Kind::Manifest,
            digest: digest.clone(),
        }
    }
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
}

#[derive(Default)]
pub(super) struct Inner {
    pub entries: HashMap<Key, Entry>,
    /// Entries by last access, oldest first.
    pub order: BTreeSet<(u64, Key)>,
    pub pinned: HashSet<Key>,
    pub used: u64,
    pub reserved: u64,
    pub blobs: u64,
    clock: u64,
    generation: u64,
    pub dirty: bool,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock = now_ms().max(self.clock + 1);
        self.clock
    }

    /// Adds or replaces an entry; `last` None means now.
    pub(super) fn insert(&mut self, key: Key, len: u64, disk: u64, last: Option<u64>) -> u64 {
        self.remove(&key);
        let last = match last {
            Some(t) => {
                self.clock = self.clock.max(t);
                t
            }
            None => self.tick(),
        };
        self.generation += 1;
        self.used += disk;
        self.blobs += u64::from(key.kind == Kind::Blob);
        self.order.insert((last, key.clone()));
        self.entries.insert(
            key,
            Entry {
                len,
                disk,
                last,
                readers: 0,
                generation: self.generation,
            },
        );
        self.dirty = true;
        self.generation
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.order.remove(&(e.last, key.clone()));
        self.used -= e.disk;
        self.blobs -= u64::from(key.kind == Kind::Blob);
        self.dirty = true;
        Some(e)
    }

    fn touch(&mut self, key: &Key) -> Option<&mut Entry> {
        let now = self.tick();
        let e = self.entries.get_mut(key)?;
        self.order.remove(&(e.last, key.clone()));
        e.last = now;
        self.order.insert((now, key.clone()));
        self.dirty = true;
        Some(e)
    }
}

/// What `cache stats` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub blobs: u64,
    pub manifests: u64,
    /// Bytes of published blobs and manifests.
    pub bytes: u64,
    /// Bytes reserved by downloads in progress.
    pub reserved_bytes: u64,
    pub max_size: Option<u64>,
    pub high_watermark: f64,
    pub low_watermark: f64,
    /// Milliseconds since the Unix epoch of the least recently used entry.
    pub oldest_access_ms: Option<u64>,
    pub pinned: u64,
    pub pinned_bytes: u64,
    /// Entries being read right now (never evicted while they are).
    pub in_use: u64,
}

/// What a publish did.
pub enum Admission {
    /// On disk and in the index; with a lease when one was asked for.
    Kept(Option<Lease>),
    /// No room within the budget: nothing was placed.
    NoRoom,
}

pub struct Index {
    inner: Mutex<Inner>,
    pub(super) layout: Layout,
    pub(super) budget: Budget,
    pub(super) metrics: Arc<Metrics>,
}

impl Index {
    /// Rebuilds the index from the files under `layout` and the recency snapshot. Blocking.
    pub fn open(layout: Layout, budget: Budget, metrics: Arc<Metrics>) -> io::Result<Arc<Index>> {
        let started = Instant::now();
        let recorded = snapshot::load_recency(&layout.recency());
        let pinned = snapshot::load_pinned(&layout.pinned());
        let scanned = scan::scan(&layout, &recorded)?;
        let mut inner = Inner {
            pinned,
            ..Inner::default()
        };
        for f in scanned.found {
            inner.insert(f.key, f.len, f.disk, Some(f.last));
        }
        inner.clock = inner.clock.max(now_ms());
        inner.dirty = scanned.dropped > 0 || inner.entries.len() != recorded.len();
        let index = Arc::new(Index {
            inner: Mutex::new(inner),
            layout,
            budget,
            metrics,
        });
        let inner = index.lock();
        index.report(&inner);
        tracing::info!(
            entries = inner.entries.len(),
            bytes = inner.used,
            dropped = scanned.dropped,
            ms = started.elapsed().as_millis() as u64,
            "cache index rebuilt from disk"
        );
        drop(inner);
        Ok(index)
    }

    /// Evicts down to the low watermark if usage is past the high one (say the budget was
    /// lowered since the last run). Blocking.
    pub fn enforce(&self) {
        let mut trash = Vec::new();
        {
            let mut inner = self.lock();
            if inner.used + inner.reserved > self.budget.high_mark() {
                self.evict_locked(&mut inner, self.budget.low_mark(), &mut trash);
            }
        }
        discard(trash);
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the cache gauges; called with the lock held after every change.
    pub(super) fn report(&self, inner: &Inner) {
        let m = &self.metrics;
        m.cache.bytes.set(inner.used as i64);
        m.cache.blobs.set(inner.blobs as i64);
        m.cache.reserved_bytes.set(inner.reserved as i64);
        m.cache.max_bytes.set(self.budget.max.unwrap_or(0) as i64);
    }

    /// Takes a lease on a cached entry (refreshing its recency) and returns its size, or None
    /// when it is not cached.
    pub fn lease(self: &Arc<Self>, key: &Key) -> Option<(Lease, u64)> {
        let mut inner = self.lock();
        let e = inner.touch(key)?;
        e.readers += 1;
        let lease = Lease {
            index: self.clone(),
            key: key.clone(),
            generation: e.generation,
        };
        Some((lease, e.len))
    }

    /// The size of a cached entry, without touching it.
    pub fn len_of(&self, key: &Key) -> Option<u64> {
        self.lock().entries.get(key).map(|e| e.len)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.lock().entries.contains_key(key)
    }

    /// Refreshes the recency of what a manifest references, so an image's layers (and an
    /// index's child manifests) age together with the manifest clients pull.
    pub fn touch_references(&self, manifest: &[u8]) {
        let refs = references(manifest);
        let mut inner = self.lock();
        for d in &refs.blobs {
            inner.touch(&Key::blob(d));
        }
        for d in &refs.manifests {
            inner.touch(&Key::manifest(d));
        }
    }

    /// Drops an entry whose files turned out to be gone.
    pub fn forget(&self, key: &Key) {
        let mut inner = self.lock();
        if inner.remove(key).is_some() {
            tracing::warn!(digest = %key.digest, "cached file vanished; dropped from the index");
        }
        self.report(&inner);
    }

    /// Reserves `bytes` for a download about to be written, evicting if that passes the high
    /// watermark. Blocking: eviction renames and deletes files.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, NoRoom> {
        let mut r = Reservation {
            index: self.clone(),
            bytes: 0,
        };
        r.grow_to(bytes)?;
        Ok(r)
    }

    /// Makes `key` cached: runs `place` (the renames that put its files into the store) under
    /// the lock and records the entry. A reservation's bytes become the entry's; without one,
    /// room is made first and `NoRoom` means nothing was placed.
    pub fn publish(
        self: &Arc<Self>,
        key: Key,
        len: u64,
        disk: u64,
        reservation: Option<Reservation>,
        lease: bool,
        place: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Admission> {
        let mut trash = Vec::new();
        let mut reservation = reservation;
        let result = {
            let mut inner = self.lock();
            let existing = inner.entries.get(&key).map_or(0, |e| e.disk);
            let reserved = reservation.as_ref().map_or(0, |r| r.bytes);
            let fits = reservation.is_some()
                || self.make_room(&mut inner, disk.saturating_sub(existing), &mut trash);
            if !fits {
                Ok(Admission::NoRoom)
            } else {
                match place() {
                    Err(e) => Err(e),
                    Ok(()) => {
                        inner.reserved -= reserved;
                        if let Some(r) = reservation.as_mut() {
                            r.bytes = 0;
                        }
                        let generation = inner.insert(key.clone(), len, disk, None);
                        let lease = lease.then(|| {
                            if let Some(e) = inner.entries.get_mut(&key) {
                                e.readers += 1;
                            }
                            Lease {
                                index: self.clone(),
                                key,
                                generation,
                            }
                        });
                        Ok(Admission::Kept(lease))
                    }
                }
            }
        };
        self.report(&self.lock());
        discard(trash);
        result
    }

    /// Marks `key` pinned (never evicted) or not, and persists the pinned set. A digest may be
    /// pinned before it is cached.
    pub fn pin(&self, key: Key, pinned: bool) -> io::Result<()> {
        let mut inner = self.lock();
        let changed = if pinned {
            inner.pinned.insert(key)
        } else {
            inner.pinned.remove(&key)
        };
        if changed {
            snapshot::write_pinned(&self.layout, &inner.pinned)?;
        }
        Ok(())
    }

    pub fn is_pinned(&self, key: &Key) -> bool {
        self.lock().pinned.contains(key)
    }

    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let pinned: Vec<&Entry> = inner.pinned.iter().filter_map(|k| inner.entries.get(k)).collect();
        Stats {
            blobs: inner.blobs,
            manifests: inner.entries.len() as u64 - inner.blobs,
            bytes: inner.used,
            reserved_bytes: inner.reserved,
            max_size: self.budget.max,
            high_watermark: self.budget.high,
            low_watermark: self.budget.low,
            oldest_access_ms: inner.order.first().map(|(t, _)| *t),
            pinned: pinned.len() as u64,
            pinned_bytes: pinned.iter().map(|e| e.disk).sum(),
            in_use: inner.entries.values().filter(|e| e.readers > 0).count() as u64,
        }
    }

    /// Writes the recency snapshot if anything changed since the last one. Blocking.
    pub fn save_if_dirty(&self) -> io::Result<()> {
        // Copied out under the lock, formatted and written without it.
        let rows: Vec<(Key, u64, u64)> = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            inner
                .order
                .iter()
                .filter_map(|(t, k)| inner.entries.get(k).map(|e| (k.clone(), e.len, *t)))
                .collect()
        };
        let text = snapshot::render_recency(rows.iter().map(|(k, len, t)| (k, *len, *t)));
        snapshot::write_recency(&self.layout, &text).inspect_err(|_| self.lock().dirty = true)
    }
}
