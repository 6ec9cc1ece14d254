//! Blobs through the pull-through policy. A cached blob is served from disk with no upstream
//! request, under a lease that keeps it from eviction until the body is done. A miss joins or
//! starts the digest's single fill, whose origin is the upstream (`UpstreamOrigin`), and streams
//! from its growing file (or from upstream when the cache cannot keep it). `HEAD` never
//! downloads: it answers from the cache, a running fill, or an upstream `HEAD`.

use std::sync::Arc;

use http::header::{CONTENT_RANGE, RANGE};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;

use super::{content_length, At, Mirror};
use crate::cache::origin::{Fetched, Fetching, Origin, OriginError};
use crate::cache::{FillState, Lookup, Source};
use crate::oci::{Digest, RepoName};
use crate::registry::{Blob, CacheResult, RegistryError, Subject};
use crate::upstream::Upstream;

/// A blob at one upstream repository, as a fill's origin.
struct UpstreamOrigin {
    upstream: Arc<Upstream>,
    repo: RepoName,
    digest: Digest,
}

impl Origin for UpstreamOrigin {
    fn name(&self) -> &str {
        self.upstream.host()
    }

    fn fetch(&self) -> Fetching {
        let upstream = self.upstream.clone();
        let (repo, tail) = (self.repo.clone(), format!("blobs/{}", self.digest));
        Box::pin(async move {
            let resp = upstream
                .request(Method::GET, &repo, &tail, &HeaderMap::new())
                .await?;
            let size = content_length(resp.headers());
            let body = resp
                .into_body()
                .map_err(|e| -> OriginError { Box::new(e) })
                .boxed_unsync();
            Ok(Fetched { size, body })
        })
    }

    fn fetch_range(&self, start: u64, end: u64) -> Fetching {
        let upstream = self.upstream.clone();
        let (repo, tail) = (self.repo.clone(), format!("blobs/{}", self.digest));
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            let range = format!("bytes={start}-{}", end - 1);
            headers.insert(RANGE, range.parse().map_err(|_| "bad range")?);
            let resp = upstream.request(Method::GET, &repo, &tail, &headers).await?;
            // Exactly the range asked for, or nothing: a 200 with the whole blob is no answer.
            let expected = format!("bytes {start}-{}/", end - 1);
            let exact = resp.status() == StatusCode::PARTIAL_CONTENT
                && content_length(resp.headers()) == Some(end - start)
                && resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&expected));
            if !exact {
                return Err(format!("upstream did not answer the range {range} exactly").into());
            }
            let body = resp
                .into_body()
                .map_err(|e| -> OriginError { Box::new(e) })
                .boxed_unsync();
            Ok(Fetched {
                size: Some(end - start),
                body,
            })
        })
    }
}

impl Mirror {
    pub(crate) async fn blob(&self, at: &At<'_>, digest: &Digest) -> Result<Blob, RegistryError> {
        let origin = Arc::new(UpstreamOrigin {
            upstream: at.upstream.clone(),
            repo: at.repo.clone(),
            digest: digest.clone(),
        });
        match self.cache.blob(digest, origin)? {
            Lookup::Hit(blob) => {
                self.ensure_linked(at, digest, Subject::Blob).await?;
                tracing::debug!(%digest, size = blob.size, "blob hit");
                Ok(Blob {
                    size: Some(blob.size),
                    result: CacheResult::Hit,
                    source: Source::Complete(blob),
                })
            }
            Lookup::Filling { fill, joined } => {
                let p = fill.started().await;
                if let FillState::Failed(e) = p.state {
                    return Err(RegistryError::Fill {
                        subject: Subject::Blob,
                        source: e,
                    });
                }
                if joined {
                    self.ensure_linked(at, digest, Subject::Blob).await?;
                } else {
                    self.link_when_verified(at, digest, fill.clone());
                }
                tracing::debug!(%digest, size = ?p.size, written = p.written, joined, "blob streaming from fill");
                Ok(Blob {
                    size: p.size,
                    result: if joined {
                        CacheResult::Coalesced
                    } else {
                        CacheResult::Miss
                    },
                    source: Source::Filling(fill),
                })
            }
        }
    }

    /// The blob's size without downloading it.
    pub(crate) async fn blob_size(
        &self,
        at: &At<'_>,
        digest: &Digest,
    ) -> Result<(u64, CacheResult), RegistryError> {
        let known = if let Some(size) = self.cache.blob_size(digest) {
            Some(size)
        } else if let Some(fill) = self.cache.filling(digest) {
            let p = fill.started().await;
            p.size.filter(|_| !matches!(p.state, FillState::Failed(_)))
        } else {
            self.cache.shared_blob_size(digest).await
        };
        if let Some(size) = known {
            self.ensure_linked(at, digest, Subject::Blob).await?;
            return Ok((size, CacheResult::Hit));
        }
        let size = self
            .head_blob(at, digest)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(format!("upstream gave no size for {digest}")))?;
        Ok((size, CacheResult::Miss))
    }

    /// An upstream `HEAD` of a blob in this repository; its announced size.
    pub(super) async fn head_blob(&self, at: &At<'_>, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        let resp = at
            .upstream
            .request(
                Method::HEAD,
                at.repo,
                &format!("blobs/{digest}"),
                &HeaderMap::new(),
            )
            .await
            .map_err(RegistryError::upstream(Subject::Blob))?;
        Ok(content_length(resp.headers()))
    }
}
