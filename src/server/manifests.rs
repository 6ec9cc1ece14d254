//! `GET`/`HEAD /v2/<name>/manifests/<reference>`. By digest: a cached manifest is served with no
//! upstream request; a miss is fetched, verified against the digest and kept. By tag: the tag
//! record is trusted for `cache.tag_ttl`, then revalidated with an upstream `HEAD` (free on Docker
//! Hub), and a `GET` only happens when the digest changed. When revalidation fails for any reason
//! other than the upstream saying the tag is gone, the cached manifest is served (stale-if-error).
//! Every answer carries the exact upstream bytes and is checked against the client's `Accept`.

use std::sync::Arc;

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::{BodyExt, Limited};

use super::response::{empty, full, ServeBody, ServeError, Subject};
use super::route::Route;
use super::{CacheResult, State};
use crate::cache::{StoredManifest, TagRecord};
use crate::oci::{accepts, Digest, MediaType, Reference, RepoName, Tag, MANIFEST_ACCEPT};
use crate::upstream::Upstream;

/// Key of a coalesced upstream manifest request: (upstream, repository, reference).
pub type FetchKey = (String, RepoName, String);
pub type Shared<T> = Result<T, Arc<ServeError>>;

/// What a manifest answer needs: for `HEAD` the bytes may be absent.
#[derive(Clone)]
pub struct Answer {
    digest: Digest,
    media_type: String,
    size: u64,
    bytes: Option<bytes::Bytes>,
    result: CacheResult,
}

impl From<StoredManifest> for Answer {
    fn from(m: StoredManifest) -> Self {
        Answer {
            size: m.bytes.len() as u64,
            digest: m.digest,
            media_type: m.media_type,
            bytes: Some(m.bytes),
            result: CacheResult::Hit,
        }
    }
}

impl Answer {
    fn with(mut self, result: CacheResult) -> Answer {
        self.result = result;
        self
    }
}

fn fetched((m, result): (StoredManifest, CacheResult)) -> Answer {
    Answer::from(m).with(result)
}

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

fn accept_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&MANIFEST_ACCEPT.join(", ")) {
        h.insert(ACCEPT, v);
    }
    h
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

fn ended() -> Arc<ServeError> {
    Arc::new(ServeError::Internal("upstream request task ended".into()))
}

/// One upstream `HEAD` for a manifest, shared by concurrent requests for the same reference.
async fn head_upstream(
    state: &Arc<State>,
    route: &Route,
    reference: &str,
    deadline: Option<std::time::Duration>,
) -> Result<Answer, ServeError> {
    let key = (
        route.upstream.host().to_string(),
        route.repo.clone(),
        reference.to_string(),
    );
    let (upstream, repo, reference) = (route.upstream.clone(), route.repo.clone(), reference.to_string());
    let (v, joined) = state
        .manifest_heads
        .run(key, move || async move {
            head_now(&upstream, &repo, &reference, deadline)
                .await
                .map_err(Arc::new)
        })
        .await;
    coalesced(state, "manifest", joined);
    let answer = v.unwrap_or_else(|| Err(ended())).map_err(ServeError::Shared)?;
    Ok(if joined {
        answer.with(CacheResult::Coalesced)
    } else {
        answer
    })
}

fn coalesced(state: &State, kind: &str, joined: bool) {
    if joined {
        state.metrics.coalesced.with_label_values(&[kind]).inc();
    }
}

async fn head_now(
    upstream: &Upstream,
    repo: &RepoName,
    reference: &str,
    deadline: Option<std::time::Duration>,
) -> Result<Answer, ServeError> {
    let resp = upstream
        .request_within(
            Method::HEAD,
            repo,
            &format!("manifests/{reference}"),
            &accept_headers(),
            deadline,
        )
        .await
        .map_err(ServeError::upstream(Subject::Manifest))?;
    let h = resp.headers();
    let digest = h
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let size = h
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match (digest, size) {
        (Some(digest), Some(size)) => Ok(Answer {
            digest,
            media_type: media_type_of(h, None),
            size,
            bytes: None,
            result: CacheResult::Miss,
        }),
        _ => Err(ServeError::BadUpstreamManifest(format!(
            "HEAD {reference} lacks Docker-Content-Digest or Content-Length"
        ))),
    }
}

/// One upstream `GET` for a manifest, shared by concurrent requests for the same reference.
async fn fetch(
    state: &Arc<State>,
    route: &Route,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<(StoredManifest, CacheResult), ServeError> {
    let key = (
        route.upstream.host().to_string(),
        route.repo.clone(),
        reference.to_string(),
    );
    let st = state.clone();
    let (upstream, repo, reference) = (route.upstream.clone(), route.repo.clone(), reference.to_string());
    let expected = expected.cloned();
    let (v, joined) = state
        .manifest_gets
        .run(key, move || async move {
            fetch_now(&st, &upstream, &repo, &reference, expected.as_ref())
                .await
                .map_err(Arc::new)
        })
        .await;
    coalesced(state, "manifest", joined);
    let m = v.unwrap_or_else(|| Err(ended())).map_err(ServeError::Shared)?;
    Ok((
        m,
        if joined {
            CacheResult::Coalesced
        } else {
            CacheResult::Miss
        },
    ))
}

/// GETs a manifest, checks its digest (the requested one, else the upstream's header, else
/// sha256 of the bytes) and stores it.
async fn fetch_now(
    state: &State,
    upstream: &Upstream,
    repo: &RepoName,
    reference: &str,
    expected: Option<&Digest>,
) -> Result<StoredManifest, ServeError> {
    let resp = upstream
        .request(
            Method::GET,
            repo,
            &format!("manifests/{reference}"),
            &accept_headers(),
        )
        .await
        .map_err(ServeError::upstream(Subject::Manifest))?;
    let headers = resp.headers().clone();
    let limit = state.config.fetch.max_manifest_size as usize;
    let bytes = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| ServeError::BadUpstreamManifest(format!("reading {reference}: {e}")))?
        .to_bytes();
    let claimed = headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let want = expected.cloned().or(claimed);
    let digest = match want {
        Some(w) => {
            let actual = Digest::of(w.algorithm(), &bytes);
            if actual != w {
                return Err(ServeError::BadUpstreamManifest(format!(
                    "{reference}: content is {actual}, expected {w}"
                )));
            }
            w
        }
        None => Digest::sha256_of(&bytes),
    };
    let m = StoredManifest {
        media_type: media_type_of(&headers, Some(&bytes)),
        digest,
        bytes,
    };
    state
        .metrics
        .upstream_bytes
        .with_label_values(&[upstream.host()])
        .inc_by(m.bytes.len() as u64);
    state.cache.manifests.put(&m).await?;
    tracing::info!(%repo, reference, digest = %m.digest, "manifest cached");
    Ok(m)
}
