//! The index of what the cache keeps on disk (blobs, manifests, and small records: tag records
//! and kept documents), and the one authority on it. A lookup takes a `Lease` that keeps the
//! entry from being evicted until it drops; a download takes a `Reservation` within the budget
//! before it streams; and every rename into or out of the store happens under the index's lock
//! (a publish runs its renames there, an eviction renames its victims there), so a publish and
//! an eviction of the same digest never interleave.
//!
//! Built from parts that know nothing of it: the bookkeeping is `ledger.rs`, the policy
//! `evict.rs`, the two-step deletion `trash.rs`, the rebuild from the files at start `scan.rs`
//! and what survives a restart besides the files `snapshot.rs`.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::budget::{Budget, NoRoom, Stats};
use super::evict;
use super::layout::Layout;
use super::ledger::{Ledger, Shared};
use super::trash::Trash;
use super::{scan, snapshot};
use crate::metrics::Metrics;
use crate::oci::{references, References};

use super::key::{on_disk, record_on_disk, Key, Kind, RecordPath};
use super::lease::{Lease, Reservation};

/// What a publish did.
pub enum Admission {
    /// On disk and in the index; with a lease when one was asked for.
    Kept(Option<Lease>),
    /// No room within the budget: nothing was placed.
    NoRoom,
}

/// An entry about to be published.
struct New {
    key: Key,
    record: Option<RecordPath>,
    len: u64,
    disk: u64,
}

/// One entry of the index as `survey` copies it out.
pub struct Surveyed {
    pub key: Key,
    /// Content bytes.
    pub len: u64,
    /// Last access, milliseconds since the Unix epoch.
    pub last: u64,
    /// Where a record's file is (records only).
    pub record: Option<RecordPath>,
    pub pinned: bool,
}

pub struct Index {
    ledger: Shared,
    pub(super) layout: Layout,
    budget: Budget,
}

impl Index {
    /// Rebuilds the index from the files under `layout` and the recency snapshot. Blocking.
    pub fn open(layout: Layout, budget: Budget, metrics: Arc<Metrics>) -> io::Result<Arc<Index>> {
        let started = Instant::now();
        let recorded = snapshot::load_recency(&layout.recency());
        let pinned = snapshot::load_pinned(&layout.pinned());
        let scanned = scan::scan(&layout, &recorded)?;
        let mut ledger = Ledger::new(budget, pinned, metrics);
        for f in scanned.found {
            ledger.insert(f.key, f.record, f.len, f.disk, Some(f.last));
        }
        ledger.catch_up();
        ledger.dirty = scanned.dropped > 0 || ledger.entries.len() != recorded.len();
        ledger.report();
        tracing::info!(
            entries = ledger.entries.len(),
            bytes = ledger.used,
            dropped = scanned.dropped,
            ms = started.elapsed().as_millis() as u64,
            "cache index rebuilt from disk"
        );
        Ok(Arc::new(Index {
            ledger: Shared::new(ledger),
            layout,
            budget,
        }))
    }

    fn trash(&self) -> Trash {
        Trash::new(self.layout.tmp())
    }

    /// Evicts down to the low watermark if usage is past the high one (say the budget was
    /// lowered since the last run). Blocking.
    pub fn enforce(&self) {
        let mut trash = self.trash();
        {
            let mut ledger = self.ledger.lock();
            if ledger.usage() > self.budget.high_mark() {
                evict::evict(&mut ledger, &self.layout, self.budget.low_mark(), &mut trash);
            }
        }
        trash.discard();
    }

    /// Takes a lease on a cached entry (refreshing its recency) and returns its size, or None
    /// when it is not cached.
    pub fn lease(&self, key: &Key) -> Option<(Lease, u64)> {
        let mut ledger = self.ledger.lock();
        let len = ledger.touch(key)?.len;
        let generation = ledger.add_reader(key)?;
        Some((Lease::new(self.ledger.clone(), key.clone(), generation), len))
    }

    /// The size of a cached entry, without touching it.
    pub fn len_of(&self, key: &Key) -> Option<u64> {
        self.ledger.lock().entries.get(key).map(|e| e.len)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.ledger.lock().entries.contains_key(key)
    }

    /// Refreshes the recency of what a manifest references, so an image's layers (and an
    /// index's child manifests) age together with the manifest clients pull.
    pub fn touch_references(&self, manifest: &[u8]) {
        self.touch_refs(&references(manifest));
    }

    /// `touch_references` with the references already read.
    pub fn touch_refs(&self, refs: &References) {
        let mut ledger = self.ledger.lock();
        for d in &refs.blobs {
            ledger.touch(&Key::blob(d));
        }
        for d in &refs.manifests {
            ledger.touch(&Key::manifest(d));
        }
    }

    /// Drops an entry whose files turned out to be gone.
    pub fn forget(&self, key: &Key) {
        let mut ledger = self.ledger.lock();
        if ledger.remove(key).is_some() {
            tracing::warn!(digest = %key.digest, "cached file vanished; dropped from the index");
        }
        ledger.report();
    }

