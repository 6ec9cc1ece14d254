//! Referrers, and the upstream listing fetch tag lists (`tag_list.rs`) share. The last answer is
//! kept, so referrers keep working offline or while the upstream is down. Referrers fall back to
//! the OCI tag schema (`sha256-<hex>`) when the upstream has no referrers API, so cosign-style
//! signatures keep working through the mirror; `artifactType` filtering is done here.

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{At, Mirror};
use crate::oci::Digest;
use crate::registry::{CacheResult, Referrers, RegistryError, Subject};

const MAX_LISTING: usize = 16 * 1024 * 1024;

impl Mirror {
    pub(crate) async fn referrers(
        &self,
        at: &At<'_>,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, RegistryError> {
        let doc = referrers_doc(digest);
        let host = at.upstream.host();
        let tail = format!("referrers/{digest}");
        let fetched = fetch_json(at, &tail, Subject::Manifest, MAX_LISTING)
            .await
            .and_then(|f| {
                f.ok_or_else(|| RegistryError::Internal(format!("referrers index over {MAX_LISTING} bytes")))
            });
        let (index, result) = match fetched {
            Ok((_, body)) => {
                self.cache.put_doc(host, at.repo, &doc, &body).await?;
                (body, CacheResult::Pass)
            }
            Err(e) if e.endpoint_missing() => {
                // No referrers API upstream (distribution 2.x, Docker Hub): the tag schema.
                let tag = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
                let body = self.tag_schema_index(at, &tag).await?.unwrap_or_else(empty_index);
                self.cache.put_doc(host, at.repo, &doc, &body).await?;
                (body, CacheResult::Pass)
            }
            Err(e) => {
                let kept = match e.kept_copy_allowed() {
                    true => self.cache.doc(host, at.repo, &doc).await?,
                    false => None,
                };
                match kept {
                    Some(kept) => (kept, CacheResult::Stale),
                    None => return Err(e),
                }
            }
        };
        let body = match artifact_type {
            Some(t) => filter_index(&index, t)?,
            None => index,
        };
        Ok(Referrers {
            body,
            filtered: artifact_type.is_some(),
            result,
        })
    }
}

/// The name of the kept referrers list of a subject, per repository.
pub(crate) fn referrers_doc(subject: &Digest) -> String {
    format!("referrers-{}-{}", subject.algorithm().as_str(), subject.hex())
}

pub(crate) fn empty_index() -> Bytes {
    Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    )
}

pub(crate) fn filter_index(index: &[u8], artifact_type: &str) -> Result<Bytes, RegistryError> {
    let mut v: serde_json::Value = serde_json::from_slice(index)
        .map_err(|e| RegistryError::BadUpstreamManifest(format!("referrers index is not JSON: {e}")))?;
    if let Some(list) = v.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        list.retain(|d| d.get("artifactType").and_then(|t| t.as_str()) == Some(artifact_type));
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| RegistryError::Internal(e.to_string()))
}

/// An upstream listing's headers and body; `None` when the body is longer than `limit`.
pub(super) async fn fetch_json(
    at: &At<'_>,
    tail: &str,
    subject: Subject,
    limit: usize,
) -> Result<Option<(HeaderMap, Bytes)>, RegistryError> {
    let resp = at
        .upstream
        .request(Method::GET, at.repo, tail, &HeaderMap::new())
        .await
        .map_err(RegistryError::upstream(subject))?;
    let headers = resp.headers().clone();
    match Limited::new(resp.into_body(), limit).collect().await {
        Ok(body) => Ok(Some((headers, body.to_bytes()))),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Ok(None),
        Err(e) => Err(RegistryError::Internal(format!("reading upstream listing: {e}"))),
    }
}
