//! Refused writes answered cleanly. A mirror refuses `PUT`, `POST`, `PATCH` and `DELETE` with 405
//! `UNSUPPORTED`, but a client pushing a manifest or a blob writes its whole body before it reads
//! the answer: answered and closed at once, it sees a broken pipe (or a reset) instead of the
//! 405. So the body of a refused request is read and dropped first, up to `MAX_DISCARD` bytes
//! within `DISCARD_TIME`. A body declared longer, sent longer or more slowly is not read on: the
//! answer goes out at once with `Connection: close`, and regcache never reads unbounded data.

use std::time::Duration;

use http::{Method, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

/// The most body bytes read (and dropped) from a request regcache refuses.
pub(super) const MAX_DISCARD: u64 = 16 * 1024 * 1024;
/// How long a refused request's body may take to arrive.
pub(super) const DISCARD_TIME: Duration = Duration::from_secs(30);

/// Whether regcache refuses this method (a mirror serves only `GET` and `HEAD`).
pub(super) fn is_refused(method: &Method) -> bool {
    method != Method::GET && method != Method::HEAD
}

/// Reads and drops a refused request's body. Returns whether the connection must close after
/// the answer: the body was too long, too slow or broken, so part of it is still unread.
pub(super) async fn discard(body: Incoming, version: Version) -> bool {
    let close = body.size_hint().lower() > MAX_DISCARD
        || !matches!(
            tokio::time::timeout(DISCARD_TIME, read_bounded(body)).await,
            Ok(true)
        );
    // `Connection` is an HTTP/1 header; an HTTP/2 stream is reset by hyper instead.
    close && version <= Version::HTTP_11
}

/// Reads the body to its end; false when it breaks off or passes `MAX_DISCARD`.
async fn read_bounded(mut body: Incoming) -> bool {
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > MAX_DISCARD {
            return false;
        }
    }
    true
}
