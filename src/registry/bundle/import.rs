//! Import, first half: every regular file of the archive is staged in the cache's `tmp/` while
//! it is hashed (`receive`), a `blobs/<alg>/<hex>` file refused at once when its bytes hash to
//! another digest; the layout's `index.json` (or a `docker save` archive's `manifest.json`) is
//! read into memory. Nothing has a real name yet: `plan.rs` checks what the images need, and
//! `commit.rs` adopts it. Dropping what was received deletes every staged file.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::layout::{digest_of_path, INDEX_JSON, MAX_DOCUMENT};
use super::{docker_save, plan, BundleError, ImportReport};
use crate::cache::{Cache, StagedContent};
use crate::oci::{Algorithm, Digest};
use crate::registry::Registry;

const MANIFEST_JSON: &str = "manifest.json";

/// How an import places and keeps what it adds (the admin API's query, the CLI's flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportOptions {
    /// Keep the imported images from eviction (the default; `--no-pin` turns it off).
    #[serde(default = "yes")]
    pub pin: bool,
    /// Where entries that name only a tag, or nothing, belong (`HOST/NAME`).
    #[serde(default)]
    pub repository: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            pin: true,
            repository: None,
        }
    }
}

/// Everything an archive held, staged and hashed.
#[derive(Default)]
pub(super) struct Received {
    /// By digest: `blobs/…` files (checked against their names) and every other file (sha256).
    pub blobs: HashMap<Digest, StagedContent>,
    /// The digest of each other file's path (`docker save` names layers by path).
    pub paths: HashMap<String, Digest>,
    pub index_json: Option<Vec<u8>>,
    pub manifest_json: Option<Vec<u8>>,
}

impl Registry {
    /// Imports a bundle read from `archive` (a tar stream): all of it, or nothing.
    pub async fn import(
        &self,
        archive: Box<dyn Read + Send>,
        options: &ImportOptions,
    ) -> Result<ImportReport, BundleError> {
        let cache = self.mirror.cache().clone();
        let c = cache.clone();
        let mut received = tokio::task::spawn_blocking(move || receive(&c, archive))
            .await
            .map_err(io::Error::other)??;
        let roots = if let Some(index) = received.index_json.take() {
            plan::layout_roots(&index)?
        } else if let Some(manifest) = received.manifest_json.take() {
            let c = cache.clone();
            let (roots, received_back) = tokio::task::spawn_blocking(move || {
                let roots = docker_save::roots(&c, &manifest, &mut received);
                (roots, received)
            })
            .await
            .map_err(io::Error::other)?;
            received = received_back;
            roots?
        } else {
            return Err(BundleError::Unreadable(
                "it holds neither an index.json (an OCI layout) nor a manifest.json (docker save)".into(),
            ));
        };
        let c = cache.clone();
        let (checked, received) = tokio::task::spawn_blocking(move || {
            let checked = plan::check(&c, &roots, &received);
            (checked, received)
        })
        .await
        .map_err(io::Error::other)?;
        let checked = checked?;
        let placed = self.place_images(&checked, options)?;
        self.commit(received, checked, placed, options).await
    }
}

/// A tar stream, unzipped first when it is gzipped (`docker save | gzip`).
fn unzipped<'a>(archive: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = io::BufReader::with_capacity(1 << 20, archive);
    let gzipped = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(match gzipped {
        true => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        false => Box::new(buffered),
    })
}

/// Stages every file of the tar stream (gzipped or not). Blocking.
pub(super) fn receive<'a>(cache: &Arc<Cache>, archive: impl Read + 'a) -> Result<Received, BundleError> {
    let unreadable = |e: io::Error| BundleError::Unreadable(e.to_string());
    let mut tar = tar::Archive::new(unzipped(archive).map_err(unreadable)?);
    let mut received = Received::default();
    let mut links: Vec<(String, String)> = Vec::new();
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let Some(path) = clean(&entry.path().map_err(unreadable)?) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            // `docker save` links a layer shared by two images to its first copy.
            if let Some(target) = entry.link_name().map_err(unreadable)? {
                let base = match kind.is_symlink() {
                    true => Path::new(&path).parent().unwrap_or(Path::new("")).join(&target),
                    false => target.into_owned(),
                };
                if let Some(target) = clean(&base) {
                    links.push((path, target));
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if path == INDEX_JSON || path == MANIFEST_JSON {
            let doc = read_document(&mut entry, &path)?;
            match path.as_str() {
                INDEX_JSON => received.index_json = Some(doc),
                _ => received.manifest_json = Some(doc),
            }
            continue;
        }
        let named = digest_of_path(&path);
        let algorithm = named.as_ref().map_or(Algorithm::Sha256, Digest::algorithm);
        let mut incoming = cache.incoming(algorithm)?;
        copy(&mut entry, &mut incoming).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => unreadable(e),
            _ => BundleError::Io(e),
        })?;
        let staged = incoming.finish()?;
        if let Some(named) = named {
            if staged.digest != named {
                return Err(BundleError::Corrupt(format!(
                    "blob {named} in the bundle is corrupt: its bytes hash to {}",
                    staged.digest
                )));
            }
        } else {
            received.paths.insert(path, staged.digest.clone());
        }
        received.blobs.entry(staged.digest.clone()).or_insert(staged);
    }
    for (alias, target) in links {
        if let Some(d) = received.paths.get(&target).cloned() {
            received.paths.insert(alias, d);
        }
    }
    Ok(received)
}

/// A path inside the archive without `./`, or None when it climbs out of it or is empty.
fn clean(path: &Path) -> Option<String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let s = out.to_str()?.to_string();
    (!s.is_empty()).then_some(s)
}

fn read_document(entry: &mut impl Read, path: &str) -> Result<Vec<u8>, BundleError> {
    let mut doc = Vec::new();
    entry
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut doc)
        .map_err(|e| BundleError::Unreadable(e.to_string()))?;
    if doc.len() as u64 > MAX_DOCUMENT {
        return Err(BundleError::Unreadable(format!(
            "{path} is over {MAX_DOCUMENT} bytes"
        )));
    }
    Ok(doc)
}

/// Copies in large steps (a layer is written to the disk in MiB, not in 8 KiB).
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1024 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_stay_inside_the_archive() {
        assert_eq!(
            clean(Path::new("./blobs/sha256/ab")),
            Some("blobs/sha256/ab".into())
        );
        assert_eq!(clean(Path::new("a/../b.tar")), Some("b.tar".into()));
        assert_eq!(clean(Path::new("../etc/passwd")), None);
        assert_eq!(clean(Path::new("/etc/passwd")), None);
        assert_eq!(clean(Path::new("./")), None);
    }
}
