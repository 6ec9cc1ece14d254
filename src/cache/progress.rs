//! A fill as its readers see it: the `Fill` (the digest, a read handle of the growing temp file,
//! the origin to ask again, and a `watch` of its `Progress`) and the states it goes through:
//! `Running`, then `Verified` (size and digest checked, the last bytes may go out),
//! `PassThrough` (the cache cannot keep the blob, readers continue from upstream) or `Failed`.
//! The single-flight map that makes fills is `fill.rs`; the leader's download `download.rs`; the
//! readers `reader.rs` and `passthrough.rs`. All of them build on this file, which imports none
//! of them.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus::IntCounter;
use tokio::sync::watch;

use super::lease::Lease;
use super::origin::{Fetched, Origin, OriginError};
use super::priority;
use crate::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// The origin failed (classified by whoever made the origin).
    #[error("{0}")]
    Origin(OriginError),
    #[error("upstream sent content with digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upstream sent {got} bytes where it announced {want}")]
    SizeMismatch { want: u64, got: u64 },
    #[error("upstream sent nothing for {0:?}")]
    Stalled(Duration),
    #[error("upstream body broke off: {0}")]
    Body(String),
    #[error("cache I/O: {0}")]
    Io(#[from] io::Error),
    #[error("every client left and fetch.finish_abandoned is off")]
    Abandoned,
}

pub use crate::metrics::Uncached;

#[derive(Debug, Clone)]
pub enum FillState {
    Running,
    /// Size and digest checked: the bytes may be handed out in full.
    Verified,
    /// Not kept: readers continue from upstream directly.
    PassThrough(Uncached),
    Failed(Arc<FillError>),
}

#[derive(Debug, Clone)]
pub struct Progress {
    /// Upstream answered; `size` is its Content-Length if it sent one.
    pub started: bool,
    pub size: Option<u64>,
    pub written: u64,
    pub state: FillState,
}

impl Progress {
    pub fn is_terminal(&self) -> bool {
        !matches!(self.state, FillState::Running)
    }
}

/// A download in progress that readers can follow.
pub struct Fill {
    pub digest: Digest,
    /// Read handle of the temp file; None when none could be created.
    file: Option<Arc<File>>,
    progress: watch::Receiver<Progress>,
    origin: Arc<dyn Origin>,
    /// The leader's upstream response when it gave up before reading any of it, for the first
    /// pass-through reader.
    handoff: Mutex<Option<Fetched>>,
    /// Taken when the blob is published: keeps it from eviction while readers follow the fill.
    lease: Mutex<Option<Lease>>,
    pub(super) read_timeout: Duration,
    /// Bytes fetched from the origin, by its name.
    fetched: IntCounter,
    /// Set when the bytes come from the shared store instead (`SharedFirst`): those are not
    /// counted as fetched from the origin.
    from_shared: Option<Arc<AtomicBool>>,
    /// The batch written last and where it starts: readers following the download take their
    /// bytes from it instead of reading them back from the file (`Fill::landed_bytes`).
    last_batch: Mutex<(u64, Vec<Bytes>)>,
    /// Ranged fetches of the blob under way, which the download lets go first.
    pub(super) ranges: watch::Sender<priority::Ranges>,
}

impl Fill {
    /// A fill that has not heard from its origin yet, and the sender of its progress.
    pub(super) fn new(
        digest: Digest,
        file: Option<File>,
        origin: Arc<dyn Origin>,
        read_timeout: Duration,
        fetched: IntCounter,
        from_shared: Option<Arc<AtomicBool>>,
    ) -> (Arc<Fill>, watch::Sender<Progress>) {
        let (tx, rx) = watch::channel(Progress {
            started: false,
            size: None,
            written: 0,
            state: FillState::Running,
        });
        let fill = Fill {
            digest,
            file: file.map(Arc::new),
            progress: rx,
            origin,
            handoff: Mutex::new(None),
            lease: Mutex::new(None),
            read_timeout,
            fetched,
            from_shared,
            last_batch: Mutex::new((0, Vec::new())),
            ranges: priority::channel(),
        };
        (Arc::new(fill), tx)
    }

