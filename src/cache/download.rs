//! One blob download, the leader's half of a fill: reserve the announced size within the disk
//! budget, stream the upstream body into the temp file in batches (written and hashed off the
//! async threads, side by side, one batch written and hashed while the next is read), publish
//! progress to the fill's readers as soon as a batch is written, and check size and digest at
//! the end (the fsync comes after, when the fill publishes). A ranged fetch of the blob goes
//! first (`priority.rs`). `fill.rs` runs a `Downloader`; this file knows the fill only as
//! `progress.rs` describes it.
//! Upstream trouble is an error; the cache's own trouble (no room, a failed write or sync) is not:
//! it ends the download as `Uncached`, and the fill's readers stream from upstream instead.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use super::atomic::Staged;
use super::blobs::BlobStore;
use super::index::Index;
use super::lease::Reservation;
use super::origin::{Fetching, OriginBody};
use super::priority;
use super::progress::{Fill, FillError, Progress, Uncached};
use crate::metrics::Metrics;
use crate::oci::Hasher;

/// Bytes buffered before one write + hash step off the async threads: the first batch is small,
/// so readers get their first bytes soon; each next one doubles, up to the last size, so a large
/// blob costs few hops to the blocking pool.
const FIRST_BATCH: usize = 64 * 1024;
const WRITE_BATCH: usize = 2 * 1024 * 1024;

/// How a download ended when upstream behaved.
pub(super) enum Done {
    /// Size and digest checked; `file` still needs an fsync before it is published (done after
    /// readers got their last bytes, so they never wait for the disk).
    Verified {
        temp: Staged,
        file: File,
        size: u64,
        reservation: Reservation,
    },
    Uncached(Uncached),
}

/// What a download needs of the cache.
pub(super) struct Downloader {
    pub store: BlobStore,
    pub index: Arc<Index>,
    pub read_timeout: Duration,
    pub finish_abandoned: bool,
    pub metrics: Arc<Metrics>,
}

impl Downloader {
    pub(super) fn write_failed(&self, digest: &crate::oci::Digest, e: &io::Error) {
        self.metrics.cache.write_errors.inc();
        tracing::warn!(%digest, error = %e, "cannot write to the cache; the blob streams from upstream without being kept");
    }

