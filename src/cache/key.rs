//! What the index counts and how: a `Key` names one cached entry (a blob or a manifest by its
//! digest, or a small record by the digest of its `RecordPath`), and sizes are counted in whole
//! 4 KiB blocks, the way file systems allocate them. Pure values, no I/O; every other file of
//! the index builds on these.

use std::sync::Arc;

use crate::oci::Digest;

/// Allocation unit the accounting rounds sizes up to.
pub(super) const BLOCK: u64 = 4096;

/// Bytes a file of `len` bytes is counted as.
pub(super) fn on_disk(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1) * BLOCK
}

/// Bytes a record of `len` bytes is counted as: an empty record (a repository link) takes no
/// data block, only its name, so it costs nothing against the budget; links are made only for
/// content an upstream confirmed, never for names a client makes up.
pub(super) fn record_on_disk(len: u64) -> u64 {
    if len == 0 {
        0
    } else {
        on_disk(len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Blob,
    Manifest,
    /// A small record under `tags/` (a tag record, a kept tag list or referrers answer).
    Record,
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

/// Where a small record lives, relative to `tags/`: `<upstream>/<repo>/@tags/<tag>`,
/// `<upstream>/<repo>/@docs/<name>` or `<upstream>/<repo>/@links/<alg>-<hex>`, components joined by `/`. Records are found by name, not by
/// content, so a record's key is the digest of this path, and the index keeps the path beside
/// the entry to find the file again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordPath(Arc<str>);

/// The last component of a repository's link record of `digest` (`<algorithm>-<hex>`).
pub(super) fn link_name(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().as_str(), digest.hex())
}

impl RecordPath {
    /// The path of these components; None if one is empty, `.` or `..`, or holds a `/` or a NUL,
    /// so a record never lands outside `tags/`.
    pub fn new<'a>(components: impl IntoIterator<Item = &'a str>) -> Option<RecordPath> {
        let mut path = String::new();
        for c in components {
            if c.is_empty() || c == "." || c == ".." || c.contains(['/', '\0']) {
                return None;
            }
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(c);
        }
        (!path.is_empty()).then(|| RecordPath(path.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The digest a repository link record (`…/@links/<algorithm>-<hex>`) names.
    pub fn linked_digest(&self) -> Option<Digest> {
        let mut parts = self.0.rsplit('/');
        let (name, section) = (parts.next()?, parts.next()?);
        if section != "@links" {
            return None;
        }
        let (algorithm, hex) = name.split_once('-')?;
        format!("{algorithm}:{hex}").parse().ok()
    }

    pub fn key(&self) -> Key {
        Key {
            kind: Kind::Record,
            digest: Digest::sha256_of(self.0.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_stay_inside_tags() {
        let p = RecordPath::new(["docker.io", "library", "alpine", "@tags", "3.20"]).unwrap();
        assert_eq!(p.as_str(), "docker.io/library/alpine/@tags/3.20");
        assert_eq!(p.key(), RecordPath::new(p.components()).unwrap().key());
        assert_eq!(p.key().kind, Kind::Record);
        for bad in [&["a", ".."][..], &["a", ""], &["a/b"], &["."], &[]] {
            assert!(RecordPath::new(bad.iter().copied()).is_none(), "{bad:?}");
        }
    }
}
