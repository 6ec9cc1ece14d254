//! What the listing reads: the index's entries sorted out by kind (blobs, manifests, tag records,
//! repository links), and manifests described from their cached files (platforms, bytes and blobs
//! cached). Files are read without a lease: one gone since the survey counts as not cached.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::super::index::Surveyed;
use super::super::key::{Kind, RecordPath};
use super::super::layout::Layout;
use crate::oci::{references, Digest};

/// What the index holds, sorted out by kind.
#[derive(Default)]
pub(super) struct Held {
    pub(super) blobs: HashMap<Digest, u64>,
    pub(super) manifests: HashMap<Digest, Surveyed>,
    /// (upstream, repository, tag) with the record's path and last access.
    pub(super) tags: Vec<(String, String, String, RecordPath, u64)>,
    pub(super) links: HashMap<Digest, Vec<(String, String)>>,
}

/// A record path's (upstream, repository, section, name).
fn split_record(path: &RecordPath) -> Option<(String, String, String, String)> {
    let parts: Vec<&str> = path.components().collect();
    let at = parts.iter().position(|c| c.starts_with('@'))?;
    if at < 2 || at + 2 != parts.len() {
        return None;
    }
    Some((
        parts[0].to_string(),
        parts[1..at].join("/"),
        parts[at].to_string(),
        parts[at + 1].to_string(),
    ))
}

pub(super) fn sort_out(entries: Vec<Surveyed>) -> Held {
    let mut held = Held::default();
    for e in entries {
        match e.key.kind {
            Kind::Blob => {
                held.blobs.insert(e.key.digest.clone(), e.len);
            }
            Kind::Manifest => {
                held.manifests.insert(e.key.digest.clone(), e);
            }
            Kind::Record => {
                let Some(path) = e.record else { continue };
                let Some((upstream, repo, section, name)) = split_record(&path) else {
                    continue;
                };
                match section.as_str() {
                    "@tags" => held.tags.push((upstream, repo, name, path, e.last)),
                    "@links" => {
                        let digest = name.replacen('-', ":", 1).parse::<Digest>();
                        if let Ok(d) = digest {
                            held.links.entry(d).or_default().push((upstream, repo));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    held
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`; None for what names no platform (attestations: `unknown/unknown`).
    fn text(&self) -> Option<String> {
        if self.os.is_empty() || self.os == "unknown" {
            return None;
        }
        Some(match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{v}", self.os, self.architecture),
            _ => format!("{}/{}", self.os, self.architecture),
        })
    }
}

#[derive(Deserialize)]
struct Child {
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Shape {
    #[serde(default)]
    manifests: Vec<Child>,
}

/// A manifest described from its cached bytes.
#[derive(Default)]
pub(super) struct Described {
    pub(super) media_type: String,
    pub(super) cached: bool,
    pub(super) platforms: Vec<String>,
    pub(super) size: u64,
    pub(super) blobs: (u64, u64),
    pub(super) children: (u64, u64),
}

/// Reads the index's files, without a lease: a file gone since the survey is not cached.
pub(super) struct Reader<'a> {
    pub(super) layout: &'a Layout,
    pub(super) held: &'a Held,
}

impl Reader<'_> {
    pub(super) fn manifest(&self, digest: &Digest) -> Option<(String, Vec<u8>)> {
        self.held.manifests.get(digest)?;
        let bytes = std::fs::read(self.layout.manifest(digest)).ok()?;
        let media_type = std::fs::read(self.layout.manifest_type(digest)).unwrap_or_default();
        Some((String::from_utf8_lossy(&media_type).into_owned(), bytes))
    }

    /// A single manifest's platform, from its config blob when that is cached.
    fn config_platform(&self, config: Option<&Digest>) -> Vec<String> {
        let Some(config) = config.filter(|d| self.held.blobs.contains_key(*d)) else {
            return Vec::new();
        };
        let Ok(bytes) = read_small(&self.layout.blob(config)) else {
            return Vec::new();
        };
        serde_json::from_slice::<Platform>(&bytes)
            .ok()
            .and_then(|p| p.text())
            .into_iter()
            .collect()
    }

    /// An image manifest's own bytes and those of its cached blobs, and its blob counts.
    fn image(&self, bytes: &[u8], len: u64) -> (u64, (u64, u64)) {
        let refs = references(bytes);
        let sizes: Vec<u64> = refs
            .blobs
            .iter()
            .filter_map(|d| self.held.blobs.get(d).copied())
            .collect();
        let size = len + sizes.iter().sum::<u64>();
        (size, (sizes.len() as u64, refs.blobs.len() as u64))
    }

    pub(super) fn describe(&self, digest: &Digest) -> Described {
        let Some((media_type, bytes)) = self.manifest(digest) else {
            return Described::default();
        };
        let len = bytes.len() as u64;
        let refs = references(&bytes);
        let mut d = Described {
            media_type,
            cached: true,
            ..Described::default()
        };
        if refs.manifests.is_empty() {
            (d.size, d.blobs) = self.image(&bytes, len);
            d.platforms = self.config_platform(refs.blobs.first());
            return d;
        }
        d.size = len;
        d.children.1 = refs.manifests.len() as u64;
        if let Ok(shape) = serde_json::from_slice::<Shape>(&bytes) {
            d.platforms = shape
                .manifests
                .iter()
                .filter_map(|c| c.platform.as_ref().and_then(Platform::text))
                .collect();
        }
        for child in &refs.manifests {
            if let Some((_, child_bytes)) = self.manifest(child) {
                let (size, (cached, total)) = self.image(&child_bytes, child_bytes.len() as u64);
                d.size += size;
                d.blobs.0 += cached;
                d.blobs.1 += total;
                d.children.0 += 1;
            }
        }
        d
    }
}

/// A config blob, read only when it is of a config's size (not a layer someone called a config).
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    const MAX: u64 = 4 << 20;
    if std::fs::metadata(path)?.len() > MAX {
        return Err(std::io::Error::other("too large for a config"));
    }
    std::fs::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_split_into_their_parts() {
        let p = RecordPath::new(["ghcr.io", "org", "app", "@tags", "v1"]).unwrap();
        let (u, r, s, n) = split_record(&p).unwrap();
        assert_eq!(
            (u.as_str(), r.as_str(), s.as_str(), n.as_str()),
            ("ghcr.io", "org/app", "@tags", "v1")
        );
        assert!(split_record(&RecordPath::new(["docker.io", "@tags", "v1"]).unwrap()).is_none());
    }

    #[test]
    fn platforms_leave_attestations_out() {
        let p = |os: &str, arch: &str, variant: Option<&str>| Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        };
        assert_eq!(
            p("linux", "arm64", Some("v8")).text().as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(p("linux", "amd64", None).text().as_deref(), Some("linux/amd64"));
        assert_eq!(p("unknown", "unknown", None).text(), None);
    }
}