    /// Reserves `bytes`, or grows `reservation` to them, off the async threads.
    async fn reserve(&self, reservation: Option<Reservation>, bytes: u64) -> Option<Reservation> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || match reservation {
            None => index.reserve(bytes).ok(),
            Some(mut r) => index.grow(&mut r, bytes).ok().map(|()| r),
        })
        .await
        .ok()
        .flatten()
    }

    /// Downloads `fill`'s blob from `source` into `temp` (None: no temp file could be made).
    pub(super) async fn run(
        &self,
        fill: &Arc<Fill>,
        temp: Option<(Staged, File)>,
        tx: &watch::Sender<Progress>,
        source: Fetching,
    ) -> Result<Done, FillError> {
        let resp = source.await.map_err(FillError::Origin)?;
        let size = resp.size;
        let uncached = |resp, why| {
            fill.hand_off(resp);
            tx.send_modify(|p| p.size = size);
            Ok(Done::Uncached(why))
        };
        let Some((temp, file)) = temp else {
            return uncached(resp, Uncached::WriteError);
        };
        let Some(reservation) = self.reserve(None, size.unwrap_or(0)).await else {
            return uncached(resp, Uncached::NoRoom);
        };
        tx.send_modify(|p| {
            p.started = true;
            p.size = size;
        });
        let mut batches = Batches::new(self, fill, tx, file);
        let reservation = match self.stream(&mut batches, reservation, resp.body, size).await? {
            Ok(r) => r,
            Err(why) => return Ok(Done::Uncached(why)),
        };
        let Some((file, hasher, written)) = batches.finish().await? else {
            return Ok(Done::Uncached(Uncached::WriteError));
        };
        if let Some(want) = size.filter(|want| *want != written) {
            return Err(FillError::SizeMismatch { want, got: written });
        }
        let actual = hasher.finish();
        if actual != fill.digest {
            return Err(FillError::DigestMismatch {
                expected: fill.digest.clone(),
                actual,
            });
        }
        Ok(Done::Verified {
            temp,
            file,
            size: written,
            reservation,
        })
    }

    /// Reads the body into write batches until it ends. The inner `Err` says why the cache gave
    /// up keeping the blob; otherwise the reservation comes back, grown to the body's size.
    async fn stream(
        &self,
        batches: &mut Batches<'_>,
        mut reservation: Reservation,
        mut body: OriginBody,
        size: Option<u64>,
    ) -> Result<Result<Reservation, Uncached>, FillError> {
        let mut ranges = priority::Yielding::new(&batches.fill.ranges);
        loop {
            let next = tokio::select! {
                biased;
                // A finished write is published at once, so readers never wait on the next batch.
                back = async {
                    match batches.in_flight.as_mut() {
                        Some((handle, _)) => handle.await,
                        None => std::future::pending().await,
                    }
                }, if batches.in_flight.is_some() => {
                    if !batches.landed(back)? {
                        return Ok(Err(Uncached::WriteError));
                    }
                    continue;
                }
                next = async {
                    ranges.wait().await;
                    tokio::time::timeout(self.read_timeout, body.frame()).await
                } => next,
            };
            let frame = match next {
                Err(_) => return Err(FillError::Stalled(self.read_timeout)),
                Ok(None) => None,
                Ok(Some(Err(e))) => return Err(FillError::Body(e.to_string())),
                Ok(Some(Ok(f))) => Some(f),
            };
            let done = frame.is_none();
            if let Some(data) = frame.and_then(|f| f.into_data().ok()) {
                let got = batches.buffered() + data.len() as u64;
                if let Some(want) = size.filter(|want| got > *want) {
                    return Err(FillError::SizeMismatch { want, got });
                }
                batches.push(data);
            }
            if batches.ready(done) {
                if size.is_none() {
                    // No Content-Length: the reservation grows with the download.
                    match self.reserve(Some(reservation), batches.buffered()).await {
                        Some(r) => reservation = r,
                        None => return Ok(Err(Uncached::NoRoom)),
                    }
                }
                if !batches.submit().await? {
                    return Ok(Err(Uncached::WriteError));
                }
            }
            if done {
                return Ok(Ok(reservation));
            }
            // The map and this task hold the fill; anyone else is a reader.
            if !self.finish_abandoned && Arc::strong_count(batches.fill) <= 2 {
                return Err(FillError::Abandoned);
            }
        }
    }
}

/// What a write batch hands back: the file, how the write went, and the batch.
type Written = (File, io::Result<()>, Vec<Bytes>);

/// The write side of a download. The file and the hasher each travel to a blocking thread with
/// a batch and come back with it, so a batch is written and hashed at once on two threads; at
/// most one batch is in flight. Readers get a batch when it is written: its hash is only needed
/// for the blob's last byte, which waits for the whole digest anyway.
struct Batches<'a> {
    dl: &'a Downloader,
    fill: &'a Arc<Fill>,
    tx: &'a watch::Sender<Progress>,
    /// Home unless a batch is being written.
    writer: Option<File>,
    /// The batch being written, and the length the file has once it is.
    in_flight: Option<(JoinHandle<Written>, u64)>,
    hashing: Hashing,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// The size at which the next batch is due.
    batch: usize,
    /// Bytes handed to writes so far, and bytes written (and shown to readers).
    submitted: u64,
    written: u64,
}

impl<'a> Batches<'a> {
    fn new(dl: &'a Downloader, fill: &'a Arc<Fill>, tx: &'a watch::Sender<Progress>, file: File) -> Self {
        Batches {
            dl,
            fill,
            tx,
            writer: Some(file),
            in_flight: None,
            hashing: Hashing::Home(Box::new(Hasher::new(fill.digest.algorithm()))),
            pending: Vec::new(),
            pending_len: 0,
            batch: FIRST_BATCH,
            submitted: 0,
            written: 0,
        }
    }

