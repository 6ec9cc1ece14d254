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

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::watch;

use super::blobs::{BlobStore, TempFile};
use super::download::Done;
use super::index::{on_disk, Admission, Index, Key, Lease};
use super::origin::{Fetched, Fetching, Origin, OriginError};
use super::reader::CachedBlob;
use crate::metrics::{Metrics, RequestKind};
use crate::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// The origin failed (classified by whoever made the origin).
    #[error("{0}")]
    Origin(OriginError),
    #[error("upstream sent content with digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upstream sent {got} bytes where it announced {want}")]
    SizeMismatch { want: u64, got: u64 },
    #[error("upstream sent nothing for {0:?}")]
    Stalled(Duration),
    #[error("upstream body broke off: {0}")]
    Body(String),
    #[error("cache I/O: {0}")]
    Io(#[from] io::Error),
    #[error("every client left and fetch.finish_abandoned is off")]
    Abandoned,
}

pub use crate::metrics::Uncached;

#[derive(Debug, Clone)]
pub enum FillState {
    Running,
    /// Size and digest checked: the bytes may be handed out in full.
    Verified,
    /// Not kept: readers continue from upstream directly.
    PassThrough(Uncached),
    Failed(Arc<FillError>),
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Upstream answered; `size` is its Content-Length if it sent one.
    pub started: bool,
    pub size: Option<u64>,
    pub written: u64,
    pub state: FillState,
}

impl Progress {
    pub fn is_terminal(&self) -> bool {
        !matches!(self.state, FillState::Running)
    }
}

/// A download in progress that readers can follow.
pub struct Fill {
    pub digest: Digest,
    /// Read handle of the temp file; None when none could be created.
    file: Option<Arc<File>>,
    progress: watch::Receiver<Progress>,
    origin: Arc<dyn Origin>,
    /// The leader's upstream response when it gave up before reading any of it, for the first
    /// pass-through reader.
    pub(super) handoff: Mutex<Option<Fetched>>,
    /// Taken when the blob is published: keeps it from eviction while readers follow the fill.
    lease: Mutex<Option<Lease>>,
    pub(super) read_timeout: Duration,
    pub(super) fetched: IntCounter,
}

