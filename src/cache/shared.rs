//! A second level behind the cache directory, shared by every replica of a cluster (an object
//! store bucket, `src/bucket/`). The cache directory stays the bounded, fast tier; the shared
//! level is asked on a local miss before the origin, and gets everything the cache verified:
//!
//! - a blob fill's origin is wrapped (`SharedFirst`): the shared copy if there is one, else the
//!   upstream; a blob that came from the upstream is uploaded once it is verified and kept
//!   (`Shared::put_file`: whole or not at all), one that came from the shared level is not;
//!   a shared copy whose digest is wrong is deleted, so the next pull goes upstream;
//! - content adopted whole (a hosted push, an imported bundle) is uploaded once placed;
//! - manifests (`manifests/<alg>/<hex>`, with their media type) and records (`records/<path>`:
//!   tag records, repository links, kept documents) are read through on a miss and written
//!   through after the local write (in the background: a client never waits for the bucket).
//!
//! Shared-level trouble is never a client's: a failed read is a miss, a failed write is logged
//! and counted. After a failed read the shared level is not read for `PAUSE` (every local miss
//! goes straight to the upstream meanwhile), and a read that gets no answer within `ANSWER`
//! fails, so a store in trouble costs a pull seconds once, not on every request. Work still
//! running at shutdown is waited for.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::origin::{Fetched, Fetching, Origin, OriginError};
use crate::metrics::Metrics;
use crate::oci::Digest;

/// How long reads skip the shared level after one failed.
const PAUSE: Duration = Duration::from_secs(30);
/// A read the shared level has not answered (its head, for a blob) within this has failed.
const ANSWER: Duration = Duration::from_secs(15);

/// A shared-level operation's answer.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, OriginError>> + Send>>;

/// A small object's bytes and the media type stored with it.
pub type SmallObject = (Bytes, Option<String>);

/// What the cache needs of a shared store. Keys are relative (`blobs/sha256/<hex>`); an
/// implementation may put them under a prefix.
pub trait Shared: Send + Sync + std::fmt::Debug + 'static {
    /// The object at `key`, whole or bytes `start..end`; None when the store does not hold it.
    fn get(&self, key: &str, range: Option<(u64, u64)>) -> Pending<Option<Fetched>>;
    /// The size of the object at `key`; None when the store does not hold it.
    fn head(&self, key: &str) -> Pending<Option<u64>>;
    /// A small object read whole.
    fn get_small(&self, key: &str) -> Pending<Option<SmallObject>>;
    /// Stores `size` bytes of `file` (from its start) at `key`, unless the store holds it; the
    /// object is visible only once it is complete.
    fn put_file(&self, key: &str, file: std::fs::File, size: u64) -> Pending<()>;
    /// Stores a small object, replacing an older one unless `create_only`.
    fn put_small(
        &self,
        key: &str,
        bytes: Bytes,
        media_type: Option<String>,
        create_only: bool,
    ) -> Pending<()>;
    fn delete(&self, key: &str) -> Pending<()>;
    /// Every object under `prefix`: key (relative, as given to the other methods), size and last
    /// modification in milliseconds since the epoch.
    fn list(&self, prefix: &str) -> Pending<Vec<Listed>>;
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified_ms: u64,
}

