//! Releasing content nothing keeps any more (`regcache gc --hosted`, `POST /admin/gc?hosted=true`).
//! Every pinned blob or manifest is pinned for a repository that links it: a hosted push, a
//! `prefetch --pin` and an import all pin the repository's link records with the content. A
//! delete in a hosted repository removes the link, so content whose digest no pinned link names
//! is garbage: its pin is dropped and, unless a response is reading it, it is deleted now. A blob
//! of an upload still in progress is not in the store yet (it is staged in `tmp/`), and a
//! finished upload is linked at once, so a release never takes what a push in progress needs.

use std::collections::HashSet;

use super::super::budget::Released;
use super::super::key::{Key, Kind};
use super::super::snapshot;
use super::Index;
use crate::oci::Digest;

impl Index {
    /// Unpins `keys`, except blobs and manifests that a pinned link of another repository still
    /// names once the records among `keys` are unpinned (a layer an unpinned image shares with a
    /// hosted or another pinned image stays pinned). Blocking.
    pub fn unpin_keeping_linked(&self, keys: &[Key]) -> std::io::Result<()> {
        let mut ledger = self.ledger.lock();
        for key in keys.iter().filter(|k| k.kind == Kind::Record) {
            ledger.pinned.remove(key);
        }
        let linked: HashSet<Digest> = ledger
            .entries
            .iter()
            .filter(|(k, _)| ledger.pinned.contains(k))
            .filter_map(|(_, e)| e.record.as_ref().and_then(|p| p.linked_digest()))
            .collect();
        for key in keys.iter().filter(|k| k.kind != Kind::Record) {
            if !linked.contains(&key.digest) {
                ledger.pinned.remove(key);
            }
        }
        snapshot::write_pinned(&self.layout, &ledger.pinned)
    }

    /// Drops the pins of content no pinned link names, and deletes it unless it is being read.
    /// Blocking.
    pub fn release_unlinked(&self) -> std::io::Result<Released> {
        let mut trash = self.trash();
        let released = {
            let mut ledger = self.ledger.lock();
            let linked: HashSet<Digest> = ledger
                .entries
                .iter()
                .filter(|(k, _)| ledger.pinned.contains(k))
                .filter_map(|(_, e)| e.record.as_ref().and_then(|p| p.linked_digest()))
                .collect();
            let garbage: Vec<Key> = ledger
                .pinned
                .iter()
                .filter(|k| matches!(k.kind, Kind::Blob | Kind::Manifest) && !linked.contains(&k.digest))
                .cloned()
                .collect();
            let mut released = Released::default();
            for key in &garbage {
                ledger.pinned.remove(key);
                released.unpinned += 1;
                let idle = ledger.entries.get(key).is_some_and(|e| e.readers == 0);
                if idle && trash.take(&self.layout.files(key, None)) {
                    if let Some(e) = ledger.remove(key) {
                        released.deleted += 1;
                        released.deleted_bytes += e.len;
                    }
                }
            }
            if !garbage.is_empty() {
                snapshot::write_pinned(&self.layout, &ledger.pinned)?;
            }
            ledger.report();
            released
        };
        trash.discard();
        Ok(released)
    }
}
