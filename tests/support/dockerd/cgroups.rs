//! Cgroups of the test daemons: finding a daemon's cgroup parent under every hierarchy (cgroup
//! v1 controllers, or the v2 root), and removing it when the daemon is gone, also when an earlier
//! run could not (a process killed with SIGKILL runs no destructor).

use std::path::{Path, PathBuf};

/// Every cgroup directory named `name` directly under a cgroup hierarchy root (cgroup v1: one
/// per controller under /sys/fs/cgroup/*; v2: /sys/fs/cgroup itself).
pub fn named(name: &str) -> Vec<PathBuf> {
    roots()
        .into_iter()
        .map(|r| r.join(name))
        .filter(|p| p.is_dir())
        .collect()
}

/// Cgroup directories whose name starts with `prefix`, under any hierarchy root.
pub fn with_prefix(prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for r in roots() {
        if let Ok(entries) = std::fs::read_dir(&r) {
            found.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                    .map(|e| e.path()),
            );
        }
    }
    found.sort();
    found
}

/// Removes the cgroups named with `prefix` that their daemons' owners could not remove (a test
/// process killed with SIGKILL runs no destructor). One holding a running container is busy and
/// stays; taking an idle daemon's is harmless (runc creates it again for the next container).
pub fn remove_stale(prefix: &str) {
    for dir in with_prefix(prefix) {
        eprintln!("!! removing cgroup {} left by an earlier run", dir.display());
        remove(&dir);
    }
}

/// /sys/fs/cgroup and the directories in it (the v1 controller hierarchies).
fn roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut roots = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        roots.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
    }
    // cgroup v1 often links co-mounted controllers (cpu -> cpu,cpuacct): visit each once.
    let mut seen = std::collections::BTreeSet::new();
    roots.retain(|r| seen.insert(std::fs::canonicalize(r).unwrap_or_else(|_| r.clone())));
    roots
}

/// Removes an (empty) cgroup and its child cgroups, deepest first. A cgroup directory holds only
/// kernel files, which `rmdir` takes along.
pub fn remove(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&entry.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }) {
        eprintln!("!! could not remove cgroup {}: {e}", dir.display());
    }
}
