//! Small records kept under `tags/` by name (`RecordPath`), counted in the disk budget and evicted
//! least recently used like blobs and manifests, so however many names clients make up (a
//! referrers answer per digest asked about), they cannot grow the cache past `max_size`. A record
//! is replaced whole: its bytes are staged in `tmp/` and renamed over the old file under the
//! index lock (`Index::publish_record`); a reader holds a lease while it reads, and reading
//! counts as an access. What the records mean is `tags.rs`'s business.

use std::io;
use std::sync::Arc;

use super::atomic::{self, Staged};
use super::index::Index;
use super::key::RecordPath;
use super::layout::Layout;
use super::shared::{record_key, Level};

pub(super) struct Records {
    layout: Layout,
    index: Arc<Index>,
    /// The shared store behind the directory: read on a miss, written after a put.
    shared: Option<Arc<Level>>,
}

impl Records {
    pub(super) fn new(layout: &Layout, index: Arc<Index>, shared: Option<Arc<Level>>) -> Records {
        Records {
            layout: layout.clone(),
            index,
            shared,
        }
    }

    /// A record's bytes, counting as an access to it; None when it is not cached.
    /// Whether the record at `path` is kept, counting as an access to it (for a caller that
    /// holds its contents in memory).
    pub(super) fn touch(&self, path: &RecordPath) -> bool {
        self.index.lease(&path.key()).is_some()
    }

    pub(super) async fn get(&self, path: &RecordPath) -> io::Result<Option<Vec<u8>>> {
        let key = path.key();
        let Some((_lease, _)) = self.index.lease(&key) else {
            return Ok(self.get_shared(path).await);
        };
        let bytes = atomic::read(&self.layout.record(path)).await?;
        if bytes.is_none() {
            self.index.forget(&key);
        }
        Ok(bytes)
    }

    /// A record from the shared store, kept locally too (when the budget has room).
    async fn get_shared(&self, path: &RecordPath) -> Option<Vec<u8>> {
        let (bytes, _) = self
            .shared
            .as_ref()?
            .get_small(&record_key(path.as_str()))
            .await?;
        let bytes = bytes.to_vec();
        if let Err(e) = self.put_local(path.clone(), bytes.clone()).await {
            tracing::warn!(record = path.as_str(), error = %e, "cannot keep a shared record locally");
        }
        Some(bytes)
    }

    /// Keeps `bytes` as the record at `path`, in place of an older one, and in the shared
    /// store. False when the local budget has no room for it (nothing was written then; an
    /// older record stays; the shared store still gets it).
    pub(super) async fn put(&self, path: RecordPath, bytes: Vec<u8>) -> io::Result<bool> {
        if let Some(level) = &self.shared {
            level.put_small(record_key(path.as_str()), bytes.clone().into(), None, false);
        }
        self.put_local(path, bytes).await
    }

    async fn put_local(&self, path: RecordPath, bytes: Vec<u8>) -> io::Result<bool> {
        let (index, layout) = (self.index.clone(), self.layout.clone());
        let kept = tokio::task::spawn_blocking(move || {
            let dest = layout.record(&path);
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let staged = Staged::with(&layout.tmp(), &bytes)?;
            index.publish_record(&path, bytes.len() as u64, || staged.persist(&dest))
        });
        kept.await.map_err(io::Error::other)?
    }

