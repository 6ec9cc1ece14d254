//! The HTTP side: accepting connections (HTTP/1.1 and HTTP/2), one tracing span per request,
//! routing, and dispatch to one handler per endpoint family. Only `GET` and `HEAD` are served: a
//! mirror is read-only.

mod blobs;
mod listing;
mod manifests;
mod range;
pub mod response;
mod route;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::cache::coalesce::Coalesce;
use crate::cache::{Cache, StoredManifest};
use crate::config::Config;
use crate::upstream::Upstreams;
use response::{full, ServeBody, ServeError};
use route::{Endpoint, Parsed};

/// Everything a request handler needs; immutable after start, shared by `Arc`.
pub struct State {
    pub config: Config,
    pub upstreams: Upstreams,
    pub cache: Cache,
    pub manifest_gets: Arc<Coalesce<manifests::FetchKey, manifests::Shared<StoredManifest>>>,
    pub manifest_heads: Arc<Coalesce<manifests::FetchKey, manifests::Shared<manifests::Answer>>>,
}

impl State {
    pub fn new(config: Config, upstreams: Upstreams, cache: Cache) -> State {
        State {
            config,
            upstreams,
            cache,
            manifest_gets: Arc::default(),
            manifest_heads: Arc::default(),
        }
    }
}

pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<ServeBody> {
    let method = req.method().clone();
    let mut resp = match dispatch(&state, &req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        http::HeaderValue::from_static("registry/2.0"),
    );
    tracing::debug!(%method, status = resp.status().as_u16(), "answered");
    resp
}

async fn dispatch(state: &Arc<State>, req: &Request<Incoming>) -> Result<Response<ServeBody>, ServeError> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(ServeError::Unsupported(format!(
            "{method} is not supported: this mirror is read-only"
        )));
    }
    let uri = req.uri();
    match route::parse(uri.path(), uri.query(), &state.upstreams)? {
        Parsed::Base => Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(full("{}"))
            .map_err(|e| ServeError::Internal(e.to_string())),
        Parsed::Catalog => Err(ServeError::Unsupported(
            "a mirror does not list upstream repositories".into(),
        )),
        Parsed::Repo(route) => {
            let span = tracing::info_span!("repo", upstream = route.upstream.host(), repo = %route.repo);
            async {
                match &route.endpoint {
                    Endpoint::Manifest(r) => manifests::handle(state, &route, r, method, req.headers()).await,
                    Endpoint::Blob(d) => blobs::handle(state, &route, d, method, req.headers()).await,
                    Endpoint::Tags => listing::tags(&route, uri.query()).await,
                    Endpoint::Referrers(d) => listing::referrers(&route, d, uri.query()).await,
                }
            }
            .instrument(span)
            .await
        }
    }
}

/// Accepts connections until `shutdown` turns true, then lets open connections finish their
/// requests (up to `grace`).
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
            async move { Ok::<_, Infallible>(handle(state, req).await) }.instrument(span)
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(tracing::debug_span!("conn", peer = %peer)),
        );
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "shutdown grace period over; closing remaining connections"),
    }
}

/// The address a `SocketAddr` listener reports, for logs.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
