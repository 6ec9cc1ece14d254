//! Byte streams between blocking code and async bodies, bounded: a bundle is written by `tar`
//! (blocking `Write`) into an HTTP response, and read by `tar` (blocking `Read`) from an HTTP
//! request or a file. A `pipe` of a few chunks connects the two sides, so memory stays at most
//! `DEPTH` chunks whatever the stream's size; an error on the writing side reaches the reader
//! as an error (never as an early end that looks complete).

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// Chunks in flight between the two sides.
const DEPTH: usize = 8;
/// The size of a chunk the writer hands over.
const CHUNK: usize = 256 * 1024;

type Item = io::Result<Bytes>;

/// A bounded pipe: the writing half for blocking code, the reading half as a body or a reader.
pub fn pipe() -> (PipeWriter, mpsc::Receiver<Item>) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (
        PipeWriter {
            tx,
            buf: BytesMut::new(),
        },
        rx,
    )
}

/// The writing half (blocking: never use it on an async thread).
pub struct PipeWriter {
    tx: mpsc::Sender<Item>,
    buf: BytesMut,
}

impl PipeWriter {
    /// Ends the stream with an error the reader sees instead of an end.
    pub fn fail(mut self, e: io::Error) {
        let _ = self.send_buffered();
        let _ = self.tx.blocking_send(Err(e));
    }

    /// A sender for the async side (a request body pumped into the pipe).
    pub fn sender(&self) -> mpsc::Sender<Item> {
        self.tx.clone()
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        // What was written and not yet flushed still goes (a failed stream was ended by `fail`).
        let _ = self.send_buffered();
    }
}

/// The reading half as a blocking reader.
pub struct PipeReader {
    rx: mpsc::Receiver<Item>,
    chunk: Bytes,
}

impl PipeReader {
    pub fn new(rx: mpsc::Receiver<Item>) -> PipeReader {
        PipeReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The reading half as an HTTP body: an error ends the body with that error, so the connection
/// is cut and the client sees a broken transfer, not a short one.
pub struct PipeBody(pub mpsc::Receiver<Item>);

impl Body for PipeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// Feeds an async body into a pipe's sender (for a blocking reader on the other end); a body
/// error reaches the reader as an error. When the reader stops early (it refused what it read),
/// the rest of the body is still read and dropped, so the client finishes sending and then
/// reads the answer, instead of finding the connection reset under its upload.
pub async fn pump<B>(mut body: B, tx: mpsc::Sender<Item>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let mut reading = true;
    // Frames are gathered into chunks, so the blocking reader wakes once per chunk rather than
    // once per socket read.
    let mut gathered = BytesMut::new();
    loop {
        let item = match body.frame().await {
            None if gathered.is_empty() => return,
            None => Ok(gathered.split().freeze()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    gathered.extend_from_slice(&data);
                    if gathered.len() < CHUNK {
                        continue;
                    }
                    Ok(gathered.split().freeze())
                }
                Err(_) => continue,
            },
            Some(Err(e)) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())),
        };
        let failed = item.is_err();
        if reading && tx.send(item).await.is_err() {
            reading = false;
        }
        if failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipe_carries_bytes_and_errors_across() {
        let (mut w, rx) = pipe();
        let writer = tokio::task::spawn_blocking(move || {
            for i in 0..100u8 {
                w.write_all(&vec![i; 10_000]).unwrap();
            }
            w.fail(io::Error::other("cut"));
        });
        let read = tokio::task::spawn_blocking(move || {
            let mut r = PipeReader::new(rx);
            let mut all = Vec::new();
            let e = r.read_to_end(&mut all).unwrap_err();
            (all.len(), e.to_string())
        });
        writer.await.unwrap();
        let (n, e) = read.await.unwrap();
        assert_eq!(n, 1_000_000, "every byte before the error");
        assert_eq!(e, "cut");
    }
}
