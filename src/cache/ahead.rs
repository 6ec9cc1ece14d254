//! Ranges far ahead of their fill. Lazy pullers (stargz, SOCI, nydus) read a cold layer by
//! ranges, and eStargz keeps its table of contents at the end of the blob: waiting for the
//! single download to reach such a range would cost the whole blob's download time. A range
//! that starts well past what the fill has written is fetched from the origin with a ranged
//! request at once, while the one full download goes on and is still verified before it is
//! kept. A range cannot be checked against the blob's digest by anyone, here or at the client,
//! so serving it from the origin costs no guarantee; its length is checked, and a body that
//! ends short or runs long ends in an error. The download lets the ranged fetch go first
//! (`priority.rs`).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::priority;
use super::progress::{Fill, FillState};

/// How far ahead of the fill a range must start to be asked of the origin: nearer ranges are
/// reached by the download soon enough.
const FAR: u64 = 4 * 1024 * 1024;
/// The longest wait for the next bytes of a ranged answer.
const IDLE: Duration = Duration::from_secs(60);

/// Whether bytes from `start` on are far ahead of what `fill` has written.
pub(super) fn far_ahead(fill: &Fill, start: u64) -> bool {
    let progress = fill.progress();
    let p = progress.borrow();
    matches!(p.state, FillState::Running) && start >= p.written.saturating_add(FAR)
}

fn fail(e: impl ToString) -> io::Error {
    io::Error::other(e.to_string())
}

/// Streams bytes `start..end` of `fill`'s blob from its origin into `tx`; false (nothing sent)
/// when the origin would not answer the range exactly, so the caller follows the fill instead.
pub(super) async fn stream(
    fill: &Fill,
    start: u64,
    end: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<bool> {
    let _first = priority::take(&fill.ranges);
    let mut body = match fill.upstream_range(start, end).await {
        Ok(fetched) => fetched.body,
        Err(e) => {
            tracing::debug!(digest = %fill.digest, error = %e, "ranged fetch refused; following the download");
            return Ok(false);
        }
    };
    let want = end - start;
    let mut sent = 0u64;
    loop {
        let frame = match tokio::time::timeout(IDLE, body.frame()).await {
            Err(_) => return Err(fail("the origin stalled on a ranged fetch")),
            Ok(None) if sent == want => return Ok(true),
            Ok(None) => return Err(fail("a ranged fetch ended short")),
            Ok(Some(frame)) => frame.map_err(fail)?,
        };
        let Ok(data) = frame.into_data() else { continue };
        sent += data.len() as u64;
        if sent > want {
            return Err(fail("a ranged fetch ran past its range"));
        }
        if tx.send(Ok(data)).await.is_err() {
            return Ok(true); // client went away
        }
    }
}
