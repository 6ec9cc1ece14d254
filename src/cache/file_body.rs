//! The body of a response that serves a complete cached blob (whole or a range), read on demand:
//! a chunk is read only when the connection asks for the next one, so a slow client holds one
//! chunk and no thread, and a thousand of them cost a thousand small buffers, not a thousand
//! blocked threads. A chunk in the page cache is read on the async thread at once (`preadv2`
//! with `RWF_NOWAIT`, which fails instead of waiting for the disk); only a chunk that needs the
//! disk goes to the blocking pool, and then the next chunk is read ahead the same way while the
//! client takes the current one. Chunks grow (up to 1 MiB) while the client takes them as fast
//! as they come, after a first 100 ms in small chunks, and shrink (down to 16 KiB) while it is
//! slow, so fast clients pay few reads per gigabyte and slow ones hold little memory.
//!
//! On a plain HTTP/1.1 connection (a `Splice` handle) a chunk in the page cache is not read at
//! all: it is queued for `sendfile` in segments of up to 2 MiB and the connection gets stand-ins
//! (`splice.rs`), so the kernel sends the file's pages and the body holds no bytes, whatever the
//! client's speed. A segment is queued when its first and last pages are cached (`RWF_NOWAIT`
//! probes); otherwise the chunk is read in the blocking pool as above, which brings the file in.
//! The blob's lease is held by the body until the client has it all or leaves.

use std::fs::File;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use rustix::io::{preadv2, Errno, ReadWriteFlags};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::blobs::CachedBlob;
use crate::splice::{Splice, SEGMENT_MAX};

const MIN_CHUNK: usize = 16 * 1024;
const FIRST_CHUNK: usize = 32 * 1024;
const MAX_CHUNK: usize = 1024 * 1024;
/// A client that asks for the next chunk sooner than this after the last takes them as fast as
/// they come: the chunk doubles.
const FAST: Duration = Duration::from_millis(5);
/// A client that asks later than this is slow: the chunk halves.
const SLOW: Duration = Duration::from_millis(50);
/// Chunks stay small for this long: at first even a slow client's chunks are taken at once, into
/// the socket buffers, and that must not earn it megabyte chunks.
const PROVE_FAST: Duration = Duration::from_millis(100);
/// Chunks double only after this many fast asks in a row: a client that closes its end frees
/// the socket's buffer at once, and a thousand such connections must not all double their
/// chunks on the way out.
const STREAK: u32 = 4;

pub(super) struct FileBody {
    file: Arc<File>,
    /// The blob's lease, held until the body ends.
    _blob: Option<CachedBlob>,
    /// Where the next read starts.
    next: u64,
    end: u64,
    /// Bytes read and not yet handed to the connection.
    remaining: u64,
    chunk: usize,
    /// A read from the disk, in the blocking pool.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// When the last chunk went to the connection.
    handed: Option<Instant>,
    /// When the first chunk was asked for.
    first: Option<Instant>,
    /// Fast asks in a row since the chunk last grew.
    fast_streak: u32,
    /// Whether reads try the page cache first (tests turn it off to read as from the disk).
    nowait: bool,
    /// The connection's sendfile queue, when it has one.
    splice: Option<Splice>,
}

impl FileBody {
    pub(super) fn new(blob: CachedBlob, start: u64, end: u64, splice: Option<Splice>) -> FileBody {
        let mut body = FileBody::over(blob.file.clone(), start, end, Some(blob));
        body.splice = splice;
        body
    }

    fn over(file: Arc<File>, start: u64, end: u64, blob: Option<CachedBlob>) -> FileBody {
        FileBody {
            file,
            _blob: blob,
            next: start,
            end,
            remaining: end - start,
            chunk: FIRST_CHUNK,
            reading: None,
            handed: None,
            first: None,
            fast_streak: 0,
            nowait: true,
            splice: None,
        }
    }

