//! Rebuilding the index from the files at start. Every file under `blobs/` and `manifests/` is
//! looked at once (one directory listing and one `stat` each, no reads: `benches/startup.rs` has
//! 100,000 blobs ready in about half a second). What cannot be trusted is deleted: names that
//! are not digests, empty blobs (except the empty blob's own digest), files whose size differs
//! from the size the recency snapshot recorded (a torn write), manifests without their
//! media-type file and media-type files without their manifest. Last access comes from the
//! snapshot, else from the file's mtime.
//!
//! Small records are the files under `tags/` whose directory is `@tags`, `@docs` or `@links` (anything else
//! there is left alone and not counted). They are replaced in place, atomically, so a size that
//! differs from the snapshot's is no torn write, and their last access is the later of the
//! snapshot's and the file's mtime (a replacement after the last snapshot is an access too).

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io;
use std::path::Path;
use std::time::UNIX_EPOCH;

use super::key::{on_disk, record_on_disk, Key, RecordPath};
use super::layout::Layout;
use super::snapshot::Recorded;
use crate::oci::Digest;

/// One entry found on disk.
pub(super) struct Found {
    pub key: Key,
    /// Where a record is (records only).
    pub record: Option<RecordPath>,
    pub len: u64,
    pub disk: u64,
    pub last: u64,
}

pub(super) struct Scanned {
    pub found: Vec<Found>,
    /// Files deleted as untrustworthy.
    pub dropped: u64,
}

fn mtime_ms(md: &Metadata) -> u64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn drop_file(path: &Path, why: &str, dropped: &mut u64) {
    tracing::warn!(path = %path.display(), why, "dropping an untrustworthy cache file");
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete");
    }
    *dropped += 1;
}

/// Lists the regular files of `dir` with their metadata.
fn files(dir: &Path) -> io::Result<Vec<(String, std::path::PathBuf, Metadata)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let Ok(md) = entry.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        out.push((name, entry.path(), md));
    }
    Ok(out)
}

pub(super) fn scan(layout: &Layout, recorded: &HashMap<Key, Recorded>) -> io::Result<Scanned> {
    let mut found = Vec::new();
    let mut dropped = 0;
    let empty = Digest::sha256_of(b"");
    for alg in ["sha256", "sha512"] {
        for (name, path, md) in files(&layout.blobs().join(alg))? {
            let Ok(digest) = format!("{alg}:{name}").parse::<Digest>() else {
                drop_file(&path, "not a digest", &mut dropped);
                continue;
            };
            let key = Key::blob(&digest);
            let len = md.len();
            let rec = recorded.get(&key);
            if len == 0 && digest != empty {
                drop_file(&path, "empty", &mut dropped);
                continue;
            }
            if rec.is_some_and(|r| r.len != len) {
                drop_file(&path, "size differs from the recorded size", &mut dropped);
                continue;
            }
            found.push(Found {
                last: rec.map_or_else(|| mtime_ms(&md), |r| r.last),
                key,
                record: None,
                len,
                disk: on_disk(len),
            });
        }
        scan_manifests(layout, alg, recorded, &mut found, &mut dropped)?;
    }
    scan_records(layout, recorded, &mut found)?;
    Ok(Scanned { found, dropped })
}

fn scan_manifests(
    layout: &Layout,
    alg: &str,
    recorded: &HashMap<Key, Recorded>,
    found: &mut Vec<Found>,
    dropped: &mut u64,
) -> io::Result<()> {
    let listed = files(&layout.manifests().join(alg))?;
    let mut types: HashMap<String, (std::path::PathBuf, u64)> = HashMap::new();
    let mut bodies = Vec::new();
    for (name, path, md) in listed {
        match name.strip_suffix(".type") {
            Some(hex) => {
                types.insert(hex.to_string(), (path, md.len()));
            }
            None => bodies.push((name, path, md)),
        }
    }
    let mut used_types = HashSet::new();
    for (name, path, md) in bodies {
        let Ok(digest) = format!("{alg}:{name}").parse::<Digest>() else {
            drop_file(&path, "not a digest", dropped);
            continue;
        };
        let key = Key::manifest(&digest);
        let rec = recorded.get(&key);
        let len = md.len();
        let Some((_, type_len)) = types.get(&name) else {
            drop_file(&path, "manifest without its media type", dropped);
            continue;
        };
        if len == 0 || rec.is_some_and(|r| r.len != len) {
            drop_file(&path, "empty or not the recorded size", dropped);
            continue;
        }
        used_types.insert(name.clone());
        found.push(Found {
            last: rec.map_or_else(|| mtime_ms(&md), |r| r.last),
            disk: on_disk(len) + on_disk(*type_len),
            key,
            record: None,
            len,
        });
    }
    for (hex, (path, _)) in types {
        if !used_types.contains(&hex) {
            drop_file(&path, "media type without its manifest", dropped);
        }
    }
    Ok(())
}

/// The records under `tags/`, found by walking it.
fn scan_records(
    layout: &Layout,
    recorded: &HashMap<Key, Recorded>,
    found: &mut Vec<Found>,
) -> io::Result<()> {
    let root = layout.tags();
    let mut todo = vec![(root.clone(), Vec::<String>::new())];
    while let Some((dir, parts)) = todo.pop() {
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if dir == root => return Err(e),
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot list; its records are not counted");
                continue;
            }
        };
        let in_records = matches!(
            parts.last().map(String::as_str),
            Some("@tags" | "@docs" | "@links")
        );
        for entry in listing {
            let entry = entry?;
            let (Ok(name), Ok(kind)) = (entry.file_name().into_string(), entry.file_type()) else {
                continue;
            };
            let mut here = parts.clone();
            here.push(name);
            if kind.is_dir() {
                todo.push((entry.path(), here));
                continue;
            }
            if !(in_records && kind.is_file()) {
                continue;
            }
            let (Some(path), Ok(md)) = (RecordPath::new(here.iter().map(String::as_str)), entry.metadata())
            else {
                continue;
            };
            let key = path.key();
            let snapshot = recorded.get(&key).map_or(0, |r| r.last);
            found.push(Found {
                last: snapshot.max(mtime_ms(&md)),
                key,
                record: Some(path),
                len: md.len(),
                disk: record_on_disk(md.len()),
            });
        }
    }
    Ok(())
}
