//! Hosted namespaces (`[[hosted]]`): repositories pushed to regcache itself, on the same port,
//! store and credentials as the mirror, never proxied. A name is hosted when its first component
//! is a hosted prefix (`local/team/app`), or the host segment of the path or containerd's `ns`
//! is one (`registry.internal`). Content lands in the same content-addressed store as cached
//! blobs (one copy of a layer that is both), pinned, so the cache budget never evicts it; the
//! repository's links, tags and referrers lists are the same records a mirror keeps, pinned too.
//!
//! Reads are here; uploads (`hosted/uploads.rs`) and manifest writes and deletes
//! (`hosted/manifests.rs`) pass `Access::may_write` first, and the namespace's policies:
//! `create_on_push` (off: a repository must exist before a push, as on ECR) and
//! `immutable_tags`.

mod error;
mod gc;
mod manifests;
mod quota;
mod uploads;

use std::sync::Arc;

use bytes::Bytes;

use super::mirror::{empty_index, filter_index, referrers_doc};
use super::{Blob, CacheResult, Client, Manifest, Page, Referrers, Registry, RegistryError, Repo, TagPage};
use crate::oci::{Digest, HostPort, Reference, RepoName};
pub use error::{PushError, PushKind};
pub use gc::UPLOAD_GRACE;
pub use manifests::{PushedManifest, RepoReport, MAX_MANIFEST};
pub use uploads::{UploadStatus, Uploaded};

/// One hosted namespace and its policies (built from `[[hosted]]` by the daemon's wiring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedNs {
    pub prefix: String,
    pub create_on_push: bool,
    pub immutable_tags: bool,
    pub max_size: Option<u64>,
}

impl HostedNs {
    /// Whether the prefix is a registry host (`registry.internal`) rather than a first component.
    fn is_host(&self) -> bool {
        self.prefix.contains(['.', ':']) || self.prefix == "localhost"
    }
}

/// The hosted namespaces and their uploads in progress.
#[derive(Default)]
pub(super) struct Hosted {
    namespaces: Vec<Arc<HostedNs>>,
    uploads: uploads::Uploads,
}

impl Hosted {
    pub(super) fn new(namespaces: Vec<HostedNs>) -> Hosted {
        Hosted {
            namespaces: namespaces.into_iter().map(Arc::new).collect(),
            uploads: uploads::Uploads::default(),
        }
    }

    fn by_prefix(&self, prefix: &str) -> Option<&Arc<HostedNs>> {
        self.namespaces.iter().find(|n| n.prefix == prefix)
    }

    /// The hosted namespace and repository a client's name means, if it is hosted.
    pub(super) fn locate(
        &self,
        host: Option<&HostPort>,
        name: &RepoName,
        ns: Option<&str>,
    ) -> Option<(Arc<HostedNs>, RepoName)> {
        if self.namespaces.is_empty() {
            return None;
        }
        if let Some(found) = host.and_then(|h| self.by_prefix(h.as_str())) {
            return Some((found.clone(), name.clone()));
        }
        if let Some(found) = ns.and_then(|n| self.by_prefix(&n.to_ascii_lowercase())) {
            return Some((found.clone(), name.clone()));
        }
        let (first, rest) = name.strip_first()?;
        self.by_prefix(&first).map(|found| (found.clone(), rest))
    }
}

/// One page of a sorted list: the names after `last`, at most `n` of them, and the query of the
/// next page when more follow (`n=0` is an empty page with none).
fn one_page(sorted: Vec<String>, page: &Page) -> (Vec<String>, Option<Vec<(String, String)>>) {
    let after: Vec<String> = match &page.last {
        Some(last) => sorted.into_iter().filter(|t| t > last).collect(),
        None => sorted,
    };
    match page.n {
        Some(0) => (Vec::new(), None),
        Some(n) if n < after.len() => {
            let shown = after[..n].to_vec();
            let last = shown.last().cloned().unwrap_or_default();
            let next = vec![("n".to_string(), n.to_string()), ("last".to_string(), last)];
            (shown, Some(next))
        }
        _ => (after, None),
    }
}

/// The answer to a mirror operation asked of a hosted repository.
pub(super) fn not_mirrored(prefix: &str) -> RegistryError {
    RegistryError::Push(PushError::new(
        PushKind::Unsupported,
        format!("{prefix} is a hosted namespace: there is no upstream to fetch from"),
    ))
}

fn hosted_ns(repo: &Repo) -> Result<&Arc<HostedNs>, RegistryError> {
    match &repo.ns {
        super::Ns::Hosted(h) => Ok(h),
        super::Ns::Mirror(u) => Err(RegistryError::Push(PushError::new(
            PushKind::Unsupported,
            format!(
                "{}/{} is mirrored from {}: pushes go to a hosted namespace",
                u.host(),
                repo.name,
                u.host()
            ),
        ))),
    }
}

