//! The per-upstream cap on concurrent requests (`max_connections`) and the response body that
//! keeps a request's place until its body has ended. A blob download holds its permit while its
//! body streams and gives it back at the end of the body, on a body error, or when the body is
//! dropped, whichever comes first; a body that is empty from the start (HEAD) gives it back at
//! once. The `active` gauge counts requests in progress with or without a cap.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) struct Permits {
    semaphore: Option<Arc<Semaphore>>,
    active: IntGauge,
}

/// One request's place; dropping it frees the place.
pub struct Permit {
    _permit: Option<OwnedSemaphorePermit>,
    active: IntGauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.active.dec();
    }
}

impl Permits {
    pub(super) fn new(max: Option<usize>, active: IntGauge) -> Permits {
        Permits {
            semaphore: max.map(|n| Arc::new(Semaphore::new(n))),
            active,
        }
    }

    /// Waits for a place (in arrival order) when the upstream is at its cap.
    pub(super) async fn acquire(&self) -> Permit {
        let permit = match &self.semaphore {
            // The semaphore is never closed, so acquiring only fails in theory.
            Some(s) => s.clone().acquire_owned().await.ok(),
            None => None,
        };
        self.active.inc();
        Permit {
            _permit: permit,
            active: self.active.clone(),
        }
    }
}

/// An upstream response body that holds its request's permit until the body ends.
pub struct UpstreamBody {
    inner: Incoming,
    permit: Option<Permit>,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, permit: Permit) -> UpstreamBody {
        let permit = (!inner.is_end_stream()).then_some(permit);
        UpstreamBody { inner, permit }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
