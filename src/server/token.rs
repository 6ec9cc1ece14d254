//! `GET /token`: the token endpoint of the Docker token flow. The client (identified by Basic
//! credentials like any request, or anonymous) gets a short-lived bearer token naming it;
//! `service`, `scope` and `account` are accepted and not needed: what a token's holder may
//! read is decided per request. Other methods get 405, on which containerd falls back from its
//! OAuth2 POST to this GET.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::Response;

use super::response::{full, ServeBody, ServeError};
use super::State;
use crate::registry::Client;

pub(super) fn issue(state: &State, client: &Client) -> Result<Response<ServeBody>, ServeError> {
    let issued = state.auth.issue_token(client.identity.as_deref());
    let body = serde_json::json!({
        "token": issued.token.expose(),
        "access_token": issued.token.expose(),
        "expires_in": issued.expires_in.as_secs(),
        "issued_at": issued.issued_at,
    });
    Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(full(body.to_string()))
        .map_err(|e| ServeError::Internal(e.to_string()))
}
