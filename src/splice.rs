//! Cached file bytes sent with `sendfile(2)`: the kernel moves them from the page cache to the
//! socket, with no copy through a buffer of ours, no read and no buffer held per response.
//!
//! hyper owns the HTTP/1.1 connection and writes whatever body frames it is given, so the file's
//! bytes travel through it as stand-ins: a response body on a plain-TCP HTTP/1.1 connection
//! (the one the request's `Splice` handle belongs to) queues the file segment it wants sent and
//! hands hyper a frame of the same length that points into `STAND_IN`, a static region nothing
//! else uses. hyper frames it (Content-Length counts it like any bytes) and writes it with the
//! rest through the connection's `SpliceStream`, which recognises the stand-in by its address
//! and sends the queued segment's bytes in its place with `sendfile`; everything else (status
//! line, headers, other responses) is written as it is.
//!
//! Where the stand-in goes is checked, never assumed: hyper must hand over body bytes by
//! reference (its vectored write queue; `accept::http_builder` forces it with `writev(true)`),
//! the bytes of a stand-in must arrive in order and from where the head segment left off (each
//! segment's stand-in starts at its own one of `SLOTS` addresses, so a stand-in never passes for
//! another segment's), and a connection that gets a stand-in it cannot place ends with an error. A client gets the
//! file's bytes or a broken connection, never the stand-in's zeros. TLS and HTTP/2 connections
//! carry no `Splice` handle, so their bodies read the file as before.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The longest stand-in frame, and so the most one queued segment covers.
pub const SEGMENT_MAX: usize = 2 * 1024 * 1024;

/// Start addresses stand-ins take in turn.
const SLOTS: usize = 4096;

/// The region stand-in frames point into. Zeroed and never written, it occupies no memory until
/// read, and nothing reads it: a stand-in's bytes are replaced on the way out.
static STAND_IN: [u8; SEGMENT_MAX + SLOTS] = [0; SEGMENT_MAX + SLOTS];

/// A connection's queue of file segments waiting to be sent in place of their stand-ins; the
/// handle a response body gets through the request's extensions.
#[derive(Clone, Default)]
pub struct Splice(Arc<Mutex<Queue>>);

#[derive(Default)]
struct Queue {
    segments: VecDeque<Segment>,
    /// The slot of the next segment's stand-in.
    next_slot: usize,
}

struct Segment {
    file: Arc<File>,
    at: u64,
    len: usize,
    /// Where its stand-in starts in `STAND_IN`.
    slot: usize,
    sent: usize,
}

impl Splice {
    /// Queues `len` bytes of `file` from `at` (`len` at most `SEGMENT_MAX`) and returns the
    /// stand-in frame to hand to the connection in their place.
    pub fn queue(&self, file: Arc<File>, at: u64, len: usize) -> Bytes {
        assert!(
            len > 0 && len <= SEGMENT_MAX,
            "a stand-in is 1..=SEGMENT_MAX bytes"
        );
        let mut queue = self.lock();
        let slot = queue.next_slot;
        queue.next_slot = (slot + 1) % SLOTS;
        queue.segments.push_back(Segment {
            file,
            at,
            len,
            slot,
            sent: 0,
        });
        Bytes::from_static(&STAND_IN[slot..slot + len])
    }

    /// Segments queued and not yet wholly sent.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().segments.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `slice` is (part of) a stand-in frame.
fn is_stand_in(slice: &[u8]) -> bool {
    let base = STAND_IN.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    !slice.is_empty() && at >= base && at < base + STAND_IN.len()
}

fn out_of_step(what: &str) -> io::Error {
    io::Error::other(format!("sendfile stand-in out of step: {what}"))
}

/// A plain TCP connection that sends queued file segments in place of their stand-ins.
pub struct SpliceStream {
    tcp: TcpStream,
    splice: Splice,
    /// Counts the bytes sendfile sent.
    sent: IntCounter,
}

impl SpliceStream {
    pub fn new(tcp: TcpStream, sent: IntCounter) -> SpliceStream {
        SpliceStream {
            tcp,
            splice: Splice::default(),
            sent,
        }
    }

    /// The handle responses on this connection queue their segments with.
    pub fn handle(&self) -> Splice {
        self.splice.clone()
    }

    /// Sends bytes of the head segment in place of `stand_in`, which must be exactly what is
    /// left of it.
    fn poll_send_file(&self, cx: &mut Context<'_>, stand_in: &[u8]) -> Poll<io::Result<usize>> {
        let mut queue = self.splice.lock();
        let Some(seg) = queue.segments.front_mut() else {
            return Poll::Ready(Err(out_of_step("nothing queued")));
        };
        let offset = stand_in.as_ptr() as usize - STAND_IN.as_ptr() as usize;
        if offset != seg.slot + seg.sent || stand_in.len() != seg.len - seg.sent {
            return Poll::Ready(Err(out_of_step("not where the queued segment left off")));
        }
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut from = seg.at + seg.sent as u64;
            let want = seg.len - seg.sent;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.tcp, &*seg.file, Some(&mut from), want).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::other(
                        "cached blob is shorter than its recorded size",
                    )))
                }
                Ok(n) => {
                    self.sent.inc_by(n as u64);
                    seg.sent += n;
                    if seg.sent == seg.len {
                        queue.segments.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SpliceStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SpliceStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Writes the plain slices before the first stand-in as they are, then sends stand-ins'
    /// segments while the socket takes them; reports what went out.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let plain = bufs.iter().position(|b| is_stand_in(b)).unwrap_or(bufs.len());
        let mut done = 0;
        if plain > 0 {
            done = ready!(Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..plain]))?;
            let whole: usize = bufs[..plain].iter().map(|b| b.len()).sum();
            if done < whole || plain == bufs.len() {
                return Poll::Ready(Ok(done));
            }
        }
        for stand_in in &bufs[plain..] {
            if !is_stand_in(stand_in) {
                break;
            }
            match this.poll_send_file(cx, stand_in) {
                Poll::Ready(Ok(n)) => {
                    done += n;
                    if n < stand_in.len() {
                        break;
                    }
                }
                // What went out is reported; the error or the wait comes again on the next call.
                Poll::Pending | Poll::Ready(Err(_)) if done > 0 => break,
                other => return other,
            }
        }
        Poll::Ready(Ok(done))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
pub(crate) mod tests;
