//! Request routing: turns a `/v2/...` path and query into a typed route. The path is parsed from
//! the right (`…/manifests/<ref>`, `…/blobs/<digest>`, `…/tags/list`, `…/referrers/<digest>`), so
//! names may contain slashes. The upstream is chosen by containerd's `?ns=<host>`, else by a
//! first path segment naming a configured upstream (CRI-O/podman mirrors, direct pulls), else the
//! default upstream; on Docker Hub a one-segment name gets `library/`.

use std::sync::Arc;

use super::response::ServeError;
use crate::oci::{Digest, Reference, RepoName};
use crate::upstream::{Upstream, Upstreams};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Manifest(Reference),
    Blob(Digest),
    Tags,
    Referrers(Digest),
}

pub enum Parsed {
    Base,
    Catalog,
    Repo(Route),
}

pub struct Route {
    pub upstream: Arc<Upstream>,
    /// The repository name at the upstream (`library/alpine`).
    pub repo: RepoName,
    /// The name as the client sent it (`docker.io/library/alpine`, `alpine`), for `Link` headers.
    pub client_name: String,
    /// The `ns` query value, kept in rewritten links.
    pub ns: Option<String>,
    pub endpoint: Endpoint,
}

/// The value of one query parameter.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub fn parse(path: &str, query: Option<&str>, upstreams: &Upstreams) -> Result<Parsed, ServeError> {
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Parsed::Base),
        Some(r) if r.starts_with('/') => &r[1..],
        _ => return Err(ServeError::NotFound(path.to_string())),
    };
    if rest == "_catalog" {
        return Ok(Parsed::Catalog);
    }
    if rest.contains("/blobs/uploads") || rest.ends_with("/blobs/") {
        return Err(ServeError::Unsupported(
            "this mirror is read-only: pushing is not supported".into(),
        ));
    }
    let (name, endpoint) = if let Some(name) = rest.strip_suffix("/tags/list") {
        (name, Endpoint::Tags)
    } else {
        let (head, last) = rest
            .rsplit_once('/')
            .ok_or_else(|| ServeError::NotFound(path.to_string()))?;
        let (name, kind) = head
            .rsplit_once('/')
            .ok_or_else(|| ServeError::NotFound(path.to_string()))?;
        let last = last.replace("%3A", ":").replace("%3a", ":");
        let digest = |s: &str| {
            s.parse::<Digest>()
                .map_err(|e| ServeError::DigestInvalid(format!("{s:?}: {e}")))
        };
        let endpoint = match kind {
            "manifests" => Endpoint::Manifest(last.parse().map_err(|e| match e {
                crate::oci::ReferenceError::Digest(d) => ServeError::DigestInvalid(format!("{last:?}: {d}")),
                other => ServeError::TagInvalid(other.to_string()),
            })?),
            "blobs" => Endpoint::Blob(digest(&last)?),
            "referrers" => Endpoint::Referrers(digest(&last)?),
            _ => return Err(ServeError::NotFound(path.to_string())),
        };
        (name, endpoint)
    };
    let client_name: RepoName = name
        .parse()
        .map_err(|e| ServeError::NameInvalid(format!("{name:?}: {e}")))?;
    let ns = query_param(query, "ns");
    let (upstream, repo) = if let Some(ns) = &ns {
        let up = upstreams
            .by_host(ns)
            .ok_or_else(|| ServeError::NameUnknown(format!("no upstream is configured for ns={ns}")))?;
        (up.clone(), client_name.clone())
    } else if let Some(up) = client_name
        .strip_first()
        .and_then(|(first, rest)| upstreams.by_host(&first).map(|u| (u.clone(), rest)))
    {
        up
    } else {
        (upstreams.default_upstream().clone(), client_name.clone())
    };
    let repo = if upstream.config().adds_library_prefix() {
        repo.with_library_prefix()
    } else {
        repo
    };
    Ok(Parsed::Repo(Route {
        upstream,
        repo,
        client_name: name.to_string(),
        ns,
        endpoint,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table() -> Upstreams {
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
            "#,
        )
        .unwrap();
        Upstreams::from_config(&c, &Default::default()).unwrap()
    }

    fn route(path: &str, query: Option<&str>) -> Route {
        match parse(path, query, &table()) {
            Ok(Parsed::Repo(r)) => r,
            _ => panic!("{path} did not route to a repository"),
        }
    }

    #[test]
    fn three_conventions() {
        let r = route("/v2/alpine/manifests/latest", None);
        assert_eq!(
            (r.upstream.host(), r.repo.as_str()),
            ("docker.io", "library/alpine")
        );
        let r = route("/v2/library/alpine/manifests/latest", Some("ns=docker.io"));
        assert_eq!(
            (r.upstream.host(), r.repo.as_str()),
            ("docker.io", "library/alpine")
        );
        assert_eq!(r.ns.as_deref(), Some("docker.io"));
        let blob = format!("/v2/ghcr.io/org/app/blobs/sha256:{}", "a".repeat(64));
        let r = route(&blob, None);
        assert_eq!((r.upstream.host(), r.repo.as_str()), ("ghcr.io", "org/app"));
        let r = route("/v2/org/app/tags/list", Some("ns=ghcr.io&n=10"));
        assert_eq!(
            (r.upstream.host(), r.repo.as_str(), r.endpoint.clone()),
            ("ghcr.io", "org/app", Endpoint::Tags)
        );
        let r = route("/v2/docker.io/alpine/manifests/3.19", None);
        assert_eq!(
            (r.upstream.host(), r.repo.as_str()),
            ("docker.io", "library/alpine")
        );
    }

    #[test]
    fn bad_input_is_a_client_error() {
        let t = table();
        let err = |p: &str, q: Option<&str>| match parse(p, q, &t) {
            Err(e) => e.status().as_u16(),
            Ok(_) => 200,
        };
        assert_eq!(err("/v2/Alpine/manifests/latest", None), 400);
        assert_eq!(err("/v2/alpine/manifests/sha256:totallywrong", None), 400);
        assert_eq!(err("/v2/alpine/blobs/md5:abc", None), 400);
        assert_eq!(err("/v2/alpine/manifests/latest", Some("ns=quay.io")), 404);
        assert_eq!(err("/v2/alpine/blobs/uploads/", None), 405);
        assert_eq!(err("/v3/x", None), 404);
        assert!(matches!(parse("/v2/", None, &t), Ok(Parsed::Base)));
    }
}
