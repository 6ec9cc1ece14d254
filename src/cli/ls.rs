//! Text for people of `regcache cache ls`: one aligned row per tag (and per manifest by digest),
//! with the digest shortened, sizes in binary units and the last pull as an age.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::admin_api::{EntryKind, ListEntry};
use crate::oci::short_digest;
use crate::units::{age, short_size};

use super::cache_cmd::Via;

fn name(e: &ListEntry) -> String {
    let place = match (&e.upstream, &e.repository) {
        (Some(u), Some(r)) => format!("{u}/{r}"),
        _ => String::new(),
    };
    match (e.kind, &e.tag) {
        (EntryKind::Tag, Some(t)) => format!("{place}:{t}"),
        (EntryKind::Tag | EntryKind::Digest, _) => format!("{place} (by digest)"),
        (EntryKind::Unreferenced, _) => "(unreferenced)".to_string(),
    }
}

fn cached(e: &ListEntry) -> String {
    if !e.manifest_cached {
        return "manifest evicted".to_string();
    }
    let blobs = format!("{}/{} blobs", e.blobs_cached, e.blobs_total);
    if e.children_total > 0 {
        format!("{}/{} images, {blobs}", e.children_cached, e.children_total)
    } else {
        blobs
    }
}

fn row(e: &ListEntry, now: u64) -> [String; 7] {
    [
        name(e),
        short_digest(&e.digest).to_string(),
        e.platforms.join(","),
        short_size(e.size),
        cached(e),
        e.last_pulled_ms.map_or_else(|| "-".to_string(), |t| age(t, now)),
        if e.pinned { "yes" } else { "" }.to_string(),
    ]
}

/// The listing as an aligned table, `now` in milliseconds since the epoch.
pub fn render_ls_at(entries: &[ListEntry], via: Via, now: u64) -> String {
    let head = [
        "IMAGE",
        "DIGEST",
        "PLATFORMS",
        "SIZE",
        "CACHED",
        "LAST PULLED",
        "PINNED",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = std::iter::once(head)
        .chain(entries.iter().map(|e| row(e, now)))
        .collect();
    let mut widths = [0; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let source = match via {
        Via::Directory => "read from the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("answered by the running daemon at {a}"),
    };
    out.push_str(&format!("{} entries; source: {source}\n", entries.len()));
    out
}

pub fn render_ls(entries: &[ListEntry], via: Via) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    render_ls_at(entries, via, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_api::LastPulled;

    fn tagged() -> ListEntry {
        ListEntry {
            kind: EntryKind::Tag,
            upstream: Some("docker.io".into()),
            repository: Some("library/alpine".into()),
            tag: Some("3.20".into()),
            digest: format!("sha256:{}", "ab".repeat(32)),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            manifest_cached: true,
            platforms: vec!["linux/amd64".into(), "linux/arm64/v8".into()],
            size: 3 << 20,
            blobs_cached: 3,
            blobs_total: 3,
            children_cached: 1,
            children_total: 2,
            last_pulled_ms: Some(1_000),
            last_pulled_from: Some(LastPulled::Manifest),
            pinned: true,
        }
    }

    #[test]
    fn a_table_with_aligned_columns() {
        let mut other = tagged();
        (other.kind, other.tag, other.pinned, other.children_total) = (EntryKind::Digest, None, false, 0);
        let text = render_ls_at(&[tagged(), other], Via::Directory, 1_000 + 3 * 3_600_000 + 5);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("IMAGE"), "{text}");
        assert!(lines[1].starts_with("docker.io/library/alpine:3.20 "), "{text}");
        assert!(
            lines[2].starts_with("docker.io/library/alpine (by digest)"),
            "{text}"
        );
        let col = lines[0].find("DIGEST").unwrap();
        assert_eq!(lines[1].find("sha256:abababababab "), Some(col), "{text}");
        assert!(lines[1].contains("linux/amd64,linux/arm64/v8"), "{text}");
        assert!(lines[1].contains("3.0 MiB"), "{text}");
        assert!(lines[1].contains("1/2 images, 3/3 blobs"), "{text}");
        assert!(lines[1].contains("3h ago") && lines[1].ends_with("yes"), "{text}");
        assert!(lines[2].ends_with("3h ago"), "{text}");
        assert!(lines[3].starts_with("2 entries"), "{text}");
    }

    #[test]
    fn ages() {
        assert_eq!(age(0, 59_999), "59s ago");
        assert_eq!(age(0, 60_000), "1m ago");
        assert_eq!(age(0, 2 * 86_400_000), "2d ago");
        assert_eq!(age(10, 0), "0s ago");
    }
}
