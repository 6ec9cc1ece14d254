//! JSON listings: tag lists and referrers. Both are asked upstream and their last answer is kept,
//! so they keep working offline or while the upstream is down. A kept tag list is paged here with
//! `n`/`last`. Referrers fall back to the OCI tag schema (`sha256-<hex>`) when the upstream has no
//! referrers API, so cosign-style signatures keep working through the mirror; `artifactType`
//! filtering is done here.

use bytes::Bytes;
use http::header::LINK;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Limited};

use super::{At, Mirror};
use crate::oci::Digest;
use crate::registry::{CacheResult, Referrers, RegistryError, Subject, TagPage};

const MAX_LISTING: usize = 16 * 1024 * 1024;
const TAGS_DOC: &str = "tags-list";

/// Which page of a tag list a client asked for.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub n: Option<usize>,
    pub last: Option<String>,
}

impl Page {
    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = self.n {
            q.append_pair("n", &n.to_string());
        }
        if let Some(last) = &self.last {
            q.append_pair("last", last);
        }
        q.finish()
    }
}

impl Mirror {
    pub(crate) async fn tags(&self, at: &At<'_>, page: &Page) -> Result<TagPage, RegistryError> {
        let q = page.query();
        let tail = if q.is_empty() {
            "tags/list".to_string()
        } else {
            format!("tags/list?{q}")
        };
        let host = at.upstream.host();
        let e = match fetch_json(at, &tail, Subject::Repository).await {
            Ok((headers, body)) => {
                if q.is_empty() {
                    self.cache.put_doc(host, at.repo, TAGS_DOC, &body).await?;
                }
                let next = headers
                    .get(LINK)
                    .and_then(|v| v.to_str().ok())
                    .and_then(next_query);
                return Ok(TagPage {
                    body,
                    next,
                    result: CacheResult::Pass,
                });
            }
            Err(e) => e,
        };
        let kept = match e.kept_copy_allowed() {
            true => self.cache.doc(host, at.repo, TAGS_DOC).await?,
            false => None,
        };
        let Some(kept) = kept else {
            return Err(e);
        };
        tracing::debug!(repo = %at.repo, error = %e, "serving the kept tag list");
        let (body, more) = paginate(&kept, page)?;
        let next = more.map(|after| {
            vec![
                ("n".to_string(), page.n.unwrap_or(0).to_string()),
                ("last".to_string(), after),
            ]
        });
        Ok(TagPage {
            body,
            next,
            result: CacheResult::Stale,
        })
    }

    pub(crate) async fn referrers(
        &self,
        at: &At<'_>,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, RegistryError> {
        let doc = format!("referrers-{}-{}", digest.algorithm().as_str(), digest.hex());
        let host = at.upstream.host();
        let (index, result) = match fetch_json(at, &format!("referrers/{digest}"), Subject::Manifest).await {
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

#[derive(serde::Deserialize, serde::Serialize)]
struct TagList {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// One page of a kept tag list, and the last tag of the page when more follow.
fn paginate(kept: &[u8], page: &Page) -> Result<(Bytes, Option<String>), RegistryError> {
    let mut list: TagList = serde_json::from_slice(kept)
        .map_err(|e| RegistryError::Internal(format!("kept tag list is not JSON: {e}")))?;
    list.tags.sort();
    let last = page.last.as_deref();
    list.tags.retain(|t| last.is_none_or(|l| t.as_str() > l));
    let more = match page.n {
        Some(n) if list.tags.len() > n => {
            list.tags.truncate(n);
            list.tags.last().cloned()
        }
        _ => None,
    };
    let body = serde_json::to_vec(&list).map_err(|e| RegistryError::Internal(e.to_string()))?;
    Ok((Bytes::from(body), more))
}

fn empty_index() -> Bytes {
    Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    )
}

fn filter_index(index: &[u8], artifact_type: &str) -> Result<Bytes, RegistryError> {
    let mut v: serde_json::Value = serde_json::from_slice(index)
        .map_err(|e| RegistryError::BadUpstreamManifest(format!("referrers index is not JSON: {e}")))?;
    if let Some(list) = v.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        list.retain(|d| d.get("artifactType").and_then(|t| t.as_str()) == Some(artifact_type));
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| RegistryError::Internal(e.to_string()))
}

async fn fetch_json(at: &At<'_>, tail: &str, subject: Subject) -> Result<(HeaderMap, Bytes), RegistryError> {
    let resp = at
        .upstream
        .request(Method::GET, at.repo, tail, &HeaderMap::new())
        .await
        .map_err(RegistryError::upstream(subject))?;
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_LISTING)
        .collect()
        .await
        .map_err(|e| RegistryError::Internal(format!("reading upstream listing: {e}")))?
        .to_bytes();
    Ok((headers, body))
}

/// `<…?n=2&last=b>; rel="next"` from upstream → the next page's query, without `ns`.
fn next_query(link: &str) -> Option<Vec<(String, String)>> {
    let target = link.split('<').nth(1)?.split('>').next()?;
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    Some(
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k != "ns")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}
