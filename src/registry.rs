//! What a repository name means and how it is served: the layer between HTTP and storage. The
//! server hands it a client-facing name (and containerd's `ns`); `locate` resolves it to a
//! namespace, today always a mirrored upstream (pull-through policy in `mirror/`); hosted
//! namespaces will sit beside it. Every read asks `Access` first (one hook, on hits as on
//! misses), then the namespace's policy. Nothing here knows HTTP requests: answers are typed
//! values (`answer.rs`) and errors are classified once (`error.rs`).

mod access;
mod answer;
mod bundle;
mod error;
mod hosted;
mod mirror;
mod prefetch;
mod purge;
mod single_flight;

use std::sync::Arc;

pub use access::{Access, AllowAll, Client, Content, Place};
pub use answer::{Blob, CacheResult, Manifest, Referrers, TagPage};
pub use bundle::{
    BundleError, BundleImage, ExportOptions, ExportPlan, ExportReport, ImportOptions, ImportReport,
};
pub use error::{ErrorKind, Fault, RegistryError, Subject};
pub use mirror::{MirrorPolicy, Page};
pub use prefetch::{Platform, PrefetchEvent, PrefetchOptions, PrefetchRef, UnpinReport};
pub use purge::{BadImage, ImageRef, PurgeReport};

use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::oci::{Digest, HostPort, Reference, RepoName};
use crate::upstream::{Upstream, Upstreams};
use hosted::Hosted;
pub use hosted::HostedNs;
pub use hosted::{
    PushError, PushKind, PushedManifest, RepoReport, UploadStatus, Uploaded, MAX_MANIFEST, UPLOAD_GRACE,
};
use mirror::{At, Mirror};

/// Which kind of namespace serves a repository.
enum Ns {
    /// Pull-through from an upstream.
    Mirror(Arc<Upstream>),
    /// Pushed to regcache itself (`[[hosted]]`).
    Hosted(Arc<HostedNs>),
}

/// A repository as a client named it, resolved to the namespace that serves it.
pub struct Repo {
    ns: Ns,
    /// The repository name at the upstream (`library/alpine`), or in the hosted namespace.
    name: RepoName,
}

impl Repo {
    /// The client-facing host of the upstream (`docker.io`) or the hosted prefix (`local`): a
    /// bounded label for logs, and the namespace the cache keeps the repository's records under.
    pub fn namespace(&self) -> &str {
        match &self.ns {
            Ns::Mirror(u) => u.host(),
            Ns::Hosted(h) => &h.prefix,
        }
    }

    pub fn name(&self) -> &RepoName {
        &self.name
    }

    /// Whether the repository is hosted (pushed to regcache), not mirrored.
    pub fn is_hosted(&self) -> bool {
        matches!(self.ns, Ns::Hosted(_))
    }

    fn at(&self) -> Result<At<'_>, RegistryError> {
        match &self.ns {
            Ns::Mirror(upstream) => Ok(At {
                upstream,
                repo: &self.name,
            }),
            Ns::Hosted(h) => Err(hosted::not_mirrored(&h.prefix)),
        }
    }

    fn place(&self) -> Place<'_> {
        Place {
            upstream: self.namespace(),
            repo: &self.name,
        }
    }
}

pub struct Registry {
    upstreams: Arc<Upstreams>,
    mirror: Mirror,
    access: Arc<dyn Access>,
    hosted: Hosted,
}

impl Registry {
    pub fn new(
        upstreams: Arc<Upstreams>,
        cache: Arc<Cache>,
        policy: MirrorPolicy,
        access: Arc<dyn Access>,
        metrics: Arc<Metrics>,
    ) -> Registry {
        Registry {
            upstreams,
            mirror: Mirror::new(cache, policy, metrics),
            access,
            hosted: Hosted::default(),
        }
    }

    /// Serves these `[[hosted]]` namespaces too (their names are never proxied).
    pub fn with_hosted(mut self, namespaces: Vec<HostedNs>) -> Registry {
        self.hosted = Hosted::new(namespaces);
        self
    }

