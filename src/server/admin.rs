//! The admin listener (default `127.0.0.1:5001`, kept off the registry port): `/metrics` in the
//! Prometheus text format, `/healthz` (the process answers), `/readyz` (cache opened, listeners
//! bound, not shutting down), and the cache operations that `regcache cache stats|gc` use while
//! the daemon owns the cache directory, and `GET /` (a status page for a browser, guarded like
//! the listing, `admin/status.rs`): `GET /admin/cache` (index statistics as JSON), `GET /admin/cache/ls[?prefix=]` (what the cache
//! holds, by upstream, repository and tag; guarded, since it names what was pulled),
//! `POST /admin/gc[?to=SIZE]` (evict now, to the low watermark or down to SIZE; `?unused=30d`:
//! what nobody pulled for that long), and
//! `POST /admin/purge?image=IMAGE[:TAG]` (drop tag records, so the next pull revalidates with the
//! upstream), `POST /admin/prefetch` and `/admin/unpin` (`admin/prefetch.rs`), and `GET
//! /admin/export` and `POST /admin/import` (bundles, streamed both ways: `admin/bundle.rs`).
//! Reading is open;
//! what changes state passes the `AdminGuard` first (`admin/guard.rs`). It runs on the accept
//! loop the registry listener uses (`accept.rs`), with the same header and idle timeouts and a
//! small fixed cap on connections.

mod bundle;
mod guard;
mod prefetch;
mod repos;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub use guard::{AdminGuard, Denied};

use super::accept::{self, Accepted, FirstRequest, ADMIN_MAX_CONNECTIONS};
use super::State;
use crate::admin_api as api;
use crate::registry::{ImageRef, RegistryError};
use crate::units::parse_size;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(b) => reply(StatusCode::OK, "application/json", b),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

fn refuse(denied: Denied) -> Response<Full<Bytes>> {
    let mut resp = reply(denied.status, "text/plain", denied.message);
    if denied.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"regcache-admin\""),
        );
    }
    resp
}

/// `POST /admin/gc[?to=SIZE][&hosted=true]` or `POST /admin/gc?unused=DURATION`.
async fn gc(state: &Arc<State>, guard: &AdminGuard, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n");
    }
    if let Err(denied) = guard.check(req.headers()) {
        return refuse(denied);
    }
    let params = (
        query_param(req, "to", parse_size),
        query_param(req, "grace", crate::units::parse_duration),
        query_param(req, "unused", crate::units::parse_duration),
    );
    let (to, grace, unused) = match params {
        (Ok(to), Ok(grace), Ok(unused)) => (to, grace.unwrap_or(crate::registry::UPLOAD_GRACE), unused),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return *r,
    };
    let hosted = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "hosted" && v == "true");
    if hosted && unused.is_none() {
        return match state.registry.gc_hosted(to, grace).await {
            Ok(report) => json(&report),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        };
    }
    let cache = state.cache.clone();
    let evict = move || match unused {
        Some(d) => cache.gc_unused(d),
        None => cache.gc(to),
    };
    match tokio::task::spawn_blocking(evict).await {
        Ok(report) => json(&report),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

/// The query parameter `key` parsed, if given; a 400 naming it if it does not parse.
fn query_param<T>(
    req: &Request<Incoming>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, Box<Response<Full<Bytes>>>> {
    let value = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).find(|(k, _)| k == key);
    match value.map(|(_, v)| parse(&v)) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(e)) => Err(Box::new(reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{key}: {e}\n"),
        ))),
    }
}

/// A `POST` that passed the guard, with the query parameter `key` parsed; else the answer
/// refusing it (405, 401/403, or 400 naming the parameter).
fn guarded_post<T>(
    guard: &AdminGuard,
    req: &Request<Incoming>,
    key: &str,
) -> Result<T, Box<Response<Full<Bytes>>>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    if req.method() != Method::POST {
        return Err(Box::new(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST\n",
        )));
    }
    guard.check(req.headers()).map_err(|d| Box::new(refuse(d)))?;
    let value = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.parse::<T>());
    match value {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Box::new(reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{e}\n"),
        ))),
        None => Err(Box::new(reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{key}= is missing\n"),
        ))),
    }
}

