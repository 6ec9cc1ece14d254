//! `POST /admin/repos?name=NAME`: creates a repository in a hosted namespace (what `regcache repo
//! create` sends), for namespaces with `create_on_push = false`, where a push to a repository
//! that was never created is refused. Guarded like every state change.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{json, refuse, reply, AdminGuard, State};
use crate::registry::RegistryError;

pub(super) async fn create(
    state: &Arc<State>,
    guard: &AdminGuard,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n");
    }
    if let Err(denied) = guard.check(req.headers()) {
        return refuse(denied);
    }
    let Some(name) = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.into_owned())
    else {
        return reply(StatusCode::BAD_REQUEST, "text/plain", "name= is missing\n");
    };
    match state.registry.create_hosted_repository(&name).await {
        Ok(report) => json(&report),
        Err(e @ (RegistryError::NameUnknown(_) | RegistryError::NameInvalid(_))) => {
            reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
    }
}
