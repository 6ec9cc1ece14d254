//! Whether a directory is a regcache store, decided before anything in it is touched. The daemon
//! deletes what it does not recognise under `blobs/`, `manifests/` and `tmp/`, so pointing
//! `[cache] dir` at a directory that holds something else must be refused, not cleaned. A store
//! says so with a marker file, `<dir>/regcache-store`, holding its format version; new stores get
//! it when they are created in a missing or empty directory, and stores made before the marker
//! existed (they have `blobs/` and `manifests/`) get it when the daemon adopts them.

use std::io;
use std::path::{Path, PathBuf};

use super::layout::Layout;

/// The store format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Entries an empty directory may still have: a file system's own, or a lock from a start that
/// failed before the store was created.
const HARMLESS: &[&str] = &["lost+found", "lock"];

/// What a cache directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No such directory.
    Missing,
    /// A directory with nothing of anybody's in it.
    Empty,
    /// A store with the marker.
    Marked,
    /// A store from before the marker: `blobs/` and `manifests/`.
    Unmarked,
}

#[derive(Debug, thiserror::Error)]
pub enum NotAStore {
    #[error("{dir} is not a regcache cache directory (it holds {entries} and no {marker} file); refusing to use it, since regcache deletes files it does not recognise there: point [cache] dir at an empty or new directory")]
    Foreign {
        dir: String,
        entries: String,
        marker: String,
    },
    #[error("{dir} is a regcache store of format {found}, newer than this regcache reads ({reads})")]
    Newer { dir: String, found: String, reads: u32 },
    #[error("cannot examine the cache directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(dir: &Path) -> impl FnOnce(io::Error) -> NotAStore + '_ {
    move |source| NotAStore::Io {
        dir: dir.display().to_string(),
        source,
    }
}

/// Examines `dir` without changing anything.
pub fn examine(dir: &Path) -> Result<Found, NotAStore> {
    let layout = Layout::new(dir);
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(io_error(dir)(e)),
        Ok(rd) => rd,
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.retain(|n| !HARMLESS.contains(&n.as_str()));
    names.sort();
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    match std::fs::read_to_string(layout.marker()) {
        Ok(text) => return format_of(dir, &text).map(|_| Found::Marked),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(dir)(e)),
    }
    if layout.blobs().is_dir() && layout.manifests().is_dir() {
        return Ok(Found::Unmarked);
    }
    let mut shown: Vec<String> = names.iter().take(3).cloned().collect();
    if names.len() > shown.len() {
        shown.push(format!("{} more", names.len() - shown.len()));
    }
    Err(NotAStore::Foreign {
        dir: dir.display().to_string(),
        entries: shown.join(", "),
        marker: marker_name(),
    })
}

/// Makes `dir` a store if it is missing or empty, marks a store from before the marker, and
/// refuses anything else. The daemon calls this before it takes the directory's lock.
pub fn claim(dir: &Path) -> Result<(), NotAStore> {
    let found = examine(dir)?;
    if found == Found::Marked {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let text = format!(
        "# A regcache cache directory: regcache deletes files it does not recognise here.\nformat = {FORMAT}\n"
    );
    std::fs::write(Layout::new(dir).marker(), text).map_err(io_error(dir))
}

fn marker_name() -> String {
    Layout::new(Path::new("")).marker().display().to_string()
}

fn format_of(dir: &Path, text: &str) -> Result<u32, NotAStore> {
    let found = text
        .lines()
        .filter_map(|l| l.strip_prefix("format"))
        .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
        .next()
        .unwrap_or_default();
    match found.parse::<u32>() {
        Ok(n) if n <= FORMAT => Ok(n),
        _ => Err(NotAStore::Newer {
            dir: dir.display().to_string(),
            found: format!("{found:?}"),
            reads: FORMAT,
        }),
    }
}

/// The marker's path in `dir`.
pub fn marker(dir: &Path) -> PathBuf {
    Layout::new(dir).marker()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_empty_directories_become_stores() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("new");
        assert_eq!(examine(&new).unwrap(), Found::Missing);
        claim(&new).unwrap();
        assert_eq!(examine(&new).unwrap(), Found::Marked);
        std::fs::create_dir(root.path().join("lost+found")).unwrap();
        std::fs::write(root.path().join("lock"), "1\n").unwrap();
        std::fs::remove_dir_all(&new).unwrap();
        assert_eq!(examine(root.path()).unwrap(), Found::Empty);
    }

    #[test]
    fn old_stores_are_adopted_and_other_directories_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        assert_eq!(examine(dir.path()).unwrap(), Found::Unmarked);
        claim(dir.path()).unwrap();
        assert!(marker(dir.path()).is_file());
        assert_eq!(examine(dir.path()).unwrap(), Found::Marked);

        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("tmp")).unwrap();
        std::fs::write(home.path().join("thesis.tex"), "keep me").unwrap();
        let e = claim(home.path()).unwrap_err().to_string();
        assert!(
            e.contains("is not a regcache cache directory (it holds thesis.tex, tmp"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        assert!(!marker(home.path()).exists());

        std::fs::write(marker(dir.path()), "format = 7\n").unwrap();
        let e = claim(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format \"7\", newer"), "{e}");
    }
}
