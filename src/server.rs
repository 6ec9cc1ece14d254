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
mod push;
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
use crate::splice::Splice;
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
    // A push to a hosted repository keeps its body; a refused write's body is read first, so
    // the client gets to read its 405.
    let (body, close) = if hosted_push(&state, &parts) {
        (Some(body), false)
    } else if refused::is_refused(&parts.method) {
        (None, refused::discard(body, parts.version).await)
    } else {
        (None, false)
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
            let (outcome, kind, upstream) = dispatch(&state, &req, &client, body).await;
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

/// Whether a request is a push (or an upload's status) to a hosted repository. A pull (`GET` or
/// `HEAD` of anything but an upload) is answered at once, without routing twice.
fn hosted_push(state: &State, parts: &http::request::Parts) -> bool {
    let pull = matches!(parts.method, http::Method::GET | http::Method::HEAD);
    if (pull && !parts.uri.path().contains("/blobs/uploads")) || !state.registry.hosts_repositories() {
        return false;
    }
    match route::parse(parts.uri.path(), parts.uri.query()) {
        Ok(Parsed::Repo(r)) => {
            push::is_push(&parts.method, &r.endpoint)
                && state
                    .registry
                    .locate(r.host.as_ref(), &r.name, r.ns.as_deref())
                    .is_ok_and(|repo| repo.is_hosted())
        }
        _ => false,
    }
}

async fn dispatch(state: &Arc<State>, req: &Request<()>, client: &Client, body: Option<Incoming>) -> Outcome {
    let method = req.method();
    if refused::is_refused(method) && body.is_none() {
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
        Parsed::Catalog if state.registry.hosts_repositories() => (
            listing::catalog(state, client, uri.query()).await,
            RequestKind::Other,
            String::new(),
        ),
        Parsed::Catalog => (
            Err(ServeError::Unsupported(
                "a mirror does not list upstream repositories".into(),
            )),
            RequestKind::Other,
            String::new(),
        ),
        Parsed::Repo(request) => repo_request(state, req, client, &request, body).await,
    }
}

async fn repo_request(
    state: &Arc<State>,
    req: &Request<()>,
    client: &Client,
    request: &RepoRequest,
    body: Option<Incoming>,
) -> Outcome {
    let kind = match &request.endpoint {
        Endpoint::Manifest(_) => RequestKind::Manifest,
        Endpoint::Blob(_) | Endpoint::Upload(_) => RequestKind::Blob,
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
        if push::is_push(method, &request.endpoint) {
            return match repo.is_hosted() {
                true => push::handle(state, req, body, client, &repo, request).await,
                false => Err(ServeError::Unsupported(format!(
                    "{}/{} is mirrored, and a mirror is read-only: push to a hosted namespace",
                    repo.namespace(),
                    repo.name()
                ))),
            };
        }
        match &request.endpoint {
            Endpoint::Upload(_) => Err(ServeError::Unsupported("not an upload".into())),
            Endpoint::Manifest(r) => manifests::handle(state, client, &repo, r, method, req.headers()).await,
            Endpoint::Blob(d) => {
                let splice = req.extensions().get::<Splice>();
                blobs::handle(state, client, &repo, d, method, req.headers(), splice).await
            }
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