    /// Sizes the next chunk by how soon the client asked for it (see `PROVE_FAST`).
    fn adapt(&mut self) {
        let (Some(at), Some(first)) = (self.handed, self.first) else {
            self.first = Some(Instant::now());
            return;
        };
        let gap = at.elapsed();
        if gap < FAST && first.elapsed() >= PROVE_FAST {
            self.fast_streak += 1;
            if self.fast_streak >= STREAK {
                self.fast_streak = 0;
                self.chunk = (self.chunk * 2).min(MAX_CHUNK);
            }
        } else {
            self.fast_streak = 0;
            if gap > SLOW {
                self.chunk = (self.chunk / 2).max(MIN_CHUNK);
            }
        }
    }

    /// The length of the next read, 0 at the end.
    fn next_len(&self) -> usize {
        (self.end - self.next).min(self.chunk as u64) as usize
    }

    /// Reads the next chunk from the page cache without waiting; None when it needs the disk.
    fn read_cached(&mut self) -> io::Result<Option<Bytes>> {
        let got = from_page_cache(&self.file, self.next, self.next_len())?;
        if let Some(chunk) = &got {
            self.next += chunk.len() as u64;
        }
        Ok(got)
    }

    /// Starts reading the next chunk in the blocking pool.
    fn read_from_disk(&mut self) {
        let n = self.next_len();
        let (file, at) = (self.file.clone(), self.next);
        self.next += n as u64;
        self.reading = Some(tokio::task::spawn_blocking(move || from_disk(&file, at, n)));
    }

    /// Queues the next segment for sendfile when it is in the page cache; None otherwise.
    fn splice_cached(&mut self) -> io::Result<Option<Bytes>> {
        let Some(splice) = &self.splice else {
            return Ok(None);
        };
        let len = (self.end - self.next).min(SEGMENT_MAX as u64);
        if len == 0 || !is_cached(&self.file, self.next)? || !is_cached(&self.file, self.next + len - 1)? {
            return Ok(None);
        }
        let stand_in = splice.queue(self.file.clone(), self.next, len as usize);
        self.next += len;
        Ok(Some(stand_in))
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        if self.reading.is_none() {
            if self.nowait {
                if let Some(stand_in) = self.splice_cached()? {
                    return Poll::Ready(Ok(stand_in));
                }
                if let Some(chunk) = self.read_cached()? {
                    return Poll::Ready(Ok(chunk));
                }
            }
            self.read_from_disk();
        }
        let reading = self.reading.as_mut().expect("a read is under way");
        let chunk = ready!(Pin::new(reading).poll(cx)).map_err(io::Error::other)??;
        self.reading = None;
        // The disk was needed: read the next chunk ahead while the client takes this one.
        if self.next < self.end {
            self.read_from_disk();
        }
        Poll::Ready(Ok(chunk))
    }
}

/// Reads up to `n` bytes of `file` at `at`: from the page cache on this thread when they are
/// there (possibly fewer than `n`, never none), otherwise all `n` in the blocking pool.
pub(super) async fn read_at(file: &Arc<File>, at: u64, n: usize) -> io::Result<Bytes> {
    if let Some(chunk) = from_page_cache(file, at, n)? {
        return Ok(chunk);
    }
    let file = file.clone();
    tokio::task::spawn_blocking(move || from_disk(&file, at, n))
        .await
        .map_err(io::Error::other)?
}

/// Up to `n` bytes at `at` if the page cache holds at least the first of them (`preadv2` with
/// `RWF_NOWAIT`, which fails rather than wait for the disk); None when the disk is needed, or
/// where the kernel or filesystem does not support it.
fn from_page_cache(file: &File, at: u64, n: usize) -> io::Result<Option<Bytes>> {
    let mut buf = BytesMut::zeroed(n);
    match preadv2(file, &mut [IoSliceMut::new(&mut buf)], at, ReadWriteFlags::NOWAIT) {
        Ok(got) if got > 0 || n == 0 => {
            buf.truncate(got);
            Ok(Some(buf.freeze()))
        }
        Ok(_) => Err(truncated()),
        Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the page cache holds the byte at `at` (a one-byte `RWF_NOWAIT` read); false where
/// the kernel or filesystem cannot tell.
fn is_cached(file: &File, at: u64) -> io::Result<bool> {
    Ok(from_page_cache(file, at, 1)?.is_some())
}

/// Exactly `n` bytes at `at`, waiting for the disk (for the blocking pool).
fn from_disk(file: &File, at: u64, n: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(n);
    file.read_exact_at(&mut buf, at).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => truncated(),
        _ => e,
    })?;
    Ok(buf.freeze())
}