    /// Bytes received so far, written or not.
    fn buffered(&self) -> u64 {
        self.submitted + self.pending_len as u64
    }

    fn push(&mut self, data: Bytes) {
        self.pending_len += data.len();
        self.pending.push(data);
    }

    /// Whether a batch is due: a full one, or the rest at the end of the body.
    fn ready(&self, done: bool) -> bool {
        self.pending_len >= self.batch || (done && self.pending_len > 0)
    }

    /// Takes the batch in flight back: the file comes home and readers learn the new length at
    /// once. False when the write failed (counted and logged).
    fn landed(&mut self, out: Result<Written, JoinError>) -> Result<bool, FillError> {
        let upto = self.in_flight.take().map_or(self.written, |(_, upto)| upto);
        let (file, result, batch) = out.map_err(io::Error::other)?;
        if let Err(e) = result {
            self.dl.write_failed(&self.fill.digest, &e);
            return Ok(false);
        }
        self.writer = Some(file);
        self.fill.count_fetched(upto - self.written);
        // Readers wake at the old length: they take these bytes from memory, not the file.
        self.fill.landed(self.written, batch);
        self.written = upto;
        self.tx.send_modify(|p| p.written = upto);
        Ok(true)
    }

    /// Waits for the batch in flight, if any; false when its write failed.
    async fn settle(&mut self) -> Result<bool, FillError> {
        match self.in_flight.as_mut() {
            Some((handle, _)) => {
                let out = handle.await;
                self.landed(out)
            }
            None => Ok(true),
        }
    }

    /// Sends the pending bytes to be written (after the previous batch landed); false when a
    /// write failed.
    async fn submit(&mut self) -> Result<bool, FillError> {
        if !self.settle().await? {
            return Ok(false);
        }
        let total = self.buffered();
        let batch = std::mem::take(&mut self.pending);
        let store = self.dl.store.clone();
        let Some(mut file) = self.writer.take() else {
            return Err(FillError::Io(io::Error::other("writer lost")));
        };
        let mut hasher = self.take_hasher().await?;
        let to_hash = batch.clone();
        self.hashing = Hashing::Busy(tokio::task::spawn_blocking(move || {
            for b in &to_hash {
                hasher.update(b);
            }
            hasher
        }));
        let write = tokio::task::spawn_blocking(move || {
            let result = store.injected_failure().and_then(|()| {
                for b in &batch {
                    file.write_all(b)?;
                }
                Ok(())
            });
            (file, result, batch)
        });
        self.in_flight = Some((write, total));
        self.submitted = total;
        self.pending_len = 0;
        self.batch = (self.batch * 2).min(WRITE_BATCH);
        Ok(true)
    }

    /// Waits for the last batch; the file, its hasher and its length, or None when a write
    /// failed.
    async fn finish(mut self) -> Result<Option<(File, Hasher, u64)>, FillError> {
        if !self.settle().await? {
            return Ok(None);
        }
        let hasher = self.take_hasher().await?;
        match self.writer.take() {
            Some(file) => Ok(Some((file, hasher, self.written))),
            None => Err(FillError::Io(io::Error::other("writer lost"))),
        }
    }

    /// The hasher, once the batch it is hashing is done.
    async fn take_hasher(&mut self) -> Result<Hasher, FillError> {
        match std::mem::replace(&mut self.hashing, Hashing::Taken) {
            Hashing::Home(h) => Ok(*h),
            Hashing::Busy(task) => Ok(task.await.map_err(io::Error::other)?),
            Hashing::Taken => Err(FillError::Io(io::Error::other("hasher lost"))),
        }
    }
}

/// Where the download's hasher is.
enum Hashing {
    Home(Box<Hasher>),
    /// Hashing a batch in the blocking pool; the task gives it back.
    Busy(JoinHandle<Hasher>),
    /// Taken for the next batch or the end.
    Taken,
}
