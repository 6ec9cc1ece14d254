//! What of the index survives a restart besides the files: `index/recency`, a snapshot of every
//! entry's size and last access, rewritten whole (atomically) when something changed, at most
//! once a period and at shutdown, never once per request; and `index/pinned`, the digests that
//! are never evicted, rewritten whenever the set changes. Both are plain text, one entry a line
//! (`b sha256:<hex> <len> <ms>`; `b`/`m`/`r` tell blobs, manifests and records apart, a record
//! by the digest of its path; older versions skip `r` lines), written through
//! `atomic.rs`. Unreadable lines are skipped: an entry the snapshot misses falls back to its
//! file's modification time.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use super::atomic;
use super::key::{Key, Kind};
use super::layout::Layout;

const RECENCY_HEADER: &str = "# regcache recency v1: kind digest length last-access-ms";
const PINNED_HEADER: &str = "# regcache pinned v1: kind digest";

/// What the snapshot says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recorded {
    pub len: u64,
    pub last: u64,
}

fn kind_char(k: Kind) -> char {
    match k {
        Kind::Blob => 'b',
        Kind::Manifest => 'm',
        Kind::Record => 'r',
    }
}

fn parse_key(kind: &str, digest: &str) -> Option<Key> {
    let digest = digest.parse().ok()?;
    match kind {
        "b" => Some(Key::blob(&digest)),
        "m" => Some(Key::manifest(&digest)),
        "r" => Some(Key {
            kind: Kind::Record,
            digest,
        }),
        _ => None,
    }
}

fn read_lines(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read; starting without it");
            String::new()
        }
    }
}

pub(super) fn load_recency(path: &Path) -> HashMap<Key, Recorded> {
    let text = read_lines(path);
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut f = line.split(' ');
        let (Some(k), Some(d), Some(len), Some(last)) = (f.next(), f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Some(key), Ok(len), Ok(last)) = (parse_key(k, d), len.parse(), last.parse()) else {
            continue;
        };
        out.insert(key, Recorded { len, last });
    }
    out
}

pub(super) fn render_recency<'a>(entries: impl Iterator<Item = (&'a Key, u64, u64)>) -> String {
    let mut s = String::with_capacity(1 << 16);
    s.push_str(RECENCY_HEADER);
    s.push('\n');
    for (key, len, last) in entries {
        let _ = writeln!(s, "{} {} {len} {last}", kind_char(key.kind), key.digest);
    }
    s
}

fn write_atomic(layout: &Layout, dest: &Path, text: &str) -> io::Result<()> {
    // `tmp/` is not created here: `Layout::create` made the directories, and a daemon whose
    // directory was removed under it must not recreate a stray part of it.
    atomic::write(&layout.tmp(), dest, text.as_bytes())
}

pub(super) fn write_recency(layout: &Layout, text: &str) -> io::Result<()> {
    write_atomic(layout, &layout.recency(), text)
}

pub(super) fn load_pinned(path: &Path) -> HashSet<Key> {
    read_lines(path)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').and_then(|(k, d)| parse_key(k, d.trim())))
        .collect()
}

pub(super) fn write_pinned(layout: &Layout, pinned: &HashSet<Key>) -> io::Result<()> {
    let mut keys: Vec<&Key> = pinned.iter().collect();
    keys.sort();
    let mut s = format!("{PINNED_HEADER}\n");
    for k in keys {
        let _ = writeln!(s, "{} {}", kind_char(k.kind), k.digest);
    }
    write_atomic(layout, &layout.pinned(), &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    #[test]
    fn recency_and_pins_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let a = Key::blob(&Digest::sha256_of(b"a"));
        let m = Key::manifest(&Digest::sha256_of(b"m"));
        let text = render_recency([(&a, 1, 100), (&m, 22, 200)].into_iter());
        write_recency(&layout, &format!("{text}garbage line\nb sha256:zz 1 2\n")).unwrap();
        let got = load_recency(&layout.recency());
        assert_eq!(got.len(), 2);
        assert_eq!(got[&a], Recorded { len: 1, last: 100 });
        assert_eq!(got[&m], Recorded { len: 22, last: 200 });
        let pins: HashSet<Key> = [a.clone(), m].into_iter().collect();
        write_pinned(&layout, &pins).unwrap();
        assert_eq!(load_pinned(&layout.pinned()), pins);
        assert!(load_recency(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn records_round_trip_by_the_digest_of_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let r = crate::cache::key::RecordPath::new(["docker.io", "app", "@tags", "v1"]).unwrap();
        let text = render_recency([(&r.key(), 70, 300)].into_iter());
        assert!(text.contains(&format!("r {} 70 300", r.key().digest)), "{text}");
        write_recency(&layout, &text).unwrap();
        assert_eq!(
            load_recency(&layout.recency())[&r.key()],
            Recorded { len: 70, last: 300 }
        );
    }
}
