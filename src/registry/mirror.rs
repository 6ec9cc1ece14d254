//! The pull-through policy for mirrored namespaces: content by digest is immutable, so a cached
//! copy is served with no upstream request; a tag is trusted for `tag_ttl`, then revalidated with
//! a `HEAD`, and served from the cache when the upstream fails (stale-if-error); upstream "does
//! not exist" answers are remembered for `negative_ttl`; concurrent upstream manifest requests are
//! coalesced into one; tag lists and referrers are kept for outages. Blobs go through the cache's
//! single download per digest, with the upstream as the fill's origin. Cached content is served
//! under a repository only when it was fetched or confirmed for that repository (`links.rs`).

mod behind;
mod blobs;
mod fetch;
mod links;
mod listing;
mod manifests;
mod remembered;
mod tag_list;
pub(crate) use listing::{empty_index, filter_index, referrers_doc};
pub use tag_list::Page;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Cache, StoredManifest};
use crate::metrics::{Metrics, RequestKind};
use crate::oci::{RepoName, Tag};
use crate::upstream::Upstream;

use super::single_flight::SingleFlight;
use super::RegistryError;
use fetch::Head;

/// The knobs of the pull-through policy (from `[cache]` and `[fetch]`).
#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    /// How long a tag is trusted before a `HEAD` revalidation.
    pub tag_ttl: Duration,
    /// A stale tag whose revalidation takes longer is served from the cache.
    pub revalidate_timeout: Duration,
    /// Serve a stale tag at once and revalidate it behind the answer.
    pub revalidate_in_background: bool,
    /// How long an upstream "manifest unknown" is remembered (zero: off).
    pub negative_ttl: Duration,
    /// The largest manifest accepted from an upstream.
    pub max_manifest_size: u64,
}

/// Key of a coalesced upstream manifest request: (upstream, repository, reference).
type FetchKey = (String, RepoName, String);
type Shared<T> = Result<T, Arc<RegistryError>>;

pub(super) struct Mirror {
    cache: Arc<Cache>,
    policy: MirrorPolicy,
    metrics: Arc<Metrics>,
    manifest_gets: SingleFlight<FetchKey, Shared<StoredManifest>>,
    manifest_heads: SingleFlight<FetchKey, Shared<Head>>,
    fresh: remembered::Remembered,
    /// Tags whose revalidation got no answer (served stale for a while without asking again).
    backoff: remembered::Remembered,
    missing: remembered::Remembered,
    links: links::Links,
    /// Whole tag lists fetched lately, for clients walking their pages.
    lists: tag_list::RecentLists,
}

/// A repository of one upstream, as the mirror sees it.
pub(super) struct At<'a> {
    pub upstream: &'a Arc<Upstream>,
    pub repo: &'a RepoName,
}

impl At<'_> {
    fn key(&self, reference: &str) -> FetchKey {
        (
            self.upstream.host().to_string(),
            self.repo.clone(),
            reference.to_string(),
        )
    }
}

impl Mirror {
    pub(super) fn new(cache: Arc<Cache>, policy: MirrorPolicy, metrics: Arc<Metrics>) -> Mirror {
        Mirror {
            fresh: remembered::freshness(policy.tag_ttl),
            backoff: remembered::unanswered_revalidations(),
            missing: remembered::missing(policy.negative_ttl),
            cache,
            policy,
            metrics,
            manifest_gets: SingleFlight::default(),
            manifest_heads: SingleFlight::default(),
            links: links::Links::new(),
            lists: tag_list::recent_lists(),
        }
    }

    pub(crate) fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    fn coalesced(&self, joined: bool) {
        if joined {
            self.metrics.request.coalesced(RequestKind::Manifest);
        }
    }

    /// Drops the tag record of `tag` (every tag record of the repository without one) and
    /// forgets that it was fresh, and what the upstream said the repository lacks, so the next
    /// pull asks the upstream. Content by digest, links and kept tag lists stay.
    pub(super) async fn purge(&self, at: &At<'_>, tag: Option<&Tag>) -> Result<u64, RegistryError> {
        let host = at.upstream.host();
        let removed = self.cache.purge_tags(host, at.repo, tag).await?;
        let here = |k: &remembered::RefKey| k.0 == host && k.1 == *at.repo;
        let this_tag = |k: &remembered::RefKey| here(k) && tag.is_none_or(|t| k.2 == t.as_str());
        self.fresh.forget_where(this_tag);
        self.backoff.forget_where(this_tag);
        self.missing.forget_where(here);
        self.lists.invalidate(&(host.to_string(), at.repo.clone()));
        Ok(removed)
    }
}

/// An upstream response's announced `Content-Length`.
fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