    /// Reserves `bytes` for a download about to be written, evicting if that passes the high
    /// watermark. Blocking: eviction renames and deletes files.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, NoRoom> {
        let mut r = Reservation {
            ledger: self.ledger.clone(),
            bytes: 0,
        };
        self.grow(&mut r, bytes)?;
        Ok(r)
    }

    /// Grows a reservation of this index to `bytes` (counted in blocks), evicting if needed.
    /// Blocking.
    pub fn grow(&self, reservation: &mut Reservation, bytes: u64) -> Result<(), NoRoom> {
        debug_assert!(
            reservation.ledger.same(&self.ledger),
            "a reservation of another index"
        );
        let want = on_disk(bytes);
        if want <= reservation.bytes {
            return Ok(());
        }
        let more = want - reservation.bytes;
        let mut trash = self.trash();
        let fits = {
            let mut ledger = self.ledger.lock();
            let fits = evict::make_room(&mut ledger, &self.layout, more, &mut trash);
            if fits {
                ledger.reserved += more;
                reservation.bytes = want;
            }
            ledger.report();
            fits
        };
        trash.discard();
        if fits {
            Ok(())
        } else {
            Err(NoRoom)
        }
    }

    /// Makes `key` cached: runs `place` (the renames that put its files into the store) under
    /// the lock and records the entry. A reservation's bytes become the entry's; without one,
    /// room is made first and `NoRoom` means nothing was placed. Records go through
    /// `publish_record`.
    pub fn publish(
        &self,
        key: Key,
        len: u64,
        disk: u64,
        reservation: Option<Reservation>,
        lease: bool,
        place: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Admission> {
        if key.kind == Kind::Record {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a record without its path",
            ));
        }
        let new = New {
            key,
            record: None,
            len,
            disk,
        };
        self.admit(new, reservation, lease, place)
    }

    /// Makes the record at `path` cached (in place of an older one): `place` renames its file
    /// into place under the lock if the budget has room. False when it had none and nothing was
    /// placed. Blocking.
    pub fn publish_record(
        &self,
        path: &RecordPath,
        len: u64,
        place: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<bool> {
        let new = New {
            key: path.key(),
            record: Some(path.clone()),
            len,
            disk: record_on_disk(len),
        };
        let admitted = self.admit(new, None, false, place)?;
        Ok(matches!(admitted, Admission::Kept(_)))
    }

    fn admit(
        &self,
        new: New,
        reservation: Option<Reservation>,
        lease: bool,
        place: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Admission> {
        let mut trash = self.trash();
        let mut reservation = reservation;
        let result = {
            let mut ledger = self.ledger.lock();
            let existing = ledger.entries.get(&new.key).map_or(0, |e| e.disk);
            let fits = reservation.is_some()
                || evict::make_room(
                    &mut ledger,
                    &self.layout,
                    new.disk.saturating_sub(existing),
                    &mut trash,
                );
            let result = if !fits {
                Ok(Admission::NoRoom)
            } else {
                place().map(|()| {
                    if let Some(r) = reservation.as_mut() {
                        ledger.reserved -= std::mem::take(&mut r.bytes);
                    }
                    let key = new.key.clone();
                    let generation = ledger.insert(new.key, new.record, new.len, new.disk, None);
                    let lease = lease.then(|| {
                        ledger.add_reader(&key);
                        Lease::new(self.ledger.clone(), key, generation)
                    });
                    Admission::Kept(lease)
                })
            };
            ledger.report();
            result
        };
        trash.discard();
        result
    }

    /// Takes the records whose path `matches` out of the store and the index now (a purge), read
    /// or not, pinned or not; returns how many went. Blocking.
    pub fn remove_records(&self, matches: impl Fn(&RecordPath) -> bool) -> u64 {
        let mut trash = self.trash();
        let removed = {
            let mut ledger = self.ledger.lock();
            let victims: Vec<(Key, RecordPath)> = ledger
                .entries
                .iter()
                .filter_map(|(k, e)| {
                    e.record
                        .as_ref()
                        .filter(|p| matches(p))
                        .map(|p| (k.clone(), p.clone()))
                })
                .collect();
            let mut removed = 0;
            for (key, path) in victims {
                if trash.take(&self.layout.files(&key, Some(&path))) && ledger.remove(&key).is_some() {
                    removed += 1;
                }
            }
            ledger.report();
            removed
        };
        trash.discard();
        removed
    }

    /// Marks `key` pinned (never evicted) or not, and persists the pinned set. A digest may be
    /// pinned before it is cached.
    pub fn pin(&self, key: Key, pinned: bool) -> io::Result<()> {
        let mut ledger = self.ledger.lock();
        let changed = if pinned {
            ledger.pinned.insert(key)
        } else {
            ledger.pinned.remove(&key)
        };
        if changed {
            snapshot::write_pinned(&self.layout, &ledger.pinned)?;
        }
        Ok(())
    }

    /// Every entry as it stands, copied out under the lock without touching any (listings).
    pub fn survey(&self) -> Vec<Surveyed> {
        let ledger = self.ledger.lock();
        let row = |(k, e): (&Key, &super::ledger::Entry)| Surveyed {
            key: k.clone(),
            len: e.len,
            last: e.last,
            record: e.record.clone(),
            pinned: ledger.pinned.contains(k),
        };
        ledger.entries.iter().map(row).collect()
    }

    pub fn is_pinned(&self, key: &Key) -> bool {
        self.ledger.lock().pinned.contains(key)
    }

    pub fn stats(&self) -> Stats {
        self.ledger.lock().stats()
    }

    /// Writes the recency snapshot if anything changed since the last one. Blocking.
    pub fn save_if_dirty(&self) -> io::Result<()> {
        // Copied out under the lock, formatted and written without it.
        let rows = {
            let mut ledger = self.ledger.lock();
            if !ledger.dirty {
                return Ok(());
            }
            ledger.dirty = false;
            ledger.rows()
        };
        let text = snapshot::render_recency(rows.iter().map(|(k, len, t)| (k, *len, *t)));
        snapshot::write_recency(&self.layout, &text).inspect_err(|_| self.ledger.lock().dirty = true)
    }
}

mod eviction;
mod release;
#[cfg(test)]
mod tests;
