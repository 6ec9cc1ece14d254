//! One process owns a cache directory at a time: the daemon holds an exclusive advisory lock on
//! `<dir>/lock` for as long as it runs, and `regcache cache stats|gc` takes the same lock to work
//! on a stopped daemon's directory. When the lock is taken, the command asks the running daemon
//! through its admin listener instead, so the daemon is never raced. The lock is released by the
//! kernel when its holder exits, however it exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::Path;

use super::layout::Layout;

/// The held lock; released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of the cache directory `dir` (creating both if needed), or None when another
    /// process holds it.
    pub fn try_acquire(dir: &Path) -> io::Result<Option<DirLock>> {
        std::fs::create_dir_all(dir)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(Layout::new(dir).lock())?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(e),
        }
        // For an operator wondering who holds it.
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Some(DirLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::try_acquire(dir.path()).unwrap().expect("free at first");
        assert!(DirLock::try_acquire(dir.path()).unwrap().is_none());
        drop(held);
        assert!(DirLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
