//! The HTTP side: accepting connections (HTTP/1.1 and HTTP/2), one tracing span per request,
//! routing, and dispatch to one handler per endpoint family, which asks the registry layer and
//! renders its answer. Only `GET` and `HEAD` are served: a mirror is read-only. Nothing here
//! knows the configuration or the upstreams.

mod access_log;
pub mod admin;
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

use crate::cache::Cache;
use crate::metrics::{Metrics, RequestKind};
use crate::registry::{CacheResult, Client, Registry};
use access_log::{AccessLog, LoggedBody};
use response::{full, ServeBody, ServeError};
use route::{Endpoint, Parsed, RepoRequest};

/// Everything a request handler needs; immutable after start, shared by `Arc`.
pub struct State {
    pub registry: Registry,
    /// For the admin endpoints (stats, gc).
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
}

pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<LoggedBody> {
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (outcome, kind, upstream) = dispatch(&state, &req).await;
    let mut resp = match outcome {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        http::HeaderValue::from_static("registry/2.0"),
    );
    let status = resp.status();
    let result = match resp.extensions().get::<CacheResult>() {
        Some(r) => *r,
        None if status.is_client_error() || status.is_server_error() => CacheResult::Error,
        None => CacheResult::Pass,
    };
    let log = AccessLog::new(
        method,
        target,
        kind,
        upstream,
        status.as_u16(),
        result,
        started,
        state.metrics.clone(),
    );
    resp.map(|body| LoggedBody::new(body, log))
}

type Outcome = (Result<Response<ServeBody>, ServeError>, RequestKind, String);

async fn dispatch(state: &Arc<State>, req: &Request<Incoming>) -> Outcome {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        let e = ServeError::Unsupported(format!("{method} is not supported: this mirror is read-only"));
        return (Err(e), RequestKind::Other, String::new());
    }
    let uri = req.uri();
    let parsed = match route::parse(uri.path(), uri.query()) {
        Ok(p) => p,
        Err(e) => return (Err(e), RequestKind::Other, String::new()),
    };
    match parsed {
        Parsed::Base => {
            let r = Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(full("{}"))
                .map_err(|e| ServeError::Internal(e.to_string()));
            (r, RequestKind::Base, String::new())
        }
        Parsed::Catalog => (
            Err(ServeError::Unsupported(
                "a mirror does not list upstream repositories".into(),
            )),
            RequestKind::Other,
            String::new(),
        ),
        Parsed::Repo(request) => repo_request(state, req, &request).await,
    }
}

async fn repo_request(state: &Arc<State>, req: &Request<Incoming>, request: &RepoRequest) -> Outcome {
    let kind = match &request.endpoint {
        Endpoint::Manifest(_) => RequestKind::Manifest,
        Endpoint::Blob(_) => RequestKind::Blob,
        Endpoint::Tags => RequestKind::Tags,
        Endpoint::Referrers(_) => RequestKind::Referrers,
    };
    let repo = match state.registry.locate(&request.name, request.ns.as_deref()) {
        Ok(r) => r,
        Err(e) => return (Err(e.into()), RequestKind::Other, String::new()),
    };
    let upstream = repo.namespace().to_string();
    let client = Client::anonymous();
    let (method, query) = (req.method(), req.uri().query());
    let span = tracing::info_span!("repo", upstream = %upstream, repo = %repo.name());
    let r = async {
        match &request.endpoint {
            Endpoint::Manifest(r) => manifests::handle(state, &client, &repo, r, method, req.headers()).await,
            Endpoint::Blob(d) => blobs::handle(state, &client, &repo, d, method, req.headers()).await,
            Endpoint::Tags => listing::tags(state, &client, &repo, request, query).await,
            Endpoint::Referrers(d) => listing::referrers(state, &client, &repo, d, query).await,
        }
    }
    .instrument(span)
    .await;
    (r, kind, upstream)
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
