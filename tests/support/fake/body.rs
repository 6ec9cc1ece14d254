//! The fake's blob bodies: streamed in 16 KiB chunks through a channel, so faults can break,
//! corrupt or hold a body part-way, as a real upstream's connection would.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

use super::serve::reply;
use super::{sha256, Fault, State};

/// A blob's answer: streamed whole (where faults apply), or the one `bytes=a-b` range asked for,
/// at once and untouched by faults (206, or 416 past the end).
pub(super) fn blob_response(
    state: &Arc<State>,
    blob: Bytes,
    head: bool,
    range: Option<&str>,
) -> Response<ChanBody> {
    let ignored = state.ignore_ranges.load(std::sync::atomic::Ordering::SeqCst);
    if let Some(r) = range.filter(|_| !head && !ignored) {
        return ranged(&blob, r);
    }
    let len = blob.len();
    let headers = [
        ("content-type", "application/octet-stream".to_string()),
        ("docker-content-digest", sha256(&blob)),
    ];
    if head {
        let mut resp = reply(200, &headers, Bytes::new());
        resp.headers_mut().insert("content-length", len.into());
        return resp;
    }
    let fault = state.fault.lock().unwrap().clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let blob = match &fault {
            Some(Fault::Corrupt) => {
                let mut v = blob.to_vec();
                if let Some(b) = v.last_mut() {
                    *b ^= 0xff;
                }
                Bytes::from(v)
            }
            _ => blob,
        };
        let mut pos = 0;
        for chunk in blob.chunks(16 * 1024) {
            if let Some(Fault::Break { after }) = &fault {
                if pos + chunk.len() > *after {
                    let _ = tx.send(Ok(Bytes::copy_from_slice(&chunk[..after - pos]))).await;
                    let _ = tx.send(Err(std::io::Error::other("injected break"))).await;
                    return;
                }
            }
            if let Some(Fault::Hold {
                after,
                gate,
                then_break,
            }) = &fault
            {
                if pos + chunk.len() > *after && pos <= *after {
                    let _ = tx.send(Ok(Bytes::copy_from_slice(&chunk[..after - pos]))).await;
                    let mut g = gate.clone();
                    let _ = g.wait_for(|open| *open).await;
                    if *then_break {
                        let _ = tx.send(Err(std::io::Error::other("injected break"))).await;
                        return;
                    }
                    let _ = tx.send(Ok(Bytes::copy_from_slice(&chunk[after - pos..]))).await;
                    pos += chunk.len();
                    continue;
                }
            }
            if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
                return;
            }
            pos += chunk.len();
        }
    });
    let mut b = Response::builder().status(200).header("content-length", len);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(ChanBody {
        rx: Some(rx),
        full: None,
    })
    .unwrap()
}

fn ranged(blob: &Bytes, range: &str) -> Response<ChanBody> {
    let len = blob.len();
    let (a, b) = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .expect("the fake serves bytes=a-b ranges only");
    let start: usize = a.parse().expect("range start");
    let end = b.parse::<usize>().map_or(len, |b| (b + 1).min(len));
    if start >= end {
        return reply(416, &[("content-range", format!("bytes */{len}"))], "");
    }
    let headers = [
        ("content-type", "application/octet-stream".to_string()),
        ("content-range", format!("bytes {start}-{}/{len}", end - 1)),
    ];
    reply(206, &headers, blob.slice(start..end))
}

pub struct ChanBody {
    rx: Option<mpsc::Receiver<Result<Bytes, std::io::Error>>>,
    full: Option<Bytes>,
}

impl ChanBody {
    pub(super) fn full(b: Bytes) -> ChanBody {
        ChanBody {
            rx: None,
            full: Some(b),
        }
    }
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.full.take() {
            return Poll::Ready((!b.is_empty()).then(|| Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}