/// `POST /admin/purge?image=IMAGE[:TAG]`.
async fn purge(state: &Arc<State>, guard: &AdminGuard, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let image: ImageRef = match guarded_post(guard, req, "image") {
        Ok(i) => i,
        Err(refused) => return *refused,
    };
    match state.registry.purge(&image).await {
        Ok(report) => json(&report),
        Err(e @ RegistryError::NameUnknown(_)) => {
            reply(StatusCode::NOT_FOUND, "text/plain", format!("{e}\n"))
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
    }
}

/// `GET /admin/cache/ls[?prefix=IMAGE-PREFIX]`.
async fn ls(state: &Arc<State>, guard: &AdminGuard, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    if let Err(denied) = guard.check(req.headers()) {
        return refuse(denied);
    }
    let prefix = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "prefix")
        .map(|(_, v)| v.into_owned());
    let cache = state.cache.clone();
    match tokio::task::spawn_blocking(move || cache.list(prefix.as_deref())).await {
        Ok(entries) => json(&entries),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

/// `GET /`: the status page (`admin/status.rs`).
async fn status_page(
    state: &Arc<State>,
    guard: &AdminGuard,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    if let Err(denied) = guard.check(req.headers()) {
        return refuse(denied);
    }
    let figures = status::Figures::read(&state.metrics);
    let cache = state.cache.clone();
    match tokio::task::spawn_blocking(move || status::render(&cache, &figures)).await {
        Ok(page) => reply(StatusCode::OK, "text/html; charset=utf-8", page),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

async fn answer(
    state: &Arc<State>,
    guard: &AdminGuard,
    stopping: bool,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        api::CACHE_STATS => json(&state.cache.stats()),
        api::CACHE_LS => ls(state, guard, req).await,
        api::STATUS => status_page(state, guard, req).await,
        api::GC => gc(state, guard, req).await,
        api::PURGE => purge(state, guard, req).await,
        api::UNPIN => prefetch::unpin(state, guard, req).await,
        api::REPOS => repos::create(state, guard, req).await,
        api::METRICS => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        api::HEALTHZ => reply(StatusCode::OK, "text/plain", "ok\n"),
        api::READYZ if !stopping => reply(StatusCode::OK, "text/plain", "ready\n"),
        api::READYZ => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down\n"),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try / (the status page), /metrics, /healthz, /readyz, /admin/cache, /admin/cache/ls, POST /admin/gc, POST /admin/purge?image=, POST /admin/prefetch, POST /admin/unpin?image=, GET /admin/export?image=, POST /admin/import or POST /admin/repos?name=\n",
        ),
    }
}

/// Serves the admin endpoints until `done` turns true, then lets open admin requests finish until
/// the shutdown deadline. `/readyz` fails as soon as `stopping` carries that deadline, while
/// registry connections drain, so load balancers stop sending new pulls.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    guard: Arc<AdminGuard>,
    idle_timeout: Duration,
    stopping: watch::Receiver<Option<Instant>>,
    mut done: watch::Receiver<bool>,
) {
    let builder = accept::http_builder(idle_timeout);
    let deadline = stopping.clone();
    let serve = move |Accepted { stream, watcher, .. }: Accepted| {
        let (state, guard, stopping) = (state.clone(), guard.clone(), stopping.clone());
        let first = FirstRequest::default();
        let arrived = first.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            arrived.arrived();
            let (state, guard) = (state.clone(), guard.clone());
            let stopping = stopping.borrow().is_some();
            async move {
                let resp: Response<bundle::Body> = match req.uri().path() {
                    api::PREFETCH => prefetch::prefetch(&state, &guard, req)
                        .await
                        .map(|b| b.map_err(|never| match never {}).boxed()),
                    api::IMPORT => bundle::import(&state, &guard, req).await,
                    api::EXPORT => bundle::export(&state, &guard, &req).await,
                    _ => answer(&state, &guard, stopping, &req)
                        .await
                        .map(|b| b.map_err(|never| match never {}).boxed()),
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
        async move {
            let _ = first.within(idle_timeout, conn).await;
        }
    };
    let stop = async move {
        let _ = done.wait_for(|d| *d).await;
        let deadline = *deadline.borrow();
        deadline.unwrap_or_else(Instant::now)
    };
    accept::accept_loop("admin", listener, ADMIN_MAX_CONNECTIONS, stop, serve).await
}
