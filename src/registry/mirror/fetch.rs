//! The upstream side of manifest requests: one coalesced `HEAD` or `GET` per (upstream,
//! repository, reference) however many clients ask at once, the digest check (the requested
//! digest, else the upstream's `Docker-Content-Digest`, else sha256 of the bytes), and storing the
//! verified bytes.

use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, Limited};

use super::{content_length, At, Mirror};
use crate::cache::StoredManifest;
use crate::oci::{Digest, MediaType, MANIFEST_ACCEPT};
use crate::registry::{CacheResult, Manifest, RegistryError, Subject};
use crate::upstream::Fallback;

/// What an upstream `HEAD` tells: digest, media type and size, no bytes.
pub(super) type Head = Manifest;

fn accept_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&MANIFEST_ACCEPT.join(", ")) {
        h.insert(ACCEPT, v);
    }
    h
}

fn media_type_of(headers: &HeaderMap, bytes: Option<&[u8]>) -> String {
    let declared = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .filter(|v| v.starts_with("application/vnd."));
    if let Some(t) = declared {
        return t;
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe = bytes.and_then(|b| serde_json::from_slice::<Probe>(b).ok());
    match probe {
        Some(Probe {
            media_type: Some(t), ..
        }) => t,
        Some(Probe {
            manifests: Some(_), ..
        }) => MediaType::OCI_INDEX.to_string(),
        _ => MediaType::OCI_MANIFEST.to_string(),
    }
}

fn ended() -> Arc<RegistryError> {
    Arc::new(RegistryError::Internal("upstream request task ended".into()))
}

impl Mirror {
    /// One upstream `HEAD` for a manifest, shared by concurrent requests for the same reference.
    pub(super) async fn head_upstream(
        &self,
        at: &At<'_>,
        reference: &str,
        deadline: Option<Duration>,
        fallback: Fallback,
    ) -> Result<Head, RegistryError> {
        let (upstream, repo, r) = (at.upstream.clone(), at.repo.clone(), reference.to_string());
        let (v, joined) = self
            .manifest_heads
            .run(at.key(reference), move || async move {
                head_now(
                    &At {
                        upstream: &upstream,
                        repo: &repo,
                    },
                    &r,
                    deadline,
                    fallback,
                )
                .await
                .map_err(Arc::new)
            })
            .await;
        self.coalesced(joined);
        let head = v.unwrap_or_else(|| Err(ended())).map_err(RegistryError::Shared)?;
        Ok(if joined {
            head.with(CacheResult::Coalesced)
        } else {
            head
        })
    }

    /// One upstream `GET` for a manifest, shared by concurrent requests for the same reference;
    /// the verified bytes are kept in the cache.
    pub(super) async fn fetch(
        &self,
        at: &At<'_>,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<Manifest, RegistryError> {
        let (upstream, repo, r) = (at.upstream.clone(), at.repo.clone(), reference.to_string());
        let expected = expected.cloned();
        let (cache, limit) = (self.cache.clone(), self.policy.max_manifest_size as usize);
        let (v, joined) = self
            .manifest_gets
            .run(at.key(reference), move || async move {
                let at = At {
                    upstream: &upstream,
                    repo: &repo,
                };
                let m = fetch_now(&at, &r, expected.as_ref(), limit).await?;
                upstream.fetched_bytes().inc_by(m.bytes.len() as u64);
                cache
                    .put_manifest(&m)
                    .await
                    .map_err(|e| Arc::new(RegistryError::from(e)))?;
                tracing::info!(%repo, reference = r, digest = %m.digest, "manifest cached");
                Ok(m)
            })
            .await;
        self.coalesced(joined);
        let m = v.unwrap_or_else(|| Err(ended())).map_err(RegistryError::Shared)?;
        Ok(Manifest::from(m).with(if joined {
            CacheResult::Coalesced
        } else {
            CacheResult::Miss
        }))
    }
}

pub(super) async fn head_now(
    at: &At<'_>,
    reference: &str,
    deadline: Option<Duration>,
    fallback: Fallback,
) -> Result<Head, RegistryError> {
    let resp = at
        .upstream
        .request_within(
            Method::HEAD,
            at.repo,
            &format!("manifests/{reference}"),
            &accept_headers(),
            deadline,
            fallback,
        )
        .await
        .map_err(RegistryError::upstream(Subject::Manifest))?;
    let h = resp.headers();
    let digest = h
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    match (digest, content_length(h)) {
        (Some(digest), Some(size)) => Ok(Manifest {
            digest,
            media_type: media_type_of(h, None),
            size,
            bytes: None,
            result: CacheResult::Miss,
        }),
        _ => Err(RegistryError::BadUpstreamManifest(format!(
            "HEAD {reference} lacks Docker-Content-Digest or Content-Length"
        ))),
    }
}

/// GETs a manifest and checks its digest (the requested one, else the upstream's header, else
/// sha256 of the bytes).
async fn fetch_now(
    at: &At<'_>,
    reference: &str,
    expected: Option<&Digest>,
    limit: usize,
) -> Result<StoredManifest, Arc<RegistryError>> {
    let resp = at
        .upstream
        .request(
            Method::GET,
            at.repo,
            &format!("manifests/{reference}"),
            &accept_headers(),
        )
        .await
        .map_err(RegistryError::upstream(Subject::Manifest))?;
    let headers = resp.headers().clone();
    let bytes = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| RegistryError::BadUpstreamManifest(format!("reading {reference}: {e}")))?
        .to_bytes();
    let claimed = headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let digest = match expected.cloned().or(claimed) {
        Some(w) => {
            let actual = Digest::of(w.algorithm(), &bytes);
            if actual != w {
                return Err(Arc::new(RegistryError::BadUpstreamManifest(format!(
                    "{reference}: content is {actual}, expected {w}"
                ))));
            }
            w
        }
        None => Digest::sha256_of(&bytes),
    };
    Ok(StoredManifest {
        media_type: media_type_of(&headers, Some(&bytes)),
        digest,
        bytes,
    })
}
