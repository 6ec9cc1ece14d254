//! What the index counts and how: a `Key` names one cached entry (a blob or a manifest by its
//! digest), and sizes are counted in whole 4 KiB blocks, the way file systems allocate them.
//! Pure values, no I/O; every other file of the index builds on these.

use crate::oci::Digest;

/// Allocation unit the accounting rounds sizes up to.
pub const BLOCK: u64 = 4096;

/// Bytes a file of `len` bytes is counted as.
pub fn on_disk(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1) * BLOCK
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
