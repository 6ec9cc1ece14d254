//! Response bodies that stream a byte range of a blob from disk: from a complete cached file
//! (`CachedBlob`, held by its lease; read on demand by `file_body.rs`), or from a fill's growing
//! temp file, waiting for bytes that have not arrived yet. A reader of a fill never hands out a
//! blob's last byte before the fill is verified, and a failed fill ends the body with an error,
//! so a client can never take a short or corrupt body for a whole one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::ahead;
use super::blobs::CachedBlob;
use super::file_body::{read_at, FileBody};
use super::passthrough;
use super::progress::{Fill, FillState, Progress};
use crate::splice::Splice;

/// The most a reader of a fill reads at once (it reads what has arrived, up to this).
const READ_CHUNK: usize = 512 * 1024;

/// Where the bytes come from.
pub enum Source {
    Complete(CachedBlob),
    Filling(Arc<Fill>),
}

/// A blob response's body: an `Err` frame aborts the response.
pub struct BlobBody(Inner);

enum Inner {
    /// A complete file, read as the connection asks for it.
    File(FileBody),
    /// Fed by a reader task that follows a fill.
    Pumped(Pumped),
}

struct Pumped {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: Option<u64>,
}

impl BlobBody {
    /// Streams bytes `start..end` (`end` = None: until the fill ends, size unknown).
    /// A complete file's bytes go out with sendfile when the connection offers `splice`.
    pub fn spawn(source: Source, start: u64, end: Option<u64>, splice: Option<Splice>) -> BlobBody {
        let source = match (source, end) {
            (Source::Complete(blob), Some(end)) if end <= blob.size => {
                return BlobBody(Inner::File(FileBody::new(blob, start, end, splice)));
            }
            (source, _) => source,
        };
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            if let Err(e) = pump(&source, start, end, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        BlobBody(Inner::Pumped(Pumped {
            rx,
            remaining: end.map(|e| e - start),
        }))
    }
}

impl Body for BlobBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match &mut self.get_mut().0 {
            Inner::File(f) => Pin::new(f).poll_frame(cx),
            Inner::Pumped(p) => Pin::new(p).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::File(f) => f.is_end_stream(),
            Inner::Pumped(p) => p.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::File(f) => f.size_hint(),
            Inner::Pumped(p) => p.size_hint(),
        }
    }
}

impl Body for Pumped {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(r) = self.remaining.as_mut() {
                    *r = r.saturating_sub(b.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Waits for the fill's progress to satisfy `ready`; None when the client went away first, so a
/// reader never keeps a fill (and its download, with `finish_abandoned` off) alive for nobody.
async fn wait(
    fill: &Fill,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    ready: impl FnMut(&Progress) -> bool,
) -> io::Result<Option<Progress>> {
    let mut rx = fill.progress();
    tokio::select! {
        p = rx.wait_for(ready) => match p {
            Ok(p) => Ok(Some(p.clone())),
            Err(_) => Err(io::Error::other("download task ended")),
        },
        _ = tx.closed() => Ok(None),
    }
}

/// Up to `n` bytes at `pos`: from the batch the download wrote last when they are in it (a
/// reader keeping up with the download), else from the file.
async fn next_chunk(
    source: &Source,
    file: Option<&Arc<std::fs::File>>,
    pos: u64,
    n: usize,
) -> io::Result<Bytes> {
    if let Some(chunk) = match source {
        Source::Filling(fill) => fill.landed_bytes(pos, n),
        Source::Complete(_) => None,
    } {
        return Ok(chunk);
    }
    let f = file.ok_or_else(|| io::Error::other("the download has no file to read"))?;
    // Bytes just written are in the page cache: usually read here, without a hop.
    read_at(f, pos, n).await
}

async fn pump(
    source: &Source,
    start: u64,
    end: Option<u64>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let file = match source {
        Source::Complete(c) => Some(c.file.clone()),
        Source::Filling(fill) => fill.file(),
    };
    if let (Source::Filling(fill), Some(end)) = (source, end) {
        if ahead::far_ahead(fill, start) && ahead::stream(fill, start, end, tx).await? {
            return Ok(());
        }
    }
    let mut pos = start;
    loop {
        if end.is_some_and(|e| pos >= e) {
            return Ok(());
        }
        let (avail, last_allowed) = match source {
            Source::Complete(_) => (end.unwrap_or(pos), true),
            Source::Filling(fill) => {
                let Some(p) = wait(fill, tx, |p| p.written > pos || p.is_terminal()).await? else {
                    return Ok(()); // client went away
                };
                match &p.state {
                    FillState::Failed(e) => return Err(io::Error::other(e.to_string())),
                    FillState::PassThrough(_) => return passthrough::stream(fill, pos, end, tx).await,
                    FillState::Verified if p.written <= pos => {
                        return match end {
                            None => Ok(()),
                            Some(_) => Err(io::Error::other("range beyond the end of the blob")),
                        }
                    }
                    _ => {}
                }
                let verified = matches!(p.state, FillState::Verified);
                (
                    end.map_or(p.written, |e| e.min(p.written)),
                    verified || p.size.is_none_or(|s| Some(s) != end),
                )
            }
        };
        let mut n = (avail - pos).min(READ_CHUNK as u64);
        if !last_allowed && pos + n == end.unwrap_or(u64::MAX) {
            // The blob's final bytes wait for verification.
            if let Source::Filling(fill) = source {
                let Some(p) = wait(fill, tx, Progress::is_terminal).await? else {
                    return Ok(()); // client went away
                };
                match &p.state {
                    FillState::Failed(e) => return Err(io::Error::other(e.to_string())),
                    FillState::PassThrough(_) => return passthrough::stream(fill, pos, end, tx).await,
                    _ => {}
                }
            }
            n = (avail - pos).min(READ_CHUNK as u64);
        }
        if n == 0 {
            return Ok(());
        }
        let chunk = next_chunk(source, file.as_ref(), pos, n as usize).await?;
        pos += chunk.len() as u64;
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(()); // client went away
        }
    }
}
