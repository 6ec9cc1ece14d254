//! JSON listings: `GET /v2/<name>/tags/list` and `GET /v2/<name>/referrers/<digest>`. Both are
//! asked upstream and their last answer is kept, so they keep working offline or while the
//! upstream is down. Tag lists paginate with `n`/`last`, and the upstream's `Link` is rewritten to
//! point back at this mirror under the client's own name and `ns`. Referrers fall back to the
//! OCI tag schema (`sha256-<hex>`) when the upstream has no referrers API, so cosign-style
//! signatures keep working through the mirror; `artifactType` filtering is done here.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::manifests;
use super::response::{full, ServeBody, ServeError, Subject};
use super::route::{query_param, Route};
use super::{CacheResult, State};
use crate::oci::{Digest, MediaType};
use crate::upstream::UpstreamError;

const MAX_LISTING: usize = 16 * 1024 * 1024;
const TAGS_DOC: &str = "tags-list";

pub async fn tags(
    state: &State,
    route: &Route,
    query: Option<&str>,
) -> Result<Response<ServeBody>, ServeError> {
    let n = match query_param(query, "n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ServeError::PaginationInvalid(format!("n={n:?} is not a number")))?,
        ),
        None => None,
    };
    let last = query_param(query, "last");
    let q = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = n {
            q.append_pair("n", &n.to_string());
        }
        if let Some(last) = &last {
            q.append_pair("last", last);
        }
        q.finish()
    };
    let tail = if q.is_empty() {
        "tags/list".to_string()
    } else {
        format!("tags/list?{q}")
    };
    let (host, repo) = (route.upstream.host(), &route.repo);
    match fetch_json(route, &tail, Subject::Repository).await {
        Ok((headers, body)) => {
            if q.is_empty() {
                state.cache.tags.put_doc(host, repo, TAGS_DOC, &body).await?;
            }
            let link = headers
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| rewrite_link(l, route, "tags/list"));
            json_response("application/json", body, link, CacheResult::Pass)
        }
        Err(e) => {
            let Some(kept) = fallback_allowed(&e)
                .then_some(())
                .and(state.cache.tags.get_doc(host, repo, TAGS_DOC).await?)
            else {
                return Err(e);
            };
            tracing::debug!(%repo, error = %e, "serving the kept tag list");
            let (body, more) = paginate(&kept, n, last.as_deref())?;
            let link = more.map(|after| {
                let q = next_query(route, n.unwrap_or(0), &after);
                format!("</v2/{}/tags/list?{q}>; rel=\"next\"", route.client_name)
            });
            json_response("application/json", body, link, CacheResult::Stale)
        }
    }
}

