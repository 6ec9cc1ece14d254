//! `POST /admin/repos?name=NAME`: creates a repository in a hosted namespace (what `regcache repo
//! create` sends), for namespaces with `create_on_push = false`, where a push to a repository
//! that was never created is refused. Guarded like every state change.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{guarded_post, json, reply, AdminGuard, State};
use crate::registry::RegistryError;

pub(super) async fn create(
    state: &Arc<State>,
    guard: &AdminGuard,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let name: String = match guarded_post(guard, req, "name") {
        Ok(n) => n,
        Err(refused) => return *refused,
    };
    match state.registry.create_hosted_repository(&name).await {
        Ok(report) => json(&report),
        Err(e @ (RegistryError::NameUnknown(_) | RegistryError::NameInvalid(_))) => {
            reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
    }
}