impl Fill {
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    pub(super) fn file(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    /// An upstream response for a pass-through reader: the leader's unread one, else a new one.
    pub(super) async fn upstream(&self) -> Result<Fetched, OriginError> {
        let handed = self.handoff.lock().unwrap_or_else(|e| e.into_inner()).take();
        match handed {
            Some(r) => Ok(r),
            None => self.origin.fetch().await,
        }
    }

    /// Waits until upstream answered (or the fill failed) and returns that moment's progress.
    pub async fn started(&self) -> Progress {
        let mut rx = self.progress.clone();
        let p = rx
            .wait_for(|p| p.started || p.is_terminal())
            .await
            .map(|p| p.clone());
        p.unwrap_or_else(|_| lost())
    }
}

fn lost() -> Progress {
    Progress {
        started: true,
        size: None,
        written: 0,
        state: FillState::Failed(Arc::new(FillError::Io(io::Error::other("download task ended")))),
    }
}

pub enum Lookup {
    Hit(CachedBlob),
    /// `joined`: the fill was already running for another client.
    Filling {
        fill: Arc<Fill>,
        joined: bool,
    },
}

pub struct Fills {
    pub(super) store: BlobStore,
    pub(super) index: Arc<Index>,
    pub(super) read_timeout: Duration,
    pub(super) finish_abandoned: bool,
    pub(super) metrics: Arc<Metrics>,
    active: Mutex<HashMap<Digest, Arc<Fill>>>,
    /// Number of running fills, for shutdown to wait on.
    running: watch::Sender<usize>,
}

impl Fills {
    /// Returns when no download is running.
    pub async fn wait_idle(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub fn new(
        store: BlobStore,
        index: Arc<Index>,
        read_timeout: Duration,
        finish_abandoned: bool,
        metrics: Arc<Metrics>,
    ) -> Fills {
        Fills {
            store,
            index,
            read_timeout,
            finish_abandoned,
            metrics,
            active: Mutex::new(HashMap::new()),
            running: watch::Sender::new(0),
        }
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The fill in progress for `digest`, if any.
    pub fn active(&self, digest: &Digest) -> Option<Arc<Fill>> {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// The size of a cached blob, without counting as an access.
    pub fn cached_size(&self, digest: &Digest) -> Option<u64> {
        self.index.len_of(&Key::blob(digest))
    }

    /// A cached blob opened for reading under a lease, if the index has it and its file is there.
    fn open_cached(&self, digest: &Digest) -> io::Result<Option<CachedBlob>> {
        let key = Key::blob(digest);
        let Some((lease, _)) = self.index.lease(&key) else {
            return Ok(None);
        };
        match self.store.open_blob(digest)? {
            Some((file, size)) => Ok(Some(CachedBlob::new(file, size, lease))),
            None => {
                drop(lease);
                self.index.forget(&key);
                Ok(None)
            }
        }
    }

    /// A cached blob, the fill already running for it, or a new fill fetching from `origin`
    /// (asked again by pass-through readers).
    pub fn get_or_start(self: &Arc<Self>, digest: &Digest, origin: Arc<dyn Origin>) -> io::Result<Lookup> {
        if let Some(hit) = self.open_cached(digest)? {
            return Ok(Lookup::Hit(hit));
        }
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fill) = active.get(digest) {
            self.metrics.request.coalesced(RequestKind::Blob);
            return Ok(Lookup::Filling {
                fill: fill.clone(),
                joined: true,
            });
        }
        // A fill may have been published between the first look and taking the lock.
        if let Some(hit) = self.open_cached(digest)? {
            return Ok(Lookup::Hit(hit));
        }
        let temp = match self.store.temp_file(digest) {
            Ok((temp, write, read)) => Some((temp, write, read)),
            Err(e) => {
                self.write_failed(digest, &e);
                None
            }
        };
        let (tx, rx) = watch::channel(Progress {
            started: false,
            size: None,
            written: 0,
            state: FillState::Running,
        });
        let fetched = self.metrics.upstream.bytes(origin.name());
        let (temp, file) = match temp {
            Some((t, w, r)) => (Some((t, w)), Some(Arc::new(r))),
            None => (None, None),
        };
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            file,
            progress: rx,
            origin: origin.clone(),
            handoff: Mutex::new(None),
            lease: Mutex::new(None),
            read_timeout: self.read_timeout,
            fetched,
        });
        active.insert(digest.clone(), fill.clone());
        self.running.send_replace(active.len());
        drop(active);
        let fills = self.clone();
        let fut = origin.fetch();
        let leader = fill.clone();
        tokio::spawn(async move { fills.lead(leader, temp, tx, fut).await });
        Ok(Lookup::Filling { fill, joined: false })
    }

    pub(super) fn write_failed(&self, digest: &Digest, e: &io::Error) {
        self.metrics.cache.write_errors.inc();
        tracing::warn!(%digest, error = %e, "cannot write to the cache; the blob streams from upstream without being kept");
    }

    async fn lead(
        self: Arc<Self>,
        fill: Arc<Fill>,
        temp: Option<(TempFile, File)>,
        tx: watch::Sender<Progress>,
        source: Fetching,
    ) {
        let digest = fill.digest.clone();
        self.metrics.cache.inflight_downloads.inc();
        let outcome = self.download(&fill, temp, &tx, source).await;
        self.metrics.cache.inflight_downloads.dec();
        match outcome {
            Ok(Done::Verified {
                temp,
                file,
                size,
                reservation,
            }) => {
                tx.send_modify(|p| p.state = FillState::Verified);
                let (store, index, d) = (self.store.clone(), self.index.clone(), digest.clone());
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
                        *fill.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
                        tracing::info!(%digest, size, "blob cached");
                    }
                    Ok(Err(e)) => tracing::warn!(%digest, error = %e, "could not publish verified blob"),
                    Err(e) => tracing::warn!(%digest, error = %e, "publish task failed"),
                }
                self.remove(&digest);
            }
            Ok(Done::Uncached(why)) => {
                self.metrics.cache.uncached(why);
                tracing::info!(%digest, reason = why.as_str(), "blob not kept; readers stream it from upstream");
                self.remove(&digest);
                tx.send_modify(|p| {
                    p.started = true;
                    p.state = FillState::PassThrough(why);
                });
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "blob download failed; nothing kept");
                self.metrics.cache.failed_downloads.inc();
                if matches!(e, FillError::DigestMismatch { .. }) {
                    self.metrics.cache.digest_mismatches.inc();
                }
                self.remove(&digest);
                tx.send_modify(|p| {
                    p.started = true;
                    p.state = FillState::Failed(Arc::new(e));
                });
            }
        }
    }

    fn remove(&self, digest: &Digest) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.remove(digest);
        self.running.send_replace(active.len());
    }
}
