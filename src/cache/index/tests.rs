//! The index with real files: reservations and publishes evict least recently used content,
//! readers and pins are never evicted, and recency survives a reopen.

use std::sync::Arc;

use super::*;
use crate::cache::key::BLOCK;
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
    assert_eq!(index.ledger.lock().metrics().cache.evictions.get(), 3);
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
