//! One blob download, the leader's half of a fill: reserve the announced size within the disk
//! budget, stream the upstream body into the temp file in batches (written and hashed off the
//! async threads), publish progress to the fill's readers, and check size and digest at the end
//! (the fsync comes after, when the fill publishes).
//! Upstream trouble is an error; the cache's own trouble (no room, a failed write or sync) is not:
//! it ends the download as `Uncached`, and the fill's readers stream from upstream instead.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::blobs::TempFile;
use super::fill::{Fill, FillError, Fills, Progress, Uncached};
use super::index::Reservation;
use super::origin::Fetching;
use crate::oci::Hasher;

/// Bytes buffered before one write + hash step off the async threads.
const WRITE_BATCH: usize = 256 * 1024;

/// How a download ended when upstream behaved.
pub(super) enum Done {
    /// Size and digest checked; `file` still needs an fsync before it is published (done after
    /// readers got their last bytes, so they never wait for the disk).
    Verified {
        temp: TempFile,
        file: File,
        size: u64,
        reservation: Reservation,
    },
    Uncached(Uncached),
}

/// What a write batch hands back: the file and hasher, and how the write went.
type Written = (File, Hasher, io::Result<()>);

impl Fills {
    /// Takes a finished write batch back: the file and hasher return to `writer` and readers
    /// learn the new length at once. False when the write failed (counted and logged).
    fn landed(
        &self,
        out: Result<Written, tokio::task::JoinError>,
        upto: u64,
        writer: &mut Option<(File, Hasher)>,
        written: &mut u64,
        fill: &Fill,
        tx: &watch::Sender<Progress>,
    ) -> Result<bool, FillError> {
        let (file, hasher, result) = out.map_err(io::Error::other)?;
        if let Err(e) = result {
            self.write_failed(&fill.digest, &e);
            return Ok(false);
        }
        *writer = Some((file, hasher));
        fill.fetched.inc_by(upto - *written);
        *written = upto;
        tx.send_modify(|p| p.written = upto);
        Ok(true)
    }

    /// Grows `reservation` to `bytes` off the async threads.
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

    pub(super) async fn download(
        &self,
        fill: &Arc<Fill>,
        temp: Option<(TempFile, File)>,
        tx: &watch::Sender<Progress>,
        source: Fetching,
    ) -> Result<Done, FillError> {
        let digest = &fill.digest;
        let resp = source.await.map_err(FillError::Origin)?;
        let size = resp.size;
        let handoff = |resp| {
            *fill.handoff.lock().unwrap_or_else(|e| e.into_inner()) = Some(resp);
            tx.send_modify(|p| p.size = size);
        };
        let Some((temp, file)) = temp else {
            handoff(resp);
            return Ok(Done::Uncached(Uncached::WriteError));
        };
        let Some(mut reservation) = self.reserve(None, size.unwrap_or(0)).await else {
            handoff(resp);
            return Ok(Done::Uncached(Uncached::NoRoom));
        };
        tx.send_modify(|p| {
            p.started = true;
            p.size = size;
        });
        let mut body = resp.body;
        // The file and hasher travel to the writer thread and back; one batch is written while
        // the next one is read from upstream.
        let mut writer = Some((file, Hasher::new(digest.algorithm())));
        let mut in_flight: Option<(JoinHandle<Written>, u64)> = None;
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut submitted = 0u64;
        let mut written = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                // A finished write is published at once, so readers never wait on the next batch.
                back = async { (&mut in_flight.as_mut().expect("guarded by the if").0).await }, if in_flight.is_some() => {
                    let upto = in_flight.take().map_or(written, |(_, upto)| upto);
                    if !self.landed(back, upto, &mut writer, &mut written, fill, tx)? {
                        return Ok(Done::Uncached(Uncached::WriteError));
                    }
                    continue;
                }
                next = tokio::time::timeout(self.read_timeout, body.frame()) => next,
            };
            let frame = match next {
                Err(_) => return Err(FillError::Stalled(self.read_timeout)),
                Ok(None) => None,
                Ok(Some(Err(e))) => return Err(FillError::Body(e.to_string())),
                Ok(Some(Ok(f))) => Some(f),
            };
            let done = frame.is_none();
            if let Some(data) = frame.and_then(|f| f.into_data().ok()) {
                let got = submitted + (pending_len + data.len()) as u64;
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
                let total = submitted + pending_len as u64;
                if size.is_none() {
                    // No Content-Length: the reservation grows with the download.
                    match self.reserve(Some(reservation), total).await {
                        Some(r) => reservation = r,
                        None => return Ok(Done::Uncached(Uncached::NoRoom)),
                    }
                }
                if let Some((handle, upto)) = in_flight.take() {
                    if !self.landed(handle.await, upto, &mut writer, &mut written, fill, tx)? {
                        return Ok(Done::Uncached(Uncached::WriteError));
                    }
                }
                let batch = std::mem::take(&mut pending);
                let store = self.store.clone();
                let Some((mut file, mut hasher)) = writer.take() else {
                    return Err(FillError::Io(io::Error::other("writer lost")));
                };
                in_flight = Some((
                    tokio::task::spawn_blocking(move || {
                        let result = store.injected_failure().and_then(|()| {
                            for b in &batch {
                                file.write_all(b)?;
                                hasher.update(b);
                            }
                            Ok(())
                        });
                        (file, hasher, result)
                    }),
                    total,
                ));
                submitted = total;
                pending_len = 0;
            }
            if done {
                break;
            }
            // The map and this task hold the fill; anyone else is a reader.
            if !self.finish_abandoned && Arc::strong_count(fill) <= 2 {
                return Err(FillError::Abandoned);
            }
        }
        if let Some((handle, upto)) = in_flight.take() {
            if !self.landed(handle.await, upto, &mut writer, &mut written, fill, tx)? {
                return Ok(Done::Uncached(Uncached::WriteError));
            }
        }
        let Some((file, hasher)) = writer else {
            return Err(FillError::Io(io::Error::other("writer lost")));
        };
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
        Ok(Done::Verified {
            temp,
            file,
            size: written,
            reservation,
        })
    }
}