/// Serving kept copies makes sense when the upstream failed or was not asked, not when it
/// answered that the repository does not exist or refused access.
fn fallback_allowed(e: &ServeError) -> bool {
    match e {
        ServeError::Upstream { source, .. } => !matches!(
            source,
            UpstreamError::Denied { .. }
                | UpstreamError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }
        ),
        ServeError::Shared(inner) => fallback_allowed(inner),
        _ => false,
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
struct TagList {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// One page of a kept tag list, and the last tag of the page when more follow.
fn paginate(
    kept: &[u8],
    n: Option<usize>,
    last: Option<&str>,
) -> Result<(Bytes, Option<String>), ServeError> {
    let mut list: TagList = serde_json::from_slice(kept)
        .map_err(|e| ServeError::Internal(format!("kept tag list is not JSON: {e}")))?;
    list.tags.sort();
    list.tags.retain(|t| last.is_none_or(|l| t.as_str() > l));
    let more = match n {
        Some(n) if list.tags.len() > n => {
            list.tags.truncate(n);
            list.tags.last().cloned()
        }
        _ => None,
    };
    let body = serde_json::to_vec(&list).map_err(|e| ServeError::Internal(e.to_string()))?;
    Ok((Bytes::from(body), more))
}

fn next_query(route: &Route, n: usize, last: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("n", &n.to_string());
    q.append_pair("last", last);
    if let Some(ns) = &route.ns {
        q.append_pair("ns", ns);
    }
    q.finish()
}

fn json_response(
    content_type: &str,
    body: Bytes,
    link: Option<String>,
    result: CacheResult,
) -> Result<Response<ServeBody>, ServeError> {
    let mut resp = Response::builder()
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, body.len());
    if let Some(l) = link {
        resp = resp.header(LINK, l);
    }
    let mut resp = resp
        .body(full(body))
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    resp.extensions_mut().insert(result);
    Ok(resp)
}

pub async fn referrers(
    state: &Arc<State>,
    route: &Route,
    digest: &Digest,
    query: Option<&str>,
) -> Result<Response<ServeBody>, ServeError> {
    let artifact_type = query_param(query, "artifactType");
    let doc = format!("referrers-{}-{}", digest.algorithm().as_str(), digest.hex());
    let (host, repo) = (route.upstream.host(), &route.repo);
    let (index, result) = match fetch_json(route, &format!("referrers/{digest}"), Subject::Manifest).await {
        Ok((_, body)) => {
            state.cache.tags.put_doc(host, repo, &doc, &body).await?;
            (body, CacheResult::Pass)
        }
        Err(e) if is_not_found(&e) => {
            // No referrers API upstream (distribution 2.x, Docker Hub): the tag schema.
            let tag = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
            let body = manifests::tag_schema_index(state, route, &tag)
                .await?
                .unwrap_or_else(empty_index);
            state.cache.tags.put_doc(host, repo, &doc, &body).await?;
            (body, CacheResult::Pass)
        }
        Err(e) => match fallback_allowed(&e)
            .then_some(())
            .and(state.cache.tags.get_doc(host, repo, &doc).await?)
        {
            Some(kept) => (kept, CacheResult::Stale),
            None => return Err(e),
        },
    };
    let body = match &artifact_type {
        Some(t) => filter_index(&index, t)?,
        None => index,
    };
    let mut resp = json_response(MediaType::OCI_INDEX, body, None, result)?;
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            "oci-filters-applied",
            http::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}

fn is_not_found(e: &ServeError) -> bool {
    match e {
        ServeError::Upstream {
            source: UpstreamError::Status { status, .. },
            ..
        } => *status == StatusCode::NOT_FOUND || *status == StatusCode::METHOD_NOT_ALLOWED,
        ServeError::Shared(inner) => is_not_found(inner),
        _ => false,
    }
}

fn empty_index() -> Bytes {
    Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
    )
}

fn filter_index(index: &[u8], artifact_type: &str) -> Result<Bytes, ServeError> {
    let mut v: serde_json::Value = serde_json::from_slice(index)
        .map_err(|e| ServeError::BadUpstreamManifest(format!("referrers index is not JSON: {e}")))?;
    if let Some(list) = v.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        list.retain(|d| d.get("artifactType").and_then(|t| t.as_str()) == Some(artifact_type));
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| ServeError::Internal(e.to_string()))
}

async fn fetch_json(route: &Route, tail: &str, subject: Subject) -> Result<(HeaderMap, Bytes), ServeError> {
    let resp = route
        .upstream
        .request(Method::GET, &route.repo, tail, &HeaderMap::new())
        .await
        .map_err(ServeError::upstream(subject))?;
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_LISTING)
        .collect()
        .await
        .map_err(|e| ServeError::Internal(format!("reading upstream listing: {e}")))?
        .to_bytes();
    Ok((headers, body))
}

/// `<…?n=2&last=b>; rel="next"` from upstream → the same query on this mirror's path.
fn rewrite_link(link: &str, route: &Route, suffix: &str) -> Option<String> {
    let target = link.split('<').nth(1)?.split('>').next()?;
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "ns" {
            q.append_pair(&k, &v);
        }
    }
    if let Some(ns) = &route.ns {
        q.append_pair("ns", ns);
    }
    Some(format!(
        "</v2/{}/{suffix}?{}>; rel=\"next\"",
        route.client_name,
        q.finish()
    ))
}
