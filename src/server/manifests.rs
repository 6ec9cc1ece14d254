//! `GET`/`HEAD /v2/<name>/manifests/<reference>`. By digest: a cached manifest is served with no
//! upstream request; a miss is fetched, verified against the digest and kept. By tag: the tag
//! record is trusted for `cache.tag_ttl`, then revalidated with an upstream `HEAD` (free on Docker
//! Hub), and a `GET` only happens when the digest changed. When revalidation fails for any reason
//! other than the upstream saying the tag is gone, the cached manifest is served (stale-if-error).
//! Every answer carries the exact upstream bytes and is checked against the client's `Accept`.

use std::sync::Arc;

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::{HeaderMap, Method, Response};

use super::manifest_upstream::{fetch, fetched, head_upstream, Answer};
use super::response::{empty, full, ServeBody, ServeError};
use super::route::Route;
use super::{CacheResult, State};
use crate::cache::{StoredManifest, TagRecord};
use crate::oci::{accepts, Digest, MediaType, Reference, Tag};

pub async fn handle(
    state: &Arc<State>,
    route: &Route,
    reference: &Reference,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<ServeBody>, ServeError> {
    let head = *method == Method::HEAD;
    let answer = match reference {
        Reference::Digest(d) => by_digest(state, route, d, head).await?,
        Reference::Tag(t) => by_tag(state, route, t, head).await?,
    };
    let accept: Vec<&str> = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !accepts(accept.iter().copied(), &answer.media_type) {
        return Err(ServeError::ManifestUnknown(format!(
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

async fn by_digest(
    state: &Arc<State>,
    route: &Route,
    digest: &Digest,
    head: bool,
) -> Result<Answer, ServeError> {
    if let Some(m) = state.cache.manifests.get(digest).await? {
        return Ok(m.into());
    }
    let reference = digest.to_string();
    unless_missing(state, route, &reference, async {
        if head {
            head_upstream(state, route, &reference, None).await
        } else {
            Ok(fetched(fetch(state, route, &reference, Some(digest)).await?))
        }
    })
    .await
}

/// Answers at once when the upstream recently said `reference` does not exist, and remembers
/// it when it says so now.
async fn unless_missing(
    state: &State,
    route: &Route,
    reference: &str,
    ask: impl std::future::Future<Output = Result<Answer, ServeError>>,
) -> Result<Answer, ServeError> {
    let key = (
        route.upstream.host().to_string(),
        route.repo.clone(),
        reference.to_string(),
    );
    if state.cache.missing.is_missing(&key) {
        return Err(ServeError::ManifestUnknown(format!(
            "{reference} (the upstream said so moments ago)"
        )));
    }
    let answer = ask.await;
    if answer.as_ref().is_err_and(is_gone) {
        state.cache.missing.remember(key);
    }
    answer
}

async fn by_tag(state: &Arc<State>, route: &Route, tag: &Tag, head: bool) -> Result<Answer, ServeError> {
    let cache = &state.cache;
    let host = route.upstream.host();
    let ttl = state.config.cache.tag_ttl;
    let record = cache.tags.get(host, &route.repo, tag).await?;
    if let Some((rec, digest)) = record.as_ref().and_then(|r| r.digest().map(|d| (r, d))) {
        let cached = cache.manifests.get(&digest).await?;
        let usable = head || cached.is_some();
        let offline = route.upstream.config().offline;
        if usable && (offline || cache.tags.is_fresh(host, &route.repo, tag, ttl)) {
            return Ok(answer_from(rec, digest, cached));
        }
        let deadline = usable.then_some(state.config.cache.revalidate_timeout);
        match head_upstream(state, route, tag.as_str(), deadline).await {
            Ok(now) if now.digest == digest => {
                cache.tags.mark_checked(host, &route.repo, tag);
                if usable {
                    return Ok(answer_from(rec, digest, cached));
                }
            }
            Ok(now) => {
                tracing::info!(repo = %route.repo, %tag, old = %digest, new = %now.digest, "tag moved upstream");
                if head {
                    remember(state, route, tag, &now).await?;
                    return Ok(now);
                }
                let answer = match cache.manifests.get(&now.digest).await? {
                    Some(m) => Answer::from(m).with(CacheResult::Miss),
                    None => fetched(fetch(state, route, &now.digest.to_string(), Some(&now.digest)).await?),
                };
                remember(state, route, tag, &answer).await?;
                return Ok(answer);
            }
            Err(e) if is_gone(&e) => return Err(e),
            Err(e) if usable => {
                if not_attempted(&e) {
                    tracing::debug!(repo = %route.repo, %tag, error = %e, "serving the cached tag");
                } else {
                    tracing::warn!(repo = %route.repo, %tag, error = %e, "upstream revalidation failed; serving the cached tag");
                }
                return Ok(answer_from(rec, digest, cached).with(CacheResult::Stale));
            }
            Err(_) => {}
        }
    }
    unless_missing(state, route, tag.as_str(), async {
        let answer = if head {
            head_upstream(state, route, tag.as_str(), None).await?
        } else {
            fetched(fetch(state, route, tag.as_str(), None).await?)
        };
        remember(state, route, tag, &answer).await?;
        Ok(answer)
    })
    .await
}

/// The bytes of the referrers tag-schema index `tag` (`sha256-<hex>`), through the cache like
/// any tag; `None` when the upstream has no such tag.
pub async fn tag_schema_index(
    state: &Arc<State>,
    route: &Route,
    tag: &str,
) -> Result<Option<bytes::Bytes>, ServeError> {
    let tag: Tag = tag
        .parse()
        .map_err(|e: crate::oci::ReferenceError| ServeError::Internal(e.to_string()))?;
    match by_tag(state, route, &tag, false).await {
        Ok(answer) if answer.media_type == MediaType::OCI_INDEX => Ok(answer.bytes),
        Ok(_) => Ok(None),
        Err(e) if is_gone(&e) || matches!(e, ServeError::ManifestUnknown(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn not_attempted(e: &ServeError) -> bool {
    match e {
        ServeError::Upstream { source, .. } => source.is_not_attempted(),
        ServeError::Shared(inner) => not_attempted(inner),
        _ => false,
    }
}

fn is_gone(e: &ServeError) -> bool {
    match e {
        ServeError::Upstream { source, .. } => source.is_not_found(),
        ServeError::Shared(inner) => is_gone(inner),
        _ => false,
    }
}

fn answer_from(rec: &TagRecord, digest: Digest, cached: Option<StoredManifest>) -> Answer {
    match cached {
        Some(m) => m.into(),
        None => Answer {
            digest,
            media_type: rec.media_type.clone(),
            size: rec.size,
            bytes: None,
            result: CacheResult::Hit,
        },
    }
}

async fn remember(state: &Arc<State>, route: &Route, tag: &Tag, a: &Answer) -> Result<(), ServeError> {
    let rec = TagRecord {
        digest: a.digest.to_string(),
        media_type: a.media_type.clone(),
        size: a.size,
    };
    state
        .cache
        .tags
        .put(route.upstream.host(), &route.repo, tag, &rec)
        .await?;
    Ok(())
}
