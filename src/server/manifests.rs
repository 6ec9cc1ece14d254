//! `GET`/`HEAD /v2/<name>/manifests/<reference>`: asks the registry layer for the manifest,
//! checks the client's `Accept`, and answers with the exact upstream bytes and their digest.

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::{HeaderMap, Method, Response};

use super::response::{empty, full, ServeBody, ServeError};
use super::State;
use crate::oci::{accepts, Reference};
use crate::registry::{Client, Repo};

pub(super) async fn handle(
    state: &State,
    client: &Client,
    repo: &Repo,
    reference: &Reference,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<ServeBody>, ServeError> {
    let head = *method == Method::HEAD;
    let answer = state.registry.manifest(client, repo, reference, head).await?;
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !accepts(accept.iter().copied(), &answer.media_type) {
        return Err(ServeError::NotAcceptable(format!(
            "{reference} is {}, which the request's Accept header does not allow",
            answer.media_type
        )));
    }
    let resp = Response::builder()
        .header(CONTENT_TYPE, &answer.media_type)
        .header(CONTENT_LENGTH, answer.size)
        .header("docker-content-digest", answer.digest.to_string())
        .header(ETAG, format!("\"{}\"", answer.digest));
    let body = match (head, answer.bytes) {
        (false, Some(b)) => full(b),
        _ => empty(),
    };
    let mut resp = resp.body(body).map_err(|e| ServeError::Internal(e.to_string()))?;
    resp.extensions_mut().insert(answer.result);
    Ok(resp)
}