fn truncated() -> io::Error {
    io::Error::other("cached blob is shorter than its recorded size")
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if self.reading.is_none() {
            self.adapt();
        }
        let chunk = match ready!(self.poll_chunk(cx)) {
            Ok(c) => c,
            Err(e) => {
                self.remaining = 0;
                return Poll::Ready(Some(Err(e)));
            }
        };
        self.remaining -= chunk.len() as u64;
        self.handed = Some(Instant::now());
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        // A read ahead for a client that left is not waited for (it only holds the lease a
        // moment longer).
        if let Some(r) = self.reading.take() {
            r.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::splice::tests::{file_of, pattern};

    /// Every frame of `body`, or the error that ended it.
    async fn frames(mut body: FileBody) -> Result<Vec<Bytes>, io::Error> {
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f?.into_data().unwrap());
        }
        Ok(out)
    }

    #[tokio::test]
    async fn whole_files_and_ranges_come_out_exact_in_bounded_chunks() {
        let bytes = pattern(3 * 1024 * 1024 + 17);
        let file = file_of(&bytes);
        let ranges = [(0, bytes.len()), (1, 2), (100_000, 2_500_001), (5, 5)];
        for ((start, end), nowait) in ranges.into_iter().flat_map(|r| [(r, true), (r, false)]) {
            let mut body = FileBody::over(file.clone(), start as u64, end as u64, None);
            body.nowait = nowait; // false: every read in the blocking pool, as from the disk
            assert_eq!(body.size_hint().exact(), Some((end - start) as u64));
            let got = frames(body).await.unwrap();
            assert!(got.iter().all(|c| !c.is_empty() && c.len() <= MAX_CHUNK));
            assert_eq!(got.concat(), bytes[start..end], "{start}..{end}");
        }
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_size_ends_in_an_error() {
        let file = file_of(&pattern(1000));
        for nowait in [true, false] {
            let mut body = FileBody::over(file.clone(), 0, 5000, None);
            body.nowait = nowait;
            assert!(frames(body).await.is_err(), "never a clean end short of the size");
        }
    }

    #[tokio::test]
    async fn with_a_splice_cached_chunks_become_stand_ins_and_uncached_ones_are_read() {
        let bytes = pattern(2 * SEGMENT_MAX + 5);
        let file = file_of(&bytes);
        let splice = Splice::default();
        let mut body = FileBody::over(file.clone(), 3, bytes.len() as u64, None);
        body.splice = Some(splice.clone());
        let got = frames(body).await.unwrap();
        let lens: Vec<usize> = got.iter().map(|f| f.len()).collect();
        assert_eq!(lens, [SEGMENT_MAX, SEGMENT_MAX, 2]);
        assert!(
            got.iter().all(|f| f.iter().all(|b| *b == 0)),
            "stand-ins, not the file's bytes"
        );
        assert_eq!(splice.queued(), 3, "one queued segment per stand-in");

        // As from the disk (no page-cache probe): the bytes themselves, nothing queued.
        let splice = Splice::default();
        let mut body = FileBody::over(file, 3, bytes.len() as u64, None);
        (body.splice, body.nowait) = (Some(splice.clone()), false);
        assert_eq!(frames(body).await.unwrap().concat(), bytes[3..]);
        assert_eq!(splice.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_grow_for_fast_clients_and_shrink_for_slow_ones() {
        let file = file_of(&pattern(64 * 1024 * 1024));
        let mut body = FileBody::over(file, 0, 64 * 1024 * 1024, None);
        let mut sizes = Vec::new();
        for _ in 0..3 {
            sizes.push(body.frame().await.unwrap().unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes, [FIRST_CHUNK; 3], "small at first, however fast");
        tokio::time::advance(PROVE_FAST).await;
        for _ in 0..(STREAK as usize * 7) {
            sizes.push(body.frame().await.unwrap().unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes.last(), Some(&MAX_CHUNK), "fast: {sizes:?}");
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(200)).await;
            sizes.push(body.frame().await.unwrap().unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes.last(), Some(&MIN_CHUNK), "slow: {sizes:?}");
    }
}
