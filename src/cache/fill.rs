//! Single-flight downloads of blobs ("fills"). However many clients ask for an uncached digest,
//! one task fetches it from upstream into a temp file while hashing; every client, first or late,
//! reads that growing file (woken by a `watch` channel, never by polling). The task belongs to
//! the cache, not to a client: it finishes even when every client has gone. Before streaming,
//! the download reserves its Content-Length within the disk budget (evicting if needed). At the
//! end the size and digest are checked; only then do readers get their last bytes, and the file
//! is published into the store with a lease that lasts as long as the fill's readers. On any
//! upstream failure the temp file is deleted and every reader ends in an error.
//!
//! When the cache cannot keep the blob (no room within the budget, or the disk refuses a
//! write) that is not the clients' problem: the fill turns `PassThrough`, the temp file is
//! dropped, and each reader streams the blob from upstream itself (`passthrough.rs`).
//!
//! This file owns the map of running fills and the leader task; the fill and its states are
//! `progress.rs`, the download itself `download.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::atomic::Staged;
use super::blobs::{BlobStore, CachedBlob};
use super::download::{Done, Downloader};
use super::index::{Admission, Index};
use super::key::{on_disk, Key};
use super::lease::{Lease, Reservation};
use super::origin::{Fetching, Origin};
use super::progress::FillState;
use super::shared::{blob_key, Level, SharedFirst};
use crate::metrics::{Metrics, RequestKind};
use crate::oci::Digest;

use super::progress::{Fill, FillError, Progress};

pub enum Lookup {
    Hit(CachedBlob),
    /// `joined`: the fill was already running for another client.
    Filling {
        fill: Arc<Fill>,
        joined: bool,
    },
}

pub(super) struct Fills {
    download: Downloader,
    active: Mutex<HashMap<Digest, Arc<Fill>>>,
    /// Number of running fills, for shutdown to wait on.
    running: watch::Sender<usize>,
    /// The shared store behind the cache directory, if any (`shared.rs`).
    shared: Option<Arc<Level>>,
}

impl Fills {
    /// Returns when no download is running.
    pub(super) async fn wait_idle(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub(super) fn new(
        store: BlobStore,
        index: Arc<Index>,
        read_timeout: Duration,
        finish_abandoned: bool,
        metrics: Arc<Metrics>,
        shared: Option<Arc<Level>>,
    ) -> Fills {
        Fills {
            download: Downloader {
                store,
                index,
                read_timeout,
                finish_abandoned,
                metrics,
            },
            active: Mutex::new(HashMap::new()),
            running: watch::Sender::new(0),
            shared,
        }
    }

    pub(super) fn store(&self) -> &BlobStore {
        &self.download.store
    }

    fn metrics(&self) -> &Metrics {
        &self.download.metrics
    }

    /// The fill in progress for `digest`, if any.
    pub(super) fn active(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// The size of a cached blob, without counting as an access.
    pub(super) fn cached_size(&self, digest: &Digest) -> Option<u64> {
        self.download.index.len_of(&Key::blob(digest))
    }

    /// A cached blob opened for reading under a lease, if the index has it and its file is there.
    pub(super) fn open_cached(&self, digest: &Digest) -> io::Result<Option<CachedBlob>> {
        let key = Key::blob(digest);
        let index = &self.download.index;
        let Some((lease, _)) = index.lease(&key) else {
            return Ok(None);
        };
        match self.store().open_blob(digest)? {
            Some((file, size)) => Ok(Some(CachedBlob::new(file, size, lease))),
            None => {
                drop(lease);
                index.forget(&key);
                Ok(None)
            }
        }
    }

    /// A cached blob, the fill already running for it, or a new fill fetching from `origin`
    /// (asked again by pass-through readers).
    pub(super) fn get_or_start(
        self: &Arc<Self>,
        digest: &Digest,
        origin: Arc<dyn Origin>,
    ) -> io::Result<Lookup> {
        if let Some(level) = &self.shared {
            level.used_blob(digest);
        }
        if let Some(hit) = self.open_cached(digest)? {
            return Ok(Lookup::Hit(hit));
        }
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fill) = active.get(digest) {
            self.metrics().request.coalesced(RequestKind::Blob);
            return Ok(Lookup::Filling {
                fill: fill.clone(),
                joined: true,
            });
        }
        // A fill may have been published between the first look and taking the lock.
        if let Some(hit) = self.open_cached(digest)? {
            return Ok(Lookup::Hit(hit));
        }
        let (temp, read) = match self.store().temp_file(digest) {
            Ok((temp, write, read)) => (Some((temp, write)), Some(read)),
            Err(e) => {
                self.download.write_failed(digest, &e);
                (None, None)
            }
        };
        let shared = self
            .shared
            .as_ref()
            .map(|l| l.in_front_of(digest, origin.clone()));
        let origin: Arc<dyn Origin> = match &shared {
            Some(s) => s.clone(),
            None => origin,
        };
        let fetched = self.metrics().upstream.bytes(origin.name());
        let (fill, tx) = Fill::new(
            digest.clone(),
            read,
            origin.clone(),
            self.download.read_timeout,
            fetched,
            shared.as_ref().map(|s| s.source_flag()),
        );
        active.insert(digest.clone(), fill.clone());
        self.running.send_replace(active.len());
        drop(active);
        let fills = self.clone();
        let fut = origin.fetch();
        let leader = fill.clone();
        tokio::spawn(async move { fills.lead(leader, temp, tx, fut, shared).await });
        Ok(Lookup::Filling { fill, joined: false })
    }

    async fn lead(
        self: Arc<Self>,
        fill: Arc<Fill>,
        temp: Option<(Staged, File)>,
        tx: watch::Sender<Progress>,
        source: Fetching,
        shared: Option<Arc<SharedFirst>>,
    ) {
        let digest = fill.digest.clone();
        let metrics = self.metrics();
        metrics.cache.inflight_downloads.inc();
        let outcome = self.download.run(&fill, temp, &tx, source).await;
        metrics.cache.inflight_downloads.dec();
        match outcome {
            Ok(Done::Verified {
                temp,
                file,
                size,
                reservation,
            }) => {
                tx.send_modify(|p| p.state = FillState::Verified);
                fill.keep(self.publish(&digest, temp, file, size, reservation).await);
                // Before the fill ends, so shutdown, waiting for fills and then uploads, waits
                // for this one too.
                if let Some(s) = shared.filter(|s| !s.came_from_shared()) {
                    self.share(&digest, s.level());
                }
                self.remove(&digest);
            }
            Ok(Done::Uncached(why)) => {
                metrics.cache.uncached(why);
                tracing::info!(%digest, reason = why.as_str(), "blob not kept; readers stream it from upstream");
                self.remove(&digest);
                tx.send_modify(|p| {
                    p.started = true;
                    p.state = FillState::PassThrough(why);
                });
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "blob download failed; nothing kept");
                metrics.cache.failed_downloads.inc();
                if matches!(e, FillError::DigestMismatch { .. }) {
                    metrics.cache.digest_mismatches.inc();
                    if let Some(s) = shared.filter(|s| s.came_from_shared()) {
                        tracing::warn!(%digest, "the shared store's copy is corrupt; deleting it");
                        s.level().delete(blob_key(&digest));
                    }
                }
                self.remove(&digest);
                tx.send_modify(|p| {
                    p.started = true;
                    p.state = FillState::Failed(Arc::new(e));
                });
            }
        }
    }

