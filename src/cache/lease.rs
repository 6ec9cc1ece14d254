//! Holds on the ledger. A `Lease` is a reader's: while one is alive its entry is not evicted, so
//! no reader loses its file, and no file that stays on disk while open drops out of the count. A
//! `Reservation` is a download's: bytes set aside within the budget before streaming starts, so a
//! burst of cold pulls cannot overrun the disk. Both are handed out by the index (`index.rs`,
//! which also grows a reservation) and give back what they hold when dropped.

use super::key::Key;
use super::ledger::Shared;

/// A reader's hold on a cached entry: while any lease is alive the entry is not evicted.
pub struct Lease {
    ledger: Shared,
    key: Key,
    generation: u64,
}

impl Lease {
    /// A lease for a reader already counted in the ledger under `generation`.
    pub(super) fn new(ledger: Shared, key: Key, generation: u64) -> Lease {
        Lease {
            ledger,
            key,
            generation,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.ledger.lock().drop_reader(&self.key, self.generation);
    }
}

/// Bytes set aside within the budget for a download in progress; given back on drop unless a
/// publish turned them into a cached entry.
pub struct Reservation {
    pub(super) ledger: Shared,
    /// Counted in the ledger's `reserved`.
    pub(super) bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut ledger = self.ledger.lock();
            ledger.reserved -= self.bytes;
            ledger.report();
        }
    }
}
