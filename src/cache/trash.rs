//! Taking files out of the store in two steps: first renamed into `tmp/` (cheap, and done under
//! the index lock so it is ordered with publishes of the same digest), then deleted after the
//! lock is released, so a large unlink never stalls other requests. Whatever is still in the
//! trash when it is dropped is deleted then.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

pub(super) struct Trash {
    tmp: PathBuf,
    files: Vec<PathBuf>,
}

impl Trash {
    /// An empty trash that moves files into `tmp`.
    pub(super) fn new(tmp: PathBuf) -> Trash {
        Trash {
            tmp,
            files: Vec::new(),
        }
    }

    /// Renames an entry's files out of the store. False when the first one (the content) could
    /// not be moved: the entry then stays. Files already gone are fine.
    pub(super) fn take(&mut self, files: &[PathBuf]) -> bool {
        for (i, path) in files.iter().enumerate() {
            let to = self.tmp.join(format!(
                "evicted.{}.{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::rename(path, &to) {
                Ok(()) => self.files.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if i == 0 => {
                    warn(path, &e, "cannot evict");
                    return false;
                }
                Err(e) => warn(path, &e, "cannot evict"),
            }
        }
        true
    }

    /// Deletes what was taken; call without the lock.
    pub(super) fn discard(mut self) {
        self.delete();
    }

    fn delete(&mut self) {
        for p in self.files.drain(..) {
            if let Err(e) = std::fs::remove_file(&p) {
                warn(&p, &e, "cannot delete an evicted file");
            }
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        self.delete();
    }
}

fn warn(path: &Path, e: &std::io::Error, what: &str) {
    tracing::warn!(path = %path.display(), error = %e, "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_files_leave_the_store_at_once_and_tmp_when_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        let mut trash = Trash::new(tmp.clone());
        assert!(
            trash.take(&[a.clone(), b.clone()]),
            "a missing second file is fine"
        );
        assert!(!a.exists());
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
        // A content file that cannot be moved (its parent is not a directory) keeps the entry.
        let file = dir.path().join("c");
        std::fs::write(&file, b"c").unwrap();
        assert!(!trash.take(&[file.join("x")]));
        trash.discard();
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }
}