    /// Counts `bytes` received for this fill as fetched from its origin, unless they came
    /// from the shared store.
    pub(super) fn count_fetched(&self, bytes: u64) {
        if !self
            .from_shared
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            self.fetched.inc_by(bytes);
        }
    }

    /// Keeps the batch just written (from `start`) for the readers, in place of the last one.
    pub(super) fn landed(&self, start: u64, batch: Vec<Bytes>) {
        *self.last_batch.lock().unwrap_or_else(|e| e.into_inner()) = (start, batch);
    }

    /// Up to `max` bytes at `pos` from the batch written last, without a copy (one piece of
    /// it at most); None when `pos` is not in it.
    pub(super) fn landed_bytes(&self, pos: u64, max: usize) -> Option<Bytes> {
        let last = self.last_batch.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = last.0;
        for piece in &last.1 {
            let end = at + piece.len() as u64;
            if (at..end).contains(&pos) {
                let from = (pos - at) as usize;
                let to = (from + max).min(piece.len());
                return Some(piece.slice(from..to));
            }
            at = end;
        }
        None
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    pub(super) fn file(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    /// Leaves the leader's unread upstream response for the first pass-through reader.
    pub(super) fn hand_off(&self, resp: Fetched) {
        *self.handoff.lock().unwrap_or_else(|e| e.into_inner()) = Some(resp);
    }

    /// Keeps the published blob's lease for as long as the fill lives.
    pub(super) fn keep(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    /// An upstream response for a pass-through reader: the leader's unread one, else a new one.
    pub(super) async fn upstream(&self) -> Result<Fetched, OriginError> {
        let handed = self.handoff.lock().unwrap_or_else(|e| e.into_inner()).take();
        match handed {
            Some(r) => Ok(r),
            None => self.origin.fetch().await,
        }
    }

    /// Bytes `start..end` of the blob straight from the origin, for a range the fill is far from.
    pub(super) async fn upstream_range(&self, start: u64, end: u64) -> Result<Fetched, OriginError> {
        self.origin.fetch_range(start, end).await
    }

    /// Waits until upstream answered (or the fill failed) and returns that moment's progress.
    pub async fn started(&self) -> Progress {
        let mut rx = self.progress.clone();
        let p = rx
            .wait_for(|p| p.started || p.is_terminal())
            .await
            .map(|p| p.clone());
        p.unwrap_or_else(|_| lost())
    }
}

fn lost() -> Progress {
    Progress {
        started: true,
        size: None,
        written: 0,
        state: FillState::Failed(Arc::new(FillError::Io(io::Error::other("download task ended")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::origin::Fetching;

    struct NoOrigin;

    impl Origin for NoOrigin {
        fn name(&self) -> &str {
            "none"
        }

        fn fetch(&self) -> Fetching {
            Box::pin(async { Err("none".into()) })
        }
    }

    #[test]
    fn readers_take_the_last_batch_from_memory_only_where_it_lies() {
        let counter = IntCounter::new("t", "t").unwrap();
        let digest = Digest::sha256_of(b"x");
        let (fill, _tx) = Fill::new(
            digest,
            None,
            Arc::new(NoOrigin),
            Duration::from_secs(1),
            counter,
            None,
        );
        assert_eq!(fill.landed_bytes(0, 10), None, "nothing landed yet");
        fill.landed(100, vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")]);
        let got = |pos, max| fill.landed_bytes(pos, max).map(|b| b.to_vec());
        assert_eq!(got(100, 10), Some(b"abc".to_vec()), "one piece at most");
        assert_eq!(got(101, 1), Some(b"b".to_vec()));
        assert_eq!(got(103, 10), Some(b"defg".to_vec()));
        assert_eq!(got(105, 2), Some(b"fg".to_vec()));
        assert_eq!(
            (got(99, 5), got(107, 1)),
            (None, None),
            "outside the batch: the file"
        );
        fill.landed(107, vec![Bytes::from_static(b"h")]);
        assert_eq!(
            (got(100, 1), got(107, 1)),
            (None, Some(b"h".to_vec())),
            "only the last batch"
        );
    }
}
