//! One process owns a cache directory at a time: the daemon holds an exclusive advisory lock on
//! `<dir>/lock` for as long as it runs, and `regcache cache stats|gc` takes the same lock to work
//! on a stopped daemon's directory. When the lock is taken, the command asks the running daemon
//! through its admin listener instead, so the daemon is never raced. The lock is released by the
//! kernel when its holder exits, however it exits.
//!
//! The lock file names its holder (`<pid> serve` or `<pid> command`), so a daemon that finds the
//! lock taken can tell a command that will let go in a moment (worth waiting for) from another
//! daemon (refuse at once). The name is a hint read without the lock: it is only trusted when it
//! says the same thing twice.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::Path;

use super::layout::Layout;

/// The held lock; released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Who holds (or last held) a cache directory's lock, as its lock file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// `regcache serve`: holds the lock until it stops.
    Daemon,
    /// `regcache cache ...` on a stopped daemon's directory: holds it for one operation.
    Command,
}

impl Holder {
    fn word(self) -> &'static str {
        match self {
            Holder::Daemon => "serve",
            Holder::Command => "command",
        }
    }
}

impl DirLock {
    /// Who the lock file of `dir` names: None when it cannot be read, is being rewritten, or
    /// was written by a regcache that did not say.
    pub fn holder(dir: &Path) -> Option<Holder> {
        let text = std::fs::read_to_string(Layout::new(dir).lock()).ok()?;
        match text.split_whitespace().nth(1)? {
            "serve" => Some(Holder::Daemon),
            "command" => Some(Holder::Command),
            _ => None,
        }
    }

    /// Takes the lock of the cache directory `dir` (creating both if needed) for `holder`, or
    /// None when another process holds it.
    pub fn try_acquire(dir: &Path, holder: Holder) -> io::Result<Option<DirLock>> {
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
        // For an operator wondering who holds it, and for a daemon that finds it taken.
        file.set_len(0)?;
        writeln!(file, "{} {}", std::process::id(), holder.word())?;
        Ok(Some(DirLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::try_acquire(dir.path(), Holder::Daemon)
            .unwrap()
            .expect("free at first");
        assert!(DirLock::try_acquire(dir.path(), Holder::Command)
            .unwrap()
            .is_none());
        drop(held);
        assert!(DirLock::try_acquire(dir.path(), Holder::Command)
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_lock_file_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DirLock::holder(dir.path()), None, "no lock file yet");
        let held = DirLock::try_acquire(dir.path(), Holder::Daemon).unwrap().unwrap();
        assert_eq!(DirLock::holder(dir.path()), Some(Holder::Daemon));
        drop(held);
        let held = DirLock::try_acquire(dir.path(), Holder::Command)
            .unwrap()
            .unwrap();
        assert_eq!(DirLock::holder(dir.path()), Some(Holder::Command));
        drop(held);
        std::fs::write(Layout::new(dir.path()).lock(), "1234\n").unwrap();
        assert_eq!(DirLock::holder(dir.path()), None, "an older regcache's lock file");
    }
}
