//! Blobs the cache cannot keep still reach their clients. When a fill turns pass-through (no room
//! within the budget, or the disk refused a write), each of its readers streams the blob from
//! upstream on its own, continuing from the position it had reached. It reads the blob from its
//! start (the leader's unread response if it is the first, otherwise a new request), hashing all
//! of it and skipping what the client already has, so the same guarantees hold as for a fill:
//! the final bytes of the blob are released only after the size and digest are verified, and any
//! failure ends the body with an error. Chosen over an in-memory relay shared by the readers
//! because memory stays bounded however slow a client is, at the cost of one upstream request per
//! reader in this (exceptional) state.

use std::io;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::progress::Fill;
use crate::oci::Hasher;

fn fail(e: impl ToString) -> io::Error {
    io::Error::other(e.to_string())
}

/// Streams bytes `from..end` (`end` None: to the end) of `fill`'s blob from upstream into `tx`.
pub(super) async fn stream(
    fill: &Fill,
    from: u64,
    end: Option<u64>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let resp = fill.upstream().await.map_err(fail)?;
    let size = resp.size;
    let mut body = resp.body;
    let mut hasher = Hasher::new(fill.digest.algorithm());
    let mut pos = 0u64;
    // The latest chunk for the client, held back until the next one arrives or the blob is
    // verified, so the final bytes never go out unverified.
    let mut held: Option<Bytes> = None;
    let stop = end.unwrap_or(u64::MAX);
    loop {
        let frame = match tokio::time::timeout(fill.read_timeout, body.frame()).await {
            Err(_) => return Err(fail(format!("upstream sent nothing for {:?}", fill.read_timeout))),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(fail(format!("upstream body broke off: {e}"))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        hasher.update(&data);
        fill.count_fetched(data.len() as u64);
        let (a, b) = (pos, pos + data.len() as u64);
        pos = b;
        if size.is_some_and(|s| pos > s) {
            return Err(fail("upstream sent more bytes than it announced"));
        }
        let (lo, hi) = (a.max(from), b.min(stop));
        if lo < hi {
            let out = data.slice((lo - a) as usize..(hi - a) as usize);
            if let Some(h) = held.replace(out) {
                if tx.send(Ok(h)).await.is_err() {
                    return Ok(()); // client went away
                }
            }
        }
        if pos >= stop && size.is_some_and(|s| s > stop) {
            // A range that ends before the blob does: nothing to wait for.
            if let Some(h) = held.take() {
                let _ = tx.send(Ok(h)).await;
            }
            return Ok(());
        }
    }
    if size.is_some_and(|s| s != pos) {
        return Err(fail(format!("upstream body ended after {pos} bytes")));
    }
    let actual = hasher.finish();
    if actual != fill.digest {
        return Err(fail(format!(
            "upstream sent content with digest {actual}, not {}",
            fill.digest
        )));
    }
    if end.is_some_and(|e| e > pos) {
        return Err(fail("range beyond the end of the blob"));
    }
    if let Some(h) = held.take() {
        let _ = tx.send(Ok(h)).await;
    }
    Ok(())
}