pub(super) fn blob_key(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub(super) fn manifest_key(digest: &Digest) -> String {
    format!("manifests/{}/{}", digest.algorithm().as_str(), digest.hex())
}

pub(super) fn record_key(path: &str) -> String {
    format!("records/{path}")
}

/// The shared store as the cache uses it: counted, logged, and with its writes tracked.
pub struct Level {
    store: Arc<dyn Shared>,
    metrics: Arc<Metrics>,
    running: watch::Sender<usize>,
    /// Blobs and manifests used since the last `flush_uses` (`shared_gc.rs`).
    uses: super::uses::Uses,
    /// Reads skip the shared level until then (after a failed one).
    paused_until: Mutex<Option<Instant>>,
}

impl Level {
    pub(super) fn new(store: Arc<dyn Shared>, metrics: Arc<Metrics>) -> Arc<Level> {
        Arc::new(Level {
            store,
            metrics,
            running: watch::Sender::new(0),
            uses: super::uses::Uses::default(),
            paused_until: Mutex::new(None),
        })
    }

    /// Whether reads skip the shared level now (counted as `skipped`).
    fn paused(&self, op: &str) -> bool {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        let paused = until.is_some_and(|t| Instant::now() < t);
        if paused {
            self.count(op, "skipped");
        }
        paused
    }

    /// Counts a failed read and pauses reads for `PAUSE`.
    fn read_failed(&self, op: &str, key: &str, e: &OriginError) {
        self.count(op, "error");
        *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + PAUSE);
        tracing::warn!(key, error = %e, "cannot read from the shared store; not asked again for {PAUSE:?}");
    }

    /// `read`, failed when it takes longer than `ANSWER`.
    async fn answer<T>(read: Pending<T>) -> Result<T, OriginError> {
        tokio::time::timeout(ANSWER, read)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {ANSWER:?}").into()))
    }

    /// Notes a use of the blob `digest` (served, filled or read), for the bucket's budget.
    pub(super) fn used_blob(&self, digest: &Digest) {
        self.uses.note(blob_key(digest));
    }

    /// Notes a use of the manifest `digest`.
    pub(super) fn used_manifest(&self, digest: &Digest) {
        self.uses.note(manifest_key(digest));
    }

    /// Writes what was used since the last call as one object of its own. Logged on failure.
    pub(super) async fn flush_uses(&self) {
        if let Some((key, body)) = self.uses.take() {
            match self.store.put_small(&key, body, None, true).await {
                Ok(()) => self.count("put", "ok"),
                Err(e) => {
                    self.count("put", "error");
                    tracing::warn!(key, error = %e, "cannot record recent uses in the shared store");
                }
            }
        }
    }

    fn count(&self, op: &str, result: &str) {
        self.metrics.cache.shared(op, result);
    }

    /// A small object, or None when it is missing or cannot be read (logged).
    pub(super) async fn get_small(&self, key: &str) -> Option<SmallObject> {
        if self.paused("get") {
            return None;
        }
        match Level::answer(self.store.get_small(key)).await {
            Ok(Some(found)) => {
                self.count("get", "hit");
                Some(found)
            }
            Ok(None) => {
                self.count("get", "miss");
                None
            }
            Err(e) => {
                self.read_failed("get", key, &e);
                None
            }
        }
    }

    /// The size of a shared blob; None when missing or unreadable.
    pub(super) async fn blob_size(&self, digest: &Digest) -> Option<u64> {
        let key = blob_key(digest);
        if self.paused("head") {
            return None;
        }
        match Level::answer(self.store.head(&key)).await {
            Ok(size) => {
                self.count("head", if size.is_some() { "hit" } else { "miss" });
                size
            }
            Err(e) => {
                self.read_failed("head", &key, &e);
                None
            }
        }
    }

    /// Runs `work` in the background, counted for `wait_idle`; errors are logged and counted.
    fn spawn(self: &Arc<Self>, op: &'static str, key: String, work: Pending<()>) {
        self.running.send_modify(|n| *n += 1);
        let level = self.clone();
        tokio::spawn(async move {
            match work.await {
                Ok(()) => level.count(op, "ok"),
                Err(e) => {
                    level.count(op, "error");
                    tracing::warn!(key, error = %e, "shared store {op} failed");
                }
            }
            level.running.send_modify(|n| *n -= 1);
        });
    }

    pub(super) fn put_small(
        self: &Arc<Self>,
        key: String,
        bytes: Bytes,
        media_type: Option<String>,
        create_only: bool,
    ) {
        let work = self.store.put_small(&key, bytes, media_type, create_only);
        self.spawn("put", key, work);
    }

    /// Uploads a verified blob from its open file; `keep` (its lease) lives until the upload ends.
    pub(super) fn put_blob(
        self: &Arc<Self>,
        digest: &Digest,
        file: std::fs::File,
        size: u64,
        keep: impl Send + 'static,
    ) {
        let key = blob_key(digest);
        let upload = self.store.put_file(&key, file, size);
        let work: Pending<()> = Box::pin(async move {
            let done = upload.await;
            drop(keep);
            done
        });
        tracing::debug!(%digest, size, "uploading the blob to the shared store");
        self.spawn("put_blob", key, work);
    }

    pub(super) fn delete(self: &Arc<Self>, key: String) {
        let work = self.store.delete(&key);
        self.spawn("delete", key, work);
    }

    /// Deletes every object under `prefix` (in the background).
    pub(super) fn delete_under(self: &Arc<Self>, prefix: String) {
        let store = self.store.clone();
        let under = prefix.clone();
        let work: Pending<()> = Box::pin(async move {
            for listed in store.list(&under).await? {
                store.delete(&listed.key).await?;
            }
            Ok(())
        });
        self.spawn("delete", prefix, work);
    }

    /// Returns when no shared-store write is running.
    pub(super) async fn wait_idle(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// `inner` with the shared copy of `digest` asked first.
    pub(super) fn in_front_of(self: &Arc<Self>, digest: &Digest, inner: Arc<dyn Origin>) -> Arc<SharedFirst> {
        Arc::new(SharedFirst {
            level: self.clone(),
            key: blob_key(digest),
            inner,
            from_shared: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A blob's origin with the shared store in front: whole downloads and ranges come from the
/// shared copy when there is one.
pub(super) struct SharedFirst {
    level: Arc<Level>,
    key: String,
    inner: Arc<dyn Origin>,
    from_shared: Arc<AtomicBool>,
}

impl SharedFirst {
    /// Whether the last whole download came from the shared store (so it needs no upload).
    pub(super) fn came_from_shared(&self) -> bool {
        self.from_shared.load(Ordering::Relaxed)
    }

    /// The flag `came_from_shared` reads, for a fill to tell where its bytes came from.
    pub(super) fn source_flag(&self) -> Arc<AtomicBool> {
        self.from_shared.clone()
    }

    pub(super) fn level(&self) -> &Arc<Level> {
        &self.level
    }

    fn first(&self, range: Option<(u64, u64)>, then: Fetching) -> Fetching {
        let (level, key, flag) = (self.level.clone(), self.key.clone(), self.from_shared.clone());
        let op = if range.is_some() { "get_range" } else { "get_blob" };
        Box::pin(async move {
            let asked = match level.paused(op) {
                true => None,
                false => Some(Level::answer(level.store.get(&key, range)).await),
            };
            match asked {
                None => {}
                Some(Ok(Some(found))) => {
                    level.count(op, "hit");
                    if range.is_none() {
                        flag.store(true, Ordering::Relaxed);
                    }
                    return Ok(found);
                }
                Some(Ok(None)) => level.count(op, "miss"),
                Some(Err(e)) => level.read_failed(op, &key, &e),
            }
            if range.is_none() {
                flag.store(false, Ordering::Relaxed);
            }
            then.await
        })
    }
}

impl Origin for SharedFirst {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn fetch(&self) -> Fetching {
        // The origin's request starts only when awaited, after the shared store said no.
        let inner = self.inner.clone();
        self.first(None, Box::pin(async move { inner.fetch().await }))
    }

    fn fetch_range(&self, start: u64, end: u64) -> Fetching {
        let inner = self.inner.clone();
        self.first(
            Some((start, end)),
            Box::pin(async move { inner.fetch_range(start, end).await }),
        )
    }
}