impl Registry {
    /// Refuses a push the client may not make, or to a namespace that is not hosted.
    fn authorize_write<'r>(
        &self,
        client: &Client,
        repo: &'r Repo,
    ) -> Result<&'r Arc<HostedNs>, RegistryError> {
        let ns = hosted_ns(repo)?;
        self.access
            .may_write(client, &repo.place())
            .map_err(|reason| match client.identity {
                None => RegistryError::Unauthenticated(reason),
                Some(_) => RegistryError::Denied(reason),
            })?;
        Ok(ns)
    }

    /// The digest a hosted reference names, if the repository holds it.
    async fn hosted_digest(
        &self,
        repo: &Repo,
        reference: &Reference,
    ) -> Result<Option<Digest>, RegistryError> {
        let cache = self.mirror.cache();
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => match cache.tag(repo.namespace(), &repo.name, t).await? {
                Some(rec) => match rec.digest() {
                    Some(d) => d,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        let linked = cache.is_linked(repo.namespace(), &repo.name, &digest).await?;
        Ok(linked.then_some(digest))
    }

    pub(super) async fn hosted_manifest(
        &self,
        repo: &Repo,
        reference: &Reference,
    ) -> Result<Manifest, RegistryError> {
        let unknown =
            || RegistryError::ManifestUnknown(format!("{}/{}:{reference}", repo.namespace(), repo.name));
        let digest = self.hosted_digest(repo, reference).await?.ok_or_else(unknown)?;
        let m = self.mirror.cache().manifest(&digest).await?.ok_or_else(unknown)?;
        Ok(Manifest::from(m))
    }

    pub(super) async fn hosted_blob(&self, repo: &Repo, digest: &Digest) -> Result<Blob, RegistryError> {
        let cache = self.mirror.cache();
        let unknown =
            || RegistryError::BlobUnknown(format!("{digest} in {}/{}", repo.namespace(), repo.name));
        if !cache.is_linked(repo.namespace(), &repo.name, digest).await? {
            return Err(unknown());
        }
        if let Some(blob) = cache.cached_blob(digest)? {
            return Ok(Blob {
                size: Some(blob.size),
                result: CacheResult::Hit,
                source: crate::cache::Source::Complete(blob),
            });
        }
        if !cache.has_shared() {
            return Err(unknown());
        }
        // Pushed to another replica: in the shared store, which a fill reads first.
        let fill = match cache.blob(digest, Arc::new(Nowhere))? {
            crate::cache::Lookup::Hit(blob) => {
                return Ok(Blob {
                    size: Some(blob.size),
                    result: CacheResult::Hit,
                    source: crate::cache::Source::Complete(blob),
                })
            }
            crate::cache::Lookup::Filling { fill, .. } => fill,
        };
        let started = fill.started().await;
        if matches!(started.state, crate::cache::FillState::Failed(_)) {
            return Err(unknown());
        }
        Ok(Blob {
            size: started.size,
            result: CacheResult::Miss,
            source: crate::cache::Source::Filling(fill),
        })
    }

    pub(super) async fn hosted_tags(&self, repo: &Repo, page: &Page) -> Result<TagPage, RegistryError> {
        let ns = hosted_ns(repo)?;
        let tags = self.mirror.cache().tag_names(&ns.prefix, &repo.name).await?;
        let (shown, next) = one_page(tags, page);
        let name = match ns.is_host() {
            true => repo.name.to_string(),
            false => format!("{}/{}", ns.prefix, repo.name),
        };
        let body = serde_json::to_vec(&serde_json::json!({ "name": name, "tags": shown }))
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        Ok(TagPage {
            body: Bytes::from(body),
            next,
            result: CacheResult::Hit,
        })
    }

    /// Whether any namespace is hosted (a catalog has something to list).
    pub fn hosts_repositories(&self) -> bool {
        !self.hosted.namespaces.is_empty()
    }

    /// `/v2/_catalog`: the hosted repositories the client may read, sorted, `n` after `last`.
    /// Mirrored repositories are not listed: a mirror cannot know the upstream's.
    pub async fn catalog(&self, client: &Client, page: &Page) -> Result<TagPage, RegistryError> {
        let mut names = Vec::new();
        for ns in &self.hosted.namespaces {
            let cache = self.mirror.cache().clone();
            let prefix = ns.prefix.clone();
            let repos = tokio::task::spawn_blocking(move || cache.repositories(&prefix))
                .await
                .map_err(|e| RegistryError::Internal(e.to_string()))?;
            for name in repos {
                let repo = Repo {
                    ns: super::Ns::Hosted(ns.clone()),
                    name,
                };
                if self.authorize(client, &repo, super::Content::Tags).is_ok() {
                    names.push(format!("{}/{}", ns.prefix, repo.name));
                }
            }
        }
        names.sort();
        let (shown, next) = one_page(names, page);
        let body = serde_json::to_vec(&serde_json::json!({ "repositories": shown }))
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        Ok(TagPage {
            body: Bytes::from(body),
            next,
            result: CacheResult::Pass,
        })
    }

    pub(super) async fn hosted_referrers(
        &self,
        repo: &Repo,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, RegistryError> {
        let kept = self
            .mirror
            .cache()
            .doc(repo.namespace(), &repo.name, &referrers_doc(digest))
            .await?;
        let index = kept.unwrap_or_else(empty_index);
        let body = match artifact_type {
            Some(t) => filter_index(&index, t)?,
            None => index,
        };
        Ok(Referrers {
            body,
            filtered: artifact_type.is_some(),
            result: CacheResult::Hit,
        })
    }
}

/// The origin of hosted content beyond the shared store: none (it was pushed, never fetched).
struct Nowhere;

impl crate::cache::origin::Origin for Nowhere {
    fn name(&self) -> &str {
        "hosted"
    }

    fn fetch(&self) -> crate::cache::origin::Fetching {
        Box::pin(async { Err("hosted content is in this cache or its shared store only".into()) })
    }
}
