//! Request routing: turns a `/v2/...` path and query into a typed request. The path is parsed
//! from the right (`…/manifests/<ref>`, `…/blobs/<digest>`, `…/tags/list`, `…/referrers/<digest>`),
//! so names may contain slashes. Which namespace serves the name (containerd's `?ns=<host>`, a
//! leading upstream host, or the default upstream) is the registry layer's question
//! (`Registry::locate`); this module only checks the grammar.

use super::response::ServeError;
use crate::oci::{Digest, Reference, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Endpoint {
    Manifest(Reference),
    Blob(Digest),
    Tags,
    Referrers(Digest),
}

pub(super) enum Parsed {
    Base,
    Catalog,
    Repo(RepoRequest),
}

/// A request about one repository, as the client named it.
pub(super) struct RepoRequest {
    /// The name as the client sent it (`docker.io/library/alpine`, `alpine`).
    pub name: RepoName,
    /// The same, verbatim, for `Link` headers.
    pub client_name: String,
    /// The `ns` query value (containerd), kept in rewritten links.
    pub ns: Option<String>,
    pub endpoint: Endpoint,
}

/// The value of one query parameter.
pub(super) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub(super) fn parse(path: &str, query: Option<&str>) -> Result<Parsed, ServeError> {
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
    Ok(Parsed::Repo(RepoRequest {
        name: client_name,
        client_name: name.to_string(),
        ns: query_param(query, "ns"),
        endpoint,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, query: Option<&str>) -> RepoRequest {
        match parse(path, query) {
            Ok(Parsed::Repo(r)) => r,
            _ => panic!("{path} did not route to a repository"),
        }
    }

    #[test]
    fn names_parse_from_the_right() {
        let r = request("/v2/library/alpine/manifests/latest", Some("ns=docker.io"));
        assert_eq!(r.name.as_str(), "library/alpine");
        assert_eq!(r.ns.as_deref(), Some("docker.io"));
        let blob = format!("/v2/ghcr.io/org/app/blobs/sha256:{}", "a".repeat(64));
        let r = request(&blob, None);
        assert_eq!(r.client_name, "ghcr.io/org/app");
        assert!(matches!(r.endpoint, Endpoint::Blob(_)));
        let r = request("/v2/org/app/tags/list", Some("ns=ghcr.io&n=10"));
        assert_eq!((r.name.as_str(), r.endpoint.clone()), ("org/app", Endpoint::Tags));
        let r = request("/v2/docker.io/alpine/manifests/3.19", None);
        assert_eq!(r.client_name, "docker.io/alpine");
    }

    #[test]
    fn bad_input_is_a_client_error() {
        let err = |p: &str, q: Option<&str>| match parse(p, q) {
            Err(e) => e.status().as_u16(),
            Ok(_) => 200,
        };
        assert_eq!(err("/v2/Alpine/manifests/latest", None), 400);
        assert_eq!(err("/v2/alpine/manifests/sha256:totallywrong", None), 400);
        assert_eq!(err("/v2/alpine/blobs/md5:abc", None), 400);
        assert_eq!(err("/v2/alpine/blobs/uploads/", None), 405);
        assert_eq!(err("/v3/x", None), 404);
        assert!(matches!(parse("/v2/", None), Ok(Parsed::Base)));
    }
}
