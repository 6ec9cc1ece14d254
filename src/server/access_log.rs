//! One log line and one set of metric updates per request, written when the response body has
//! been sent (or abandoned), so bytes and duration are the real ones. Handlers say how a request
//! was served by putting a `CacheResult` into the response's extensions.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::response::ServeBody;
use crate::metrics::{Metrics, RequestKind};
use crate::registry::CacheResult;

pub struct AccessLog {
    pub method: http::Method,
    pub target: String,
    pub kind: RequestKind,
    pub upstream: String,
    pub status: u16,
    pub result: CacheResult,
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    /// The client's identity (a verified certificate's name), if any.
    client: Option<String>,
    bytes: u64,
    body_error: Option<String>,
}

impl AccessLog {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        method: http::Method,
        target: String,
        kind: RequestKind,
        upstream: String,
        status: u16,
        result: CacheResult,
        started: Instant,
        metrics: Arc<Metrics>,
    ) -> AccessLog {
        AccessLog {
            method,
            target,
            kind,
            upstream,
            status,
            result,
            started,
            metrics,
            client: None,
            bytes: 0,
            body_error: None,
        }
    }
}

impl AccessLog {
    /// Names the client in the access line (`client` field).
    pub fn with_client(mut self, client: Option<String>) -> AccessLog {
        self.client = client;
        self
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics.request.finished(
            self.kind,
            self.result.as_str(),
            &self.upstream,
            secs,
            (self.bytes, self.result.source()),
        );
        tracing::info!(
            method = %self.method,
            path = %self.target,
            status = self.status,
            bytes = self.bytes,
            ms = (secs * 1000.0).round() as u64,
            cache = self.result.as_str(),
            upstream = %self.upstream,
            client = self.client.as_deref(),
            body_error = self.body_error.as_deref(),
            "request"
        );
    }
}

/// The response body, counting what it sends for the access log.
pub struct LoggedBody {
    inner: ServeBody,
    log: AccessLog,
}

impl LoggedBody {
    pub fn new(inner: ServeBody, log: AccessLog) -> LoggedBody {
        LoggedBody { inner, log }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.log.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => self.log.body_error = Some(e.to_string()),
            _ => {}
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