    /// Resolves a client's repository name: `ns` (containerd) names the upstream, else a first
    /// component naming a configured upstream (CRI-O/podman mirrors, direct pulls) is stripped,
    /// else the default upstream; on Docker Hub a one-component name gets `library/`. A leading
    /// `host:port` (the router's `host`, already split off) must be a configured upstream: no
    /// other namespace can hold a name with a `:`, so anything else is an invalid name, refused
    /// before any upstream is asked.
    pub fn locate(
        &self,
        host: Option<&HostPort>,
        name: &RepoName,
        ns: Option<&str>,
    ) -> Result<Repo, RegistryError> {
        if let Some((ns, name)) = self.hosted.locate(host, name, ns) {
            return Ok(Repo {
                ns: Ns::Hosted(ns),
                name,
            });
        }
        let (upstream, repo) = if let Some(host) = host {
            // Today's answer to `ns` with such a name (NAME_INVALID) stands: containerd never
            // sends a host in the path, so the two together are a client's mistake.
            if ns.is_some() {
                return Err(RegistryError::NameInvalid(format!(
                    "{host}/{name}: a host in the path and ns= name the upstream twice"
                )));
            }
            let up = self.upstreams.by_host(host.as_str()).ok_or_else(|| {
                RegistryError::NameInvalid(format!(
                    "{host}/{name}: no upstream is configured for host {host}"
                ))
            })?;
            (up.clone(), name.clone())
        } else if let Some(ns) = ns {
            let up = self.upstreams.by_host(ns).ok_or_else(|| {
                RegistryError::NameUnknown(format!("no upstream is configured for ns={ns}"))
            })?;
            (up.clone(), name.clone())
        } else if let Some(found) = name
            .strip_first()
            .and_then(|(first, rest)| self.upstreams.by_host(&first).map(|u| (u.clone(), rest)))
        {
            found
        } else {
            (self.upstreams.default_upstream().clone(), name.clone())
        };
        let name = if upstream.adds_library_prefix() {
            repo.with_library_prefix()
        } else {
            repo
        };
        Ok(Repo {
            ns: Ns::Mirror(upstream),
            name,
        })
    }

    fn authorize(&self, client: &Client, repo: &Repo, content: Content<'_>) -> Result<(), RegistryError> {
        self.access
            .may_read(client, &repo.place(), content)
            .map_err(|reason| match client.identity {
                None => RegistryError::Unauthenticated(reason),
                Some(_) => RegistryError::Denied(reason),
            })
    }

    /// A manifest by tag or digest; `head` answers may lack the bytes.
    pub async fn manifest(
        &self,
        client: &Client,
        repo: &Repo,
        reference: &Reference,
        head: bool,
    ) -> Result<Manifest, RegistryError> {
        self.authorize(client, repo, Content::Manifest(reference))?;
        if repo.is_hosted() {
            return self.hosted_manifest(repo, reference).await;
        }
        match reference {
            Reference::Digest(d) => self.mirror.by_digest(&repo.at()?, d, head).await,
            Reference::Tag(t) => self.mirror.by_tag(&repo.at()?, t, head).await,
        }
    }

    /// A blob to stream, from the cache or its single download.
    pub async fn blob(&self, client: &Client, repo: &Repo, digest: &Digest) -> Result<Blob, RegistryError> {
        self.authorize(client, repo, Content::Blob(digest))?;
        if repo.is_hosted() {
            return self.hosted_blob(repo, digest).await;
        }
        self.mirror.blob(&repo.at()?, digest).await
    }

    /// A blob's size, without downloading it.
    pub async fn blob_size(
        &self,
        client: &Client,
        repo: &Repo,
        digest: &Digest,
    ) -> Result<(u64, CacheResult), RegistryError> {
        self.authorize(client, repo, Content::Blob(digest))?;
        if repo.is_hosted() {
            let blob = self.hosted_blob(repo, digest).await?;
            return Ok((blob.size.unwrap_or(0), CacheResult::Hit));
        }
        self.mirror.blob_size(&repo.at()?, digest).await
    }

    pub async fn tags(&self, client: &Client, repo: &Repo, page: &Page) -> Result<TagPage, RegistryError> {
        self.authorize(client, repo, Content::Tags)?;
        if repo.is_hosted() {
            return self.hosted_tags(repo, page).await;
        }
        self.mirror.tags(&repo.at()?, page).await
    }

