//! Single-flight downloads of blobs ("fills"). However many clients ask for an uncached digest,
//! one task fetches it from upstream into a temp file while hashing; every client, first or late,
//! reads that growing file (woken by a `watch` channel, never by polling). The task belongs to
//! the cache, not to a client: it finishes even when every client has gone. At the end the size
//! and digest are checked; only then do readers get their last bytes, and the file is renamed
//! into the store. On any failure the temp file is deleted and every reader ends in an error.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::blobs::{BlobStore, TempFile};
use crate::metrics::Metrics;
use crate::oci::{Digest, Hasher};
use crate::upstream::{UpstreamBody, UpstreamError};
use prometheus::IntCounter;

/// Bytes buffered before one write + hash step off the async threads.
const WRITE_BATCH: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
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

#[derive(Debug, Clone)]
pub enum FillState {
    Running,
    /// Size and digest checked: the bytes may be handed out in full.
    Verified,
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
    pub file: Arc<File>,
    progress: watch::Receiver<Progress>,
}

impl Fill {
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
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
    Hit {
        file: File,
        size: u64,
    },
    /// `joined`: the fill was already running for another client.
    Filling {
        fill: Arc<Fill>,
        joined: bool,
    },
}

pub struct Fills {
    store: BlobStore,
    read_timeout: Duration,
    finish_abandoned: bool,
    metrics: Arc<Metrics>,
    active: Mutex<HashMap<Digest, Arc<Fill>>>,
    /// Number of running fills, for shutdown to wait on.
    running: watch::Sender<usize>,
}

impl Fills {
    pub fn new(
        store: BlobStore,
        read_timeout: Duration,
        finish_abandoned: bool,
        metrics: Arc<Metrics>,
    ) -> Fills {
        Fills {
            store,
            read_timeout,
            finish_abandoned,
            metrics,
            active: Mutex::new(HashMap::new()),
            running: watch::Sender::new(0),
        }
    }

    /// Returns when no download is running.
    pub async fn wait_idle(&self) {
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
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

    /// A cached blob, the fill already running for it, or a new fill fetching from `source()`.
    /// `upstream` labels the bytes fetched in the metrics.
    pub fn get_or_start<F, Fut>(
        self: &Arc<Self>,
        digest: &Digest,
        upstream: &str,
        source: F,
    ) -> io::Result<Lookup>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + Send + 'static,
    {
        if let Some((file, size)) = self.store.open_blob(digest)? {
            return Ok(Lookup::Hit { file, size });
        }
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fill) = active.get(digest) {
            self.metrics.coalesced.with_label_values(&["blob"]).inc();
            return Ok(Lookup::Filling {
                fill: fill.clone(),
                joined: true,
            });
        }
        // A fill may have been published between the first look and taking the lock.
        if let Some((file, size)) = self.store.open_blob(digest)? {
            return Ok(Lookup::Hit { file, size });
        }
        let (temp, write, read) = self.store.temp_file(digest)?;
        let (tx, rx) = watch::channel(Progress {
            started: false,
            size: None,
            written: 0,
            state: FillState::Running,
        });
        let fill = Arc::new(Fill {
            digest: digest.clone(),
            file: Arc::new(read),
            progress: rx,
        });
        active.insert(digest.clone(), fill.clone());
        self.running.send_replace(active.len());
        drop(active);
        let fills = self.clone();
        let fut = source();
        let leader = fill.clone();
        let fetched = self.metrics.upstream_bytes.with_label_values(&[upstream]);
        tokio::spawn(async move { fills.lead(leader, temp, write, tx, fut, fetched).await });
        Ok(Lookup::Filling { fill, joined: false })
    }

    async fn lead(
        self: Arc<Self>,
        fill: Arc<Fill>,
        temp: TempFile,
        write: File,
        tx: watch::Sender<Progress>,
        source: impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>>,
        fetched: IntCounter,
    ) {
        let digest = fill.digest.clone();
        self.metrics.inflight_downloads.inc();
        let outcome = self.download(&fill, write, &tx, source, &fetched).await;
        self.metrics.inflight_downloads.dec();
        match outcome {
            Ok(size) => {
                tx.send_modify(|p| p.state = FillState::Verified);
                let store = self.store.clone();
                let d = digest.clone();
                match tokio::task::spawn_blocking(move || store.publish(temp, &d)).await {
                    Ok(Ok(())) => tracing::info!(%digest, size, "blob cached"),
                    Ok(Err(e)) => tracing::warn!(%digest, error = %e, "could not publish verified blob"),
                    Err(e) => tracing::warn!(%digest, error = %e, "publish task failed"),
                }
                self.remove(&digest);
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "blob download failed; nothing kept");
                self.metrics.failed_downloads.inc();
                if matches!(e, FillError::DigestMismatch { .. }) {
                    self.metrics.digest_mismatches.inc();
                }
                drop(temp);
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

    async fn download(
        &self,
        fill: &Arc<Fill>,
        mut file: File,
        tx: &watch::Sender<Progress>,
        source: impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>>,
        fetched: &IntCounter,
    ) -> Result<u64, FillError> {
        let digest = &fill.digest;
        let resp = source.await?;
        let size = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        tx.send_modify(|p| {
            p.started = true;
            p.size = size;
        });
        let mut body = resp.into_body();
        let mut hasher = Hasher::new(digest.algorithm());
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut written = 0u64;
        loop {
            let frame = match tokio::time::timeout(self.read_timeout, body.frame()).await {
                Err(_) => return Err(FillError::Stalled(self.read_timeout)),
                Ok(None) => None,
                Ok(Some(Err(e))) => return Err(FillError::Body(e.to_string())),
                Ok(Some(Ok(f))) => Some(f),
            };
            let done = frame.is_none();
            if let Some(data) = frame.and_then(|f| f.into_data().ok()) {
                let got = written + (pending_len + data.len()) as u64;
                if size.is_some_and(|want| got > want) {
                    return Err(FillError::SizeMismatch {
                        want: size.unwrap_or(0),
                        got,
                    });
                }
                pending_len += data.len();
                pending.push(data);
            }
            if pending_len >= WRITE_BATCH || (done && pending_len > 0) {
                let batch = std::mem::take(&mut pending);
                let (f, h) = tokio::task::spawn_blocking(move || -> io::Result<(File, Hasher)> {
                    for b in &batch {
                        file.write_all(b)?;
                        hasher.update(b);
                    }
                    Ok((file, hasher))
                })
                .await
                .map_err(io::Error::other)??;
                file = f;
                hasher = h;
                written += pending_len as u64;
                fetched.inc_by(pending_len as u64);
                pending_len = 0;
                tx.send_modify(|p| p.written = written);
            }
            if done {
                break;
            }
            // The map and this task hold the fill; anyone else is a reader.
            if !self.finish_abandoned && Arc::strong_count(fill) <= 2 {
                return Err(FillError::Abandoned);
            }
        }
        if let Some(want) = size {
            if want != written {
                return Err(FillError::SizeMismatch { want, got: written });
            }
        }
        let actual = hasher.finish();
        if &actual != digest {
            return Err(FillError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(io::Error::other)??;
        Ok(written)
    }
}
