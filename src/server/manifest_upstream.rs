//! The upstream side of manifest requests: one coalesced `HEAD` or `GET` per (upstream,
//! repository, reference) however many clients ask at once, the digest check (the requested
//! digest, else the upstream's `Docker-Content-Digest`, else sha256 of the bytes), and storing the
//! verified bytes.

use std::sync::Arc;

use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, Limited};

use super::response::{ServeError, Subject};
use super::route::Route;
use super::{CacheResult, State};
use crate::cache::StoredManifest;
use crate::oci::{Digest, MediaType, RepoName, MANIFEST_ACCEPT};
use crate::upstream::Upstream;

/// Key of a coalesced upstream manifest request: (upstream, repository, reference).
pub type FetchKey = (String, RepoName, String);
pub type Shared<T> = Result<T, Arc<ServeError>>;

/// What a manifest answer needs: for `HEAD` the bytes may be absent.
#[derive(Clone)]
pub struct Answer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub bytes: Option<bytes::Bytes>,
    pub result: CacheResult,
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
    pub fn with(mut self, result: CacheResult) -> Answer {
        self.result = result;
        self
    }
}

pub fn fetched((m, result): (StoredManifest, CacheResult)) -> Answer {
    Answer::from(m).with(result)
}

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

fn ended() -> Arc<ServeError> {
    Arc::new(ServeError::Internal("upstream request task ended".into()))
}

/// One upstream `HEAD` for a manifest, shared by concurrent requests for the same reference.
pub async fn head_upstream(
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
pub async fn fetch(
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