    /// The names of the records directly under `dir` (the components after it) that the index
    /// holds, sorted. Blocking work runs off the async threads.
    pub(super) async fn names_under(&self, dir: RecordPath) -> io::Result<Vec<String>> {
        let (index, layout) = (self.index.clone(), self.layout.clone());
        let listed = tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(layout.record(&dir)) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut names = Vec::new();
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let held = RecordPath::new(dir.components().chain([name.as_str()]))
                    .is_some_and(|p| index.contains(&p.key()));
                if held && entry.file_type().is_ok_and(|t| t.is_file()) {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        });
        listed.await.map_err(io::Error::other)?
    }

    /// Removes the shared store's copy of the record at `path` (in the background).
    pub(super) fn remove_shared(&self, path: &RecordPath) {
        if let Some(level) = &self.shared {
            level.delete(record_key(path.as_str()));
        }
    }

    /// Removes the shared store's copies of every record under `prefix` (a path prefix such as
    /// `docker.io/library/app/@tags/`), in the background.
    pub(super) fn remove_shared_under(&self, prefix: &str) {
        if let Some(level) = &self.shared {
            level.delete_under(record_key(prefix));
        }
    }

    /// Removes every record whose path `matches`, now; returns how many there were.
    pub(super) async fn remove_where(
        &self,
        matches: impl Fn(&RecordPath) -> bool + Send + 'static,
    ) -> io::Result<u64> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.remove_records(matches))
            .await
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::budget::Budget;
    use crate::cache::key::BLOCK;
    use crate::metrics::Metrics;

    fn open(dir: &std::path::Path, max_blocks: u64) -> (Arc<Index>, Records) {
        let layout = Layout::new(dir);
        layout.create().unwrap();
        let budget = Budget {
            max: Some(max_blocks * BLOCK),
            high: 0.9,
            low: 0.5,
        };
        let index = Index::open(layout.clone(), budget, Arc::new(Metrics::new())).unwrap();
        (index.clone(), Records::new(&layout, index, None))
    }

    fn doc(i: usize) -> RecordPath {
        let name = format!("referrers-{i}");
        RecordPath::new(["docker.io", "library", "app", "@docs", name.as_str()]).unwrap()
    }

    #[tokio::test]
    async fn records_count_in_the_budget_and_the_least_recently_used_go_first() {
        let dir = tempfile::tempdir().unwrap();
        // 10 blocks: high mark 9, low mark 5. Each record takes one block.
        let (index, records) = open(dir.path(), 10);
        for i in 0..9 {
            assert!(records
                .put(doc(i), format!("doc {i}").into_bytes())
                .await
                .unwrap());
        }
        assert_eq!(index.stats().records, 9);
        assert_eq!(index.stats().bytes, 9 * BLOCK);
        assert_eq!(records.get(&doc(0)).await.unwrap().unwrap(), b"doc 0"); // now the newest
        assert!(records.put(doc(9), b"doc 9".to_vec()).await.unwrap());
        // 9 + 1 passes the high mark: evicted down to 5 - 1 = 4, then the newcomer.
        let mut kept = Vec::new();
        for i in 0..10 {
            kept.push(records.get(&doc(i)).await.unwrap().is_some());
        }
        assert_eq!(
            kept,
            [true, false, false, false, false, false, true, true, true, true]
        );
        let s = index.stats();
        assert_eq!(
            (s.records, s.record_bytes, s.bytes, s.blobs, s.manifests),
            (5, 5 * BLOCK, 5 * BLOCK, 0, 0)
        );
        assert!(
            !Layout::new(dir.path()).record(&doc(1)).exists(),
            "its file went too"
        );
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn records_are_replaced_whole_and_found_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (index, records) = open(dir.path(), 100);
        assert!(records.put(doc(1), vec![b'a'; 5000]).await.unwrap());
        assert!(records.put(doc(1), b"short".to_vec()).await.unwrap());
        assert!(records.put(doc(2), b"two".to_vec()).await.unwrap());
        assert_eq!(
            index.stats().record_bytes,
            2 * BLOCK,
            "the replaced record counts once"
        );
        index.save_if_dirty().unwrap();
        // Written by an older version, which kept records outside the index.
        let old = RecordPath::new(["ghcr.io", "org", "app", "@tags", "v1"]).unwrap();
        std::fs::create_dir_all(Layout::new(dir.path()).record(&old).parent().unwrap()).unwrap();
        std::fs::write(Layout::new(dir.path()).record(&old), b"{}").unwrap();
        std::fs::write(dir.path().join("tags/ghcr.io/stray"), b"not a record").unwrap();
        drop((index, records));
        let (index, records) = open(dir.path(), 100);
        assert_eq!(index.stats().records, 3);
        assert_eq!(records.get(&doc(1)).await.unwrap().unwrap(), b"short");
        assert_eq!(records.get(&old).await.unwrap().unwrap(), b"{}");
        assert_eq!(index.gc(Some(0)).evicted, 3);
        assert!(
            dir.path().join("tags/ghcr.io/stray").exists(),
            "not a record: left alone"
        );
        assert!(records.get(&doc(2)).await.unwrap().is_none());
    }
}
