//! `GET`/`HEAD /v2/<name>/blobs/<digest>`: asks the registry layer for the blob and streams it,
//! whole or the requested `Range`, from the cache or from its single download (a cached file
//! with sendfile where the connection offers it: `splice.rs`). `HEAD` never downloads.

use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::range;
use super::response::{empty, ServeBody, ServeError};
use super::State;
use crate::oci::Digest;
use crate::registry::{Blob, Client, Repo};
use crate::splice::Splice;

pub(super) async fn handle(
    state: &State,
    client: &Client,
    repo: &Repo,
    digest: &Digest,
    method: &Method,
    headers: &HeaderMap,
    splice: Option<&Splice>,
) -> Result<Response<ServeBody>, ServeError> {
    if *method == Method::HEAD {
        let (size, result) = state.registry.blob_size(client, repo, digest).await?;
        let mut resp = headers_for(digest)
            .header(CONTENT_LENGTH, size)
            .body(empty())
            .map_err(internal)?;
        resp.extensions_mut().insert(result);
        return Ok(resp);
    }
    let range_header = headers.get(RANGE).and_then(|v| v.to_str().ok());
    let blob = state.registry.blob(client, repo, digest).await?;
    let result = blob.result;
    let mut resp = respond(digest, blob, range_header, splice.cloned())?;
    resp.extensions_mut().insert(result);
    Ok(resp)
}

fn headers_for(digest: &Digest) -> http::response::Builder {
    Response::builder()
        .header("docker-content-digest", digest.to_string())
        .header(ETAG, format!("\"{digest}\""))
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(ACCEPT_RANGES, "bytes")
}

fn respond(
    digest: &Digest,
    blob: Blob,
    range_header: Option<&str>,
    splice: Option<Splice>,
) -> Result<Response<ServeBody>, ServeError> {
    let Some(size) = blob.size else {
        // Upstream sent no length: stream everything, chunked; ranges need the size.
        return headers_for(digest)
            .body(blob.body(0, None, None).boxed())
            .map_err(internal);
    };
    let (status, start, end) = match range::parse(range_header, size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Err(range::Unsatisfiable) => return Err(ServeError::RangeNotSatisfiable { size }),
    };
    let mut resp = headers_for(digest)
        .status(status)
        .header(CONTENT_LENGTH, end - start);
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(CONTENT_RANGE, format!("bytes {}-{}/{}", start, end - 1, size));
    }
    resp.body(blob.body(start, Some(end), splice).boxed())
        .map_err(internal)
}

fn internal(e: http::Error) -> ServeError {
    ServeError::Internal(e.to_string())
}
