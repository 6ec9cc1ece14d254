//! Manifests by digest (`manifests/<alg>/<hex>` holds the exact upstream bytes, `<hex>.type` the
//! media type), tag records (`tags/<upstream>/<repo>/@tags/<tag>`: digest, media type and
//! size) and the last tag list and referrers answers (`tags/<upstream>/<repo>/@docs/<name>`).
//! `@` cannot occur in a repository name, so these never collide with nested repositories. Tag freshness lives in memory on the tokio clock: after a restart every tag is
//! revalidated once.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::oci::{Digest, RepoName, Tag};

static SEQ: AtomicU64 = AtomicU64::new(0);

async fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let t = tmp.join(format!(
        "meta.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::write(&t, bytes).await?;
    tokio::fs::rename(&t, dest).await.inspect_err(|_| {
        let _ = std::fs::remove_file(&t);
    })
}

async fn read_opt(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

pub struct ManifestStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl ManifestStore {
    pub fn open(cache_dir: &Path) -> io::Result<ManifestStore> {
        let root = cache_dir.join("manifests");
        for alg in ["sha256", "sha512"] {
            std::fs::create_dir_all(root.join(alg))?;
        }
        Ok(ManifestStore {
            root,
            tmp: cache_dir.join("tmp"),
        })
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.algorithm().as_str()).join(digest.hex())
    }

    pub async fn get(&self, digest: &Digest) -> io::Result<Option<StoredManifest>> {
        let path = self.path(digest);
        let Some(bytes) = read_opt(&path).await? else {
            return Ok(None);
        };
        let media_type = read_opt(&path.with_extension("type")).await?.unwrap_or_default();
        Ok(Some(StoredManifest {
            digest: digest.clone(),
            media_type: String::from_utf8_lossy(&media_type).into_owned(),
            bytes: Bytes::from(bytes),
        }))
    }

    /// Stores verified manifest bytes. The type file goes first: bytes present means complete.
    pub async fn put(&self, m: &StoredManifest) -> io::Result<()> {
        let path = self.path(&m.digest);
        write_atomic(&self.tmp, &path.with_extension("type"), m.media_type.as_bytes()).await?;
        write_atomic(&self.tmp, &path, &m.bytes).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

impl TagRecord {
    pub fn digest(&self) -> Option<Digest> {
        self.digest.parse().ok()
    }
}

type TagKey = (String, RepoName, Tag);

pub struct TagStore {
    root: PathBuf,
    tmp: PathBuf,
    checked: Mutex<HashMap<TagKey, Instant>>,
}

impl TagStore {
    pub fn open(cache_dir: &Path) -> io::Result<TagStore> {
        let root = cache_dir.join("tags");
        std::fs::create_dir_all(&root)?;
        Ok(TagStore {
            root,
            tmp: cache_dir.join("tmp"),
            checked: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> PathBuf {
        let mut p = self.root.join(upstream);
        for c in repo.components() {
            p.push(c);
        }
        p.push("@tags");
        p.push(tag.as_str());
        p
    }

    pub async fn get(&self, upstream: &str, repo: &RepoName, tag: &Tag) -> io::Result<Option<TagRecord>> {
        let Some(bytes) = read_opt(&self.path(upstream, repo, tag)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    pub async fn put(&self, upstream: &str, repo: &RepoName, tag: &Tag, rec: &TagRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(io::Error::other)?;
        write_atomic(&self.tmp, &self.path(upstream, repo, tag), &bytes).await?;
        self.mark_checked(upstream, repo, tag);
        Ok(())
    }

    fn doc_path(&self, upstream: &str, repo: &RepoName, name: &str) -> PathBuf {
        let mut p = self.root.join(upstream);
        for c in repo.components() {
            p.push(c);
        }
        p.push("@docs");
        p.push(name);
        p
    }

    /// The last copy of a per-repository document (tag list, referrers) kept for offline use.
    /// `name` is chosen by regcache, never by a client.
    pub async fn get_doc(&self, upstream: &str, repo: &RepoName, name: &str) -> io::Result<Option<Bytes>> {
        Ok(read_opt(&self.doc_path(upstream, repo, name))
            .await?
            .map(Bytes::from))
    }

    pub async fn put_doc(&self, upstream: &str, repo: &RepoName, name: &str, bytes: &[u8]) -> io::Result<()> {
        write_atomic(&self.tmp, &self.doc_path(upstream, repo, name), bytes).await
    }

    /// Whether the tag was confirmed with the upstream less than `ttl` ago.
    pub fn is_fresh(&self, upstream: &str, repo: &RepoName, tag: &Tag, ttl: Duration) -> bool {
        let key = (upstream.to_string(), repo.clone(), tag.clone());
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|t| t.elapsed() < ttl)
    }

    pub fn mark_checked(&self, upstream: &str, repo: &RepoName, tag: &Tag) {
        let key = (upstream.to_string(), repo.clone(), tag.clone());
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Instant::now());
    }
}
