//! The HTTP side: accepting connections (HTTP/1.1 and HTTP/2), one tracing span per request,
//! routing, and dispatch to one handler per endpoint family, which asks the registry layer and
//! renders its answer. Only `GET` and `HEAD` are served: a mirror is read-only, and a refused
//! write's body is read (bounded) before its 405, so a pushing client reads it (`refused.rs`).
//! Nothing here knows the configuration or the upstreams. The listener (`listen.rs`) speaks plain HTTP or
//! TLS (`tls.rs`); a connection's verified client certificate names the request's `Client`, HTTP
//! Basic credentials checked by `auth` (`authn.rs`) name it instead.

mod accept;
mod access_log;
pub mod admin;
mod authn;
mod blobs;
mod listen;
mod listing;
mod manifests;
mod range;
mod refused;
pub mod response;
mod route;
pub mod tls;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::auth::Auth;
use crate::cache::Cache;
use crate::metrics::{Metrics, RequestKind};
use crate::registry::{CacheResult, Client, Registry};
pub use accept::{ConnLimits, ADMIN_MAX_CONNECTIONS};
use access_log::{AccessLog, LoggedBody};
pub use listen::{serve, HANDSHAKE_TIMEOUT};
use response::{full, ServeBody, ServeError};
use route::{Endpoint, Parsed, RepoRequest};

/// Everything a request handler needs; immutable after start, shared by `Arc`.
pub struct State {
    pub registry: Registry,
    /// Checks credentials (the registry asks the same rules through `Access`).
    pub auth: Arc<Auth>,
    /// For the admin endpoints (stats, gc).
    pub cache: Arc<Cache>,
    pub metrics: Arc<Metrics>,
}

pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<LoggedBody> {
    let started = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    // A refused write's body is read first, so the client gets to read its 405.
    let close = match refused::is_refused(&parts.method) {
        true => refused::discard(body, parts.version).await,
        false => false,
    };
    let req = Request::from_parts(parts, ());
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (outcome, kind, upstream, client) = match authn::identify(&state, &req).await {
        Ok(client) => {
            let (outcome, kind, upstream) = dispatch(&state, &req, &client).await;
            (outcome, kind, upstream, client.identity)
        }
        Err(e) => (Err(e), RequestKind::Other, String::new(), None),
    };
    let mut resp = match outcome {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if resp.status() == http::StatusCode::UNAUTHORIZED {
        authn::challenge(&req, resp.headers_mut());
    }
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        http::HeaderValue::from_static("registry/2.0"),
    );
    if close {
        resp.headers_mut()
            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
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
    )
    .with_client(client);
    resp.map(|body| LoggedBody::new(body, log))
}

type Outcome = (Result<Response<ServeBody>, ServeError>, RequestKind, String);

async fn dispatch(state: &Arc<State>, req: &Request<()>, client: &Client) -> Outcome {
    let method = req.method();
    if refused::is_refused(method) {
        let e = ServeError::Unsupported(format!("{method} is not supported: this mirror is read-only"));
        return (Err(e), RequestKind::Other, String::new());
    }
    let uri = req.uri();
    if uri.path() == authn::TOKEN_PATH {
        return (token::issue(state, client), RequestKind::Other, String::new());
    }
    let parsed = match route::parse(uri.path(), uri.query()) {
        Ok(p) => p,
        Err(e) => return (Err(e), RequestKind::Other, String::new()),
    };
    match parsed {
        Parsed::Base if client.identity.is_none() && state.auth.wants_login() => (
            Err(ServeError::Unauthorized("log in to use this registry".into())),
            RequestKind::Base,
            String::new(),
        ),
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
        Parsed::Repo(request) => repo_request(state, req, client, &request).await,
    }
}

async fn repo_request(
    state: &Arc<State>,
    req: &Request<()>,
    client: &Client,
    request: &RepoRequest,
) -> Outcome {
    let kind = match &request.endpoint {
        Endpoint::Manifest(_) => RequestKind::Manifest,
        Endpoint::Blob(_) => RequestKind::Blob,
        Endpoint::Tags => RequestKind::Tags,
        Endpoint::Referrers(_) => RequestKind::Referrers,
    };
    let repo = match state
        .registry
        .locate(request.host.as_ref(), &request.name, request.ns.as_deref())
    {
        Ok(r) => r,
        Err(e) => return (Err(e.into()), RequestKind::Other, String::new()),
    };
    let upstream = repo.namespace().to_string();
    let (method, query) = (req.method(), req.uri().query());
    let span = tracing::info_span!("repo", upstream = %upstream, repo = %repo.name());
    let r = async {
        match &request.endpoint {
            Endpoint::Manifest(r) => manifests::handle(state, client, &repo, r, method, req.headers()).await,
            Endpoint::Blob(d) => blobs::handle(state, client, &repo, d, method, req.headers()).await,
            Endpoint::Tags => listing::tags(state, client, &repo, request, query).await,
            Endpoint::Referrers(d) => listing::referrers(state, client, &repo, d, query).await,
        }
    }
    .instrument(span)
    .await;
    (r, kind, upstream)
}

/// The address a listener reports, for logs.
pub fn describe(addr: SocketAddr, tls: bool) -> String {
    match tls {
        true => format!("https://{addr}"),
        false => format!("http://{addr}"),
    }
}
