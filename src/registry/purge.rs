//! Purging tag records (`regcache cache purge IMAGE[:TAG]`, `POST /admin/purge?image=`): an
//! image named the way clients name it (`alpine:3.20`, `docker.io/library/alpine`,
//! `ghcr.io/org/app:v1`) is resolved like a pull without `ns` (`Registry::locate`), except that a
//! leading component that looks like a host (it holds a `.` or a `:`, or is `localhost`) must be
//! a configured upstream: `localhost:5000/app` is never taken for a repository of the default
//! upstream. Only tag records go, with the memory of their freshness and the repository's
//! remembered upstream 404s; content by digest, repository links and kept tag lists stay.

use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError, Repo};
use crate::oci::{RepoName, Tag};

/// An image reference as an operator writes it: `[HOST/]NAME[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// A leading component that looks like a registry host.
    pub host: Option<String>,
    pub name: RepoName,
    pub tag: Option<Tag>,
}

/// Why an image reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{image:?} is no image name: {reason}")]
pub struct BadImage {
    pub image: String,
    pub reason: String,
}

fn looks_like_host(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

impl std::str::FromStr for ImageRef {
    type Err = BadImage;

    fn from_str(image: &str) -> Result<ImageRef, BadImage> {
        let bad = |reason: String| BadImage {
            image: image.to_string(),
            reason,
        };
        if image.contains('@') {
            return Err(bad(
                "a purge names a tag or a repository; content by digest is never purged".into(),
            ));
        }
        let (host, rest) = match image.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (Some(first.to_ascii_lowercase()), rest),
            _ => (None, image),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].split_once(':') {
            Some((_, tag)) => (&rest[..rest.len() - tag.len() - 1], Some(tag)),
            None => (rest, None),
        };
        let name: RepoName = name.parse().map_err(|e| bad(format!("{e}")))?;
        let tag = match tag {
            Some(t) => Some(t.parse::<Tag>().map_err(|e| bad(format!("{e}")))?),
            None => None,
        };
        Ok(ImageRef { host, name, tag })
    }
}

/// What a purge did (the admin API's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// The upstream host the name resolved to (`docker.io`).
    pub upstream: String,
    /// The repository at that upstream (`library/alpine`).
    pub repository: String,
    /// The tag purged; none when every tag of the repository was.
    pub tag: Option<String>,
    /// How many tag records were dropped.
    pub removed: u64,
}

impl Registry {
    /// Resolves an operator's image name: a host-like first component must be a configured
    /// upstream; otherwise as `locate` does without `ns`.
    pub(super) fn resolve_image(&self, image: &ImageRef) -> Result<Repo, RegistryError> {
        let Some(host) = &image.host else {
            return self.locate(None, &image.name, None);
        };
        let upstream = self.upstreams.by_host(host).ok_or_else(|| {
            RegistryError::NameUnknown(format!("no upstream is configured for host {host}"))
        })?;
        let name = if upstream.adds_library_prefix() {
            image.name.with_library_prefix()
        } else {
            image.name.clone()
        };
        Ok(Repo {
            ns: super::Ns::Mirror(upstream.clone()),
            name,
        })
    }

    /// Drops the tag record of `image`'s tag, or every tag record of its repository without one,
    /// so the next pull revalidates with the upstream at once.
    pub async fn purge(&self, image: &ImageRef) -> Result<PurgeReport, RegistryError> {
        let repo = self.resolve_image(image)?;
        let removed = self.mirror.purge(&repo.at()?, image.tag.as_ref()).await?;
        tracing::info!(upstream = repo.namespace(), repo = %repo.name, tag = ?image.tag.as_ref().map(Tag::as_str), removed, "purged tag records");
        Ok(PurgeReport {
            upstream: repo.namespace().to_string(),
            repository: repo.name.to_string(),
            tag: image.tag.as_ref().map(|t| t.as_str().to_string()),
            removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> (Option<String>, String, Option<String>) {
        let i: ImageRef = s.parse().unwrap();
        (i.host, i.name.to_string(), i.tag.map(|t| t.as_str().to_string()))
    }

    #[test]
    fn image_names_as_clients_write_them() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(parse("alpine:3.20"), (None, "alpine".into(), some("3.20")));
        assert_eq!(parse("library/app"), (None, "library/app".into(), None));
        assert_eq!(
            parse("docker.io/library/alpine"),
            (some("docker.io"), "library/alpine".into(), None)
        );
        assert_eq!(
            parse("ghcr.io/org/app:v1"),
            (some("ghcr.io"), "org/app".into(), some("v1"))
        );
        assert_eq!(
            parse("localhost:5000/team/app:latest"),
            (some("localhost:5000"), "team/app".into(), some("latest"))
        );
        assert_eq!(parse("localhost/app"), (some("localhost"), "app".into(), None));
        // No slash: a name and a tag, as clients read it.
        assert_eq!(parse("localhost:5000"), (None, "localhost".into(), some("5000")));
        for bad in ["alpine@sha256:abc", "Alpine", "app:", "app:bad tag", ""] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}