    /// Syncs a verified download and places it in the store; the lease that keeps it for the
    /// fill's readers, or None when it was not kept.
    async fn publish(
        &self,
        digest: &Digest,
        temp: Staged,
        file: File,
        size: u64,
        reservation: Reservation,
    ) -> Option<Lease> {
        let (store, index, d) = (self.store().clone(), self.download.index.clone(), digest.clone());
        let published = tokio::task::spawn_blocking(move || -> io::Result<Option<Lease>> {
            // Durable before it gets a real name; readers already have their bytes.
            file.sync_all()?;
            drop(file);
            let key = Key::blob(&d);
            let placed = index.publish(key, size, on_disk(size), Some(reservation), true, || {
                store.place(temp, &d)
            })?;
            if let Err(e) = store.sync_dir(&d) {
                tracing::warn!(digest = %d, error = %e, "cannot sync the blob directory");
            }
            Ok(match placed {
                Admission::Kept(lease) => lease,
                Admission::NoRoom => None,
            })
        })
        .await;
        match published {
            Ok(Ok(lease)) => {
                tracing::info!(%digest, size, "blob cached");
                lease
            }
            Ok(Err(e)) => {
                tracing::warn!(%digest, error = %e, "could not publish verified blob");
                None
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "publish task failed");
                None
            }
        }
    }

    /// Uploads a blob just kept to the shared store, holding it from eviction meanwhile.
    pub(super) fn share(&self, digest: &Digest, level: &Arc<Level>) {
        match self.open_cached(digest) {
            Ok(Some(blob)) => match blob.file.try_clone() {
                Ok(file) => level.put_blob(digest, file, blob.size, blob),
                Err(e) => tracing::warn!(%digest, error = %e, "cannot reopen a blob for the shared store"),
            },
            Ok(None) => tracing::debug!(%digest, "blob not kept locally; not uploaded"),
            Err(e) => tracing::warn!(%digest, error = %e, "cannot open a blob for the shared store"),
        }
    }

    fn remove(&self, digest: &Digest) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.remove(digest);
        self.running.send_replace(active.len());
    }
}
