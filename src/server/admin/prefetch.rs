//! `POST /admin/prefetch` (a JSON `PrefetchOptions` body; the answer streams `PrefetchEvent`s as
//! newline-delimited JSON while the images are fetched) and `POST /admin/unpin?image=`. Both
//! pass the `AdminGuard` first. The prefetch runs in its own task: a client that hangs up does
//! not stop it, the cache still gains the images.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::{guarded_post, json, refuse, reply, AdminGuard, State};
use crate::admin_api::{PrefetchEvent, PrefetchOptions};
use crate::registry::{PrefetchRef, RegistryError};

/// The most a prefetch request body may hold (a list of image names).
const MAX_REQUEST: usize = 1 << 20;

type Boxed = Response<BoxBody<Bytes, Infallible>>;

fn boxed(resp: Response<http_body_util::Full<Bytes>>) -> Boxed {
    resp.map(BodyExt::boxed)
}

/// Events as lines of JSON, as they come.
struct EventLines(mpsc::Receiver<PrefetchEvent>);

impl Body for EventLines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                let mut line = serde_json::to_vec(&event).unwrap_or_default();
                line.push(b'\n');
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `POST /admin/prefetch`.
pub(super) async fn prefetch(state: &Arc<State>, guard: &AdminGuard, req: Request<Incoming>) -> Boxed {
    if req.method() != Method::POST {
        return boxed(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n"));
    }
    if let Err(denied) = guard.check(req.headers()) {
        return boxed(refuse(denied));
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return boxed(reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("body: {e}\n"),
            ))
        }
    };
    let options: PrefetchOptions = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => {
            return boxed(reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("body: {e}\n"),
            ))
        }
    };
    let platforms = match options.parsed_platforms() {
        Ok(p) => p,
        Err(e) => return boxed(reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))),
    };
    if options.images.is_empty() {
        return boxed(reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "no images to prefetch\n",
        ));
    }
    let (tx, rx) = mpsc::channel(64);
    let state = state.clone();
    tokio::spawn(async move {
        state.registry.prefetch(&options, &platforms, &tx).await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(EventLines(rx).boxed())
        .unwrap_or_else(|_| Response::new(BodyExt::boxed(http_body_util::Empty::new())))
}

/// `POST /admin/unpin?image=IMAGE[:TAG|@DIGEST]`.
pub(super) async fn unpin(
    state: &Arc<State>,
    guard: &AdminGuard,
    req: &Request<Incoming>,
) -> Response<http_body_util::Full<Bytes>> {
    let image: PrefetchRef = match guarded_post(guard, req, "image") {
        Ok(i) => i,
        Err(refused) => return *refused,
    };
    match state.registry.unpin(&image).await {
        Ok(report) => json(&report),
        Err(e @ (RegistryError::NameUnknown(_) | RegistryError::ManifestUnknown(_))) => {
            reply(StatusCode::NOT_FOUND, "text/plain", format!("{e}\n"))
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
    }
}
