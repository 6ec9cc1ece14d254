//! `GET`/`HEAD /v2/<name>/blobs/<digest>`. A cached blob is served from disk with no upstream
//! request, under a lease that keeps it from eviction until the body is done. A miss joins or
//! starts the digest's single fill and streams from its growing file (or from upstream when the
//! cache cannot keep it). Ranges are served from either. `HEAD` never downloads: it answers from
//! the cache, a running fill, or an upstream `HEAD`.

use std::sync::Arc;

use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE};
use http::{HeaderMap, Method, Response, StatusCode};

use super::range;
use super::response::{empty, ServeBody, ServeError, Subject};
use super::route::Route;
use super::{CacheResult, State};
use crate::cache::{BlobBody, FillState, Lookup, Source};
use crate::oci::Digest;

pub async fn handle(
    state: &State,
    route: &Route,
    digest: &Digest,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<ServeBody>, ServeError> {
    let range_header = headers.get(RANGE).and_then(|v| v.to_str().ok());
    if *method == Method::HEAD {
        return head(state, route, digest).await;
    }
    let origin = Arc::new(BlobOrigin {
        upstream: route.upstream.clone(),
        repo: route.repo.clone(),
        digest: digest.clone(),
    });
    let lookup = state.cache.fills.get_or_start(digest, origin)?;
    let (mut resp, result) = match lookup {
        Lookup::Hit(blob) => {
            let size = blob.size;
            tracing::debug!(%digest, size, "blob hit");
            (
                respond(digest, Source::Complete(blob), Some(size), range_header)?,
                CacheResult::Hit,
            )
        }
        Lookup::Filling { fill, joined } => {
            let p = fill.started().await;
            if let FillState::Failed(e) = p.state {
                return Err(ServeError::Fill {
                    subject: Subject::Blob,
                    source: e,
                });
            }
            tracing::debug!(%digest, size = ?p.size, written = p.written, joined, "blob streaming from fill");
            let result = if joined {
                CacheResult::Coalesced
            } else {
                CacheResult::Miss
            };
            (
                respond(digest, Source::Filling(fill), p.size, range_header)?,
                result,
            )
        }
    };
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
    source: Source,
    size: Option<u64>,
    range_header: Option<&str>,
) -> Result<Response<ServeBody>, ServeError> {
    let Some(size) = size else {
        // Upstream sent no length: stream everything, chunked; ranges need the size.
        let body = BlobBody::spawn(source, 0, None);
        return headers_for(digest)
            .body(http_body_util::BodyExt::boxed(body))
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
    let body = BlobBody::spawn(source, start, Some(end));
    resp.body(http_body_util::BodyExt::boxed(body)).map_err(internal)
}

fn internal(e: http::Error) -> ServeError {
    ServeError::Internal(e.to_string())
}

async fn head(state: &State, route: &Route, digest: &Digest) -> Result<Response<ServeBody>, ServeError> {
    let fills = &state.cache.fills;
    let known = if let Some(size) = fills.cached_size(digest) {
        Some(size)
    } else if let Some(fill) = fills.active(digest) {
        let p = fill.started().await;
        p.size.filter(|_| !matches!(p.state, FillState::Failed(_)))
    } else {
        None
    };
    let result = if known.is_some() {
        CacheResult::Hit
    } else {
        CacheResult::Miss
    };
    let size = match known {
        Some(s) => s,
        None => {
            let resp = route
                .upstream
                .request(
                    Method::HEAD,
                    &route.repo,
                    &format!("blobs/{digest}"),
                    &HeaderMap::new(),
                )
                .await
                .map_err(ServeError::upstream(Subject::Blob))?;
            resp.headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ServeError::BlobUnknown(format!("upstream gave no size for {digest}")))?
        }
    };
    let mut resp = headers_for(digest)
        .header(CONTENT_LENGTH, size)
        .body(empty())
        .map_err(internal)?;
    resp.extensions_mut().insert(result);
    Ok(resp)
}

struct BlobOrigin {
    upstream: Arc<crate::upstream::Upstream>,
    repo: crate::oci::RepoName,
    digest: Digest,
}

impl crate::cache::origin::Origin for BlobOrigin {
    fn name(&self) -> &str {
        self.upstream.host()
    }

    fn fetch(&self) -> crate::cache::origin::Fetching {
        let (upstream, repo, tail) = (
            self.upstream.clone(),
            self.repo.clone(),
            format!("blobs/{}", self.digest),
        );
        Box::pin(async move {
            let resp = upstream
                .request(Method::GET, &repo, &tail, &HeaderMap::new())
                .await?;
            let size = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(
                resp.into_body(),
                |e| -> crate::cache::origin::OriginError { Box::new(e) },
            ));
            Ok(crate::cache::origin::Fetched { size, body })
        })
    }
}