    pub async fn referrers(
        &self,
        client: &Client,
        repo: &Repo,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, RegistryError> {
        self.authorize(client, repo, Content::Referrers(digest))?;
        if repo.is_hosted() {
            return self.hosted_referrers(repo, digest, artifact_type).await;
        }
        self.mirror.referrers(&repo.at()?, digest, artifact_type).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn registry() -> Registry {
        let c = Config::from_toml_str(
            r#"
            builtin_upstreams = false
            [[upstreams]]
            host = "docker.io"
            url = "http://127.0.0.1:1"
            default = true
            [[upstreams]]
            host = "ghcr.io"
            url = "http://127.0.0.1:2"
            [[upstreams]]
            host = "registry.internal:5000"
            url = "http://127.0.0.1:3"
            "#,
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let upstreams = Arc::new(Upstreams::from_config(&c, &metrics).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::cache::CacheSettings {
            dir: dir.path().to_path_buf(),
            budget: crate::cache::Budget::unlimited(),
            read_timeout: c.fetch.read_timeout,
            finish_abandoned: true,
            shared: None,
        };
        let cache = Arc::new(Cache::open(&settings, metrics.clone()).unwrap());
        let policy = MirrorPolicy {
            tag_ttl: c.cache.tag_ttl,
            revalidate_timeout: c.cache.revalidate_timeout,
            revalidate_in_background: false,
            negative_ttl: c.cache.negative_ttl,
            max_manifest_size: c.fetch.max_manifest_size,
        };
        Registry::new(upstreams, cache, policy, Arc::new(AllowAll), metrics)
    }

    fn locate(r: &Registry, name: &str, ns: Option<&str>) -> (String, String) {
        let repo = r.locate(None, &name.parse().unwrap(), ns).unwrap();
        (repo.namespace().to_string(), repo.name().to_string())
    }

    #[test]
    fn three_conventions() {
        let r = registry();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(locate(&r, "alpine", None), pair("docker.io", "library/alpine"));
        assert_eq!(
            locate(&r, "library/alpine", Some("docker.io")),
            pair("docker.io", "library/alpine")
        );
        assert_eq!(locate(&r, "ghcr.io/org/app", None), pair("ghcr.io", "org/app"));
        assert_eq!(locate(&r, "org/app", Some("ghcr.io")), pair("ghcr.io", "org/app"));
        assert_eq!(
            locate(&r, "docker.io/alpine", None),
            pair("docker.io", "library/alpine")
        );
        let unknown = r.locate(None, &"alpine".parse().unwrap(), Some("quay.io"));
        assert!(matches!(unknown, Err(RegistryError::NameUnknown(_))));
    }

    #[test]
    fn a_host_with_a_port_must_be_an_upstream() {
        let r = registry();
        let at = |host: &str, name: &str, ns: Option<&str>| {
            r.locate(Some(&host.parse().unwrap()), &name.parse().unwrap(), ns)
        };
        let repo = at("registry.internal:5000", "team/app", None).unwrap();
        assert_eq!(
            (repo.namespace(), repo.name().as_str()),
            ("registry.internal:5000", "team/app")
        );
        let repo = at("Registry.Internal:5000", "app", None).unwrap();
        assert_eq!(
            (repo.namespace(), repo.name().as_str()),
            ("registry.internal:5000", "app")
        );
        for (host, ns) in [
            ("registry.internal:5001", None),
            ("ghcr.io:443", None),
            ("127.0.0.1:3", None),
            ("registry.internal:5000", Some("registry.internal:5000")),
            ("registry.internal:5000", Some("docker.io")),
        ] {
            let refused = at(host, "team/app", ns);
            assert!(
                matches!(refused, Err(RegistryError::NameInvalid(_))),
                "{host} {ns:?}"
            );
        }
        // The portless form is unchanged: an unknown host is part of a default-upstream name.
        assert_eq!(
            locate(&r, "registry.internal/app", None),
            ("docker.io".to_string(), "registry.internal/app".to_string())
        );
    }
}
