//! Holds on the index. A `Lease` is a reader's: while one is alive its entry is not evicted, so
//! no reader loses its file, and no file that stays on disk while open drops out of the count. A
//! `Reservation` is a download's: bytes set aside within the budget before streaming starts, so a
//! burst of cold pulls cannot overrun the disk. Both give back what they hold when dropped.

use std::sync::Arc;

use super::evict::{discard, NoRoom};
use super::index::{on_disk, Index, Key};

/// A reader's hold on a cached entry: while any lease is alive the entry is not evicted.
pub struct Lease {
    pub(super) index: Arc<Index>,
    pub(super) key: Key,
    pub(super) generation: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.index.lock();
        if let Some(e) = inner.entries.get_mut(&self.key) {
            if e.generation == self.generation {
                e.readers = e.readers.saturating_sub(1);
            }
        }
    }
}

/// Bytes set aside within the budget for a download in progress; given back on drop unless a
/// publish turned them into a cached entry.
pub struct Reservation {
    pub(super) index: Arc<Index>,
    pub(super) bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows the reservation to `bytes` (counted in blocks), evicting if needed. Blocking.
    pub fn grow_to(&mut self, bytes: u64) -> Result<(), NoRoom> {
        let want = on_disk(bytes);
        if want <= self.bytes {
            return Ok(());
        }
        let more = want - self.bytes;
        let index = self.index.clone();
        let mut trash = Vec::new();
        let fits = {
            let mut inner = index.lock();
            let fits = index.make_room(&mut inner, more, &mut trash);
            if fits {
                inner.reserved += more;
                self.bytes = want;
            }
            index.report(&inner);
            fits
        };
        discard(trash);
        if fits {
            Ok(())
        } else {
            Err(NoRoom)
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut inner = self.index.lock();
            inner.reserved -= self.bytes;
            self.index.report(&inner);
        }
    }
}
